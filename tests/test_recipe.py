"""Recipes: a run's settings as a YAML file, written by every run, read back by
--recipe, shipped as presets; bad recipes give one error naming key and line."""

import dataclasses
import json
import os

import pytest
from absl import flags

from conftest import write_idx_dataset
from tfopt.cli import compress as cli
from tfopt.config import PipelineConfig, recipe

FLAGS = flags.FLAGS


def parse(*args) -> PipelineConfig:
  FLAGS.unparse_flags()
  FLAGS(["tfopt compress", *args])
  return cli.config_from_flags()


def run_cli(capsys, *args):
  """`tfopt compress ARGS` in process: (exit code, stderr)."""
  FLAGS.unparse_flags()
  FLAGS(["tfopt compress", *args])
  code = cli.main(["tfopt compress"])
  return code, capsys.readouterr().err


def write(tmp_path, text: str, name: str = "recipe.yaml") -> str:
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_dump_and_load_give_back_the_same_config(tmp_path):
  config = PipelineConfig(
      stages=("teacher", "distill", "lowrank", "cluster"), seed=3,
      compare_scratch=True, output_dir="runs/x",
      lowrank=PipelineConfig().lowrank.__class__(param_ratio=None, ranks={"fc": 12}),
      cluster=PipelineConfig().cluster.__class__(layer_clusters={"fc": 8},
                                                 layers=("fc", "conv1")))
  path = write(tmp_path, recipe.dump(config))
  loaded = recipe.load(path)
  assert recipe.build(loaded.changes(), loaded) == config
  text = open(path, encoding="utf-8").read()
  assert text.startswith("# tfopt recipe") and "stages: [teacher, distill, lowrank, cluster]" in text


def test_flags_override_the_recipe_and_quick_sits_between(tmp_path):
  path = write(tmp_path, "stages: [teacher, distill]\nseed: 4\n"
               "teacher: {epochs: 7, learning_rate: 0.01}\n"
               "distill: {temperature: 4.0}\ndata: {max_train_examples: 900}\n")
  config = parse("--recipe", path, "--teacher_epochs", "9")
  assert config.teacher.epochs == 9 and config.teacher.learning_rate == 0.01
  assert config.seed == 4 and config.distill.temperature == 4.0
  assert config.stages == ("teacher", "distill")
  assert config.output_dir == "runs/mnist"
  quick = parse("--recipe", path, "--quick", "--seed", "0")
  assert quick.teacher.epochs == recipe.quick().teacher.epochs  # quick over recipe
  assert quick.seed == 0 and quick.distill.temperature == 4.0
  assert quick.output_dir == "runs/mnist-quick"


def parse_dotted(*args) -> PipelineConfig:
  """As the command line gives them: --section.field=value rewritten by parse_flags."""
  FLAGS.unparse_flags()
  cli.parse_flags(["tfopt compress", *args])
  return cli.config_from_flags()


def test_any_setting_as_section_field_flag_typed_as_a_recipe_and_last(tmp_path):
  path = write(tmp_path, "prune: {target_sparsity: 0.6}\ndistill: {temperature: 3.0}\n")
  config = parse_dotted("--recipe", path, "--target_sparsity", "0.5",
                        "--prune.target_sparsity=0.8", "--distill.alpha=1",
                        "--set", "convert.modes=[int8, int4]", "--stages=teacher,prune",
                        "--prune.ramp_fraction=0.25", "--output_dir=runs/a.b=c")
  assert config.prune.target_sparsity == 0.8  # over both the recipe and --target_sparsity
  assert config.distill.alpha == 1.0 and isinstance(config.distill.alpha, float)
  assert config.distill.temperature == 3.0 and config.prune.ramp_fraction == 0.25
  assert config.convert.modes == ("int8", "int4") and config.stages == ("teacher", "prune")
  assert config.output_dir == "runs/a.b=c"  # a flag's value is not a setting
  FLAGS.unparse_flags()


@pytest.mark.parametrize("arg, message", [
    ("--prune.sparsity=0.5", "--prune.sparsity: unknown key 'sparsity' in section prune; "
                             "the keys are: target_sparsity"),
    ("--prun.epochs=2", "unknown section 'prun'; the sections are: data, teacher"),
    ("--prune.epochs=two", "--prune.epochs: 'two' is not an integer."),
    ("--prune.target_sparsity=1.5", "target_sparsity=1.5 is invalid"),
    ("--convert.modes=int8", "--convert.modes: 'int8' is not a list"),
])
def test_a_bad_section_field_flag_is_one_error_line_and_exit_2(arg, message, tmp_path, capsys):
  FLAGS.unparse_flags()
  cli.parse_flags(["tfopt compress", arg, "--output_dir", str(tmp_path / "out")])
  assert cli.main(["tfopt compress"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("tfopt: error: ") and message in err and err.count("\n") == 1
  assert not (tmp_path / "out").exists()
  FLAGS.unparse_flags()


def test_a_flag_completes_what_a_recipe_leaves_open(tmp_path):
  path = write(tmp_path, "data:\n  dataset: folder\n")
  config = parse("--recipe", path, "--data_dir", str(tmp_path / "photos"))
  assert config.data.dataset == "folder" and config.output_dir == "runs/folder-photos"


def test_presets_are_valid_recipes():
  assert {"default", "smallest", "fastest", "accurate"} <= set(recipe.preset_names())
  for name in recipe.preset_names():
    config = parse("--preset", name)
    assert config.stages[0] == "teacher"
  assert parse("--preset", "default") == parse()  # the preset is the default run
  # --quick is the quick preset laid under the flags (only its run folder is named apart).
  assert parse("--preset", "quick") == dataclasses.replace(parse("--quick"),
                                                           output_dir="runs/mnist")
  assert parse("--preset", "quick") == dataclasses.replace(recipe.quick(), output_dir="runs/mnist")
  assert parse("--preset", "smallest").stages == ("teacher", "distill", "binary")
  accurate = parse("--preset", "accurate")
  assert accurate.data.augment and accurate.distill.epochs == 20
  assert accurate.teacher.epochs == 20


BAD_RECIPES = {
    "unknown stage": ("stages: [teacher, distil]\n", "line 1 (stages): stages='teacher,distil'"),
    "unknown key": ("seed: 1\nteacher:\n  epoch: 3\n",
                    "line 3: unknown key 'epoch' in section teacher; the keys are: builder, epochs"),
    "unknown top-level key": ("stages: [teacher]\nfoo: 1\n", "line 2: unknown key 'foo' in the recipe"),
    "wrong type": ("teacher:\n  epochs: five\n", "line 2: teacher.epochs: 'five' is not an integer"),
    "wrong list type": ("analysis:\n  bits: 8\n", "line 2: analysis.bits: 8 is not a list"),
    "out of range": ("prune:\n  target_sparsity: 1.5\n",
                     "line 2 (prune.target_sparsity): target_sparsity=1.5 is invalid"),
    "bad chain": ("stages: [teacher, scratch]\n", "line 1 (stages)"),
    "YAML syntax error": ("teacher:\n  epochs: 3\n   batch_size: 4\n", "line 3: not valid YAML"),
    "repeated key": ("seed: 1\nseed: 2\n", "line 2: seed is given twice"),
    "section given a value": ("teacher: 3\n", "line 1: teacher is a section"),
    "not a mapping": ("- teacher\n- distill\n", "line 1: a recipe is a mapping"),
}


@pytest.mark.parametrize("text, message", BAD_RECIPES.values(), ids=list(BAD_RECIPES))
def test_a_bad_recipe_names_the_line_and_key_exit_2_no_output(text, message, tmp_path,
                                                              capsys):
  path = write(tmp_path, text)
  output_dir = tmp_path / "out"
  code, error = run_cli(capsys, "--recipe", path, "--output_dir", str(output_dir))
  assert code == 2
  assert error.startswith(f"tfopt: error: recipe {path}") and error.count("\n") == 1, error
  assert message in error and "Traceback" not in error
  assert not output_dir.exists()


def test_missing_recipe_and_unknown_preset(tmp_path, capsys):
  code, error = run_cli(capsys, "--recipe", str(tmp_path / "nope.yaml"))
  assert code == 2 and "cannot be read" in error
  code, error = run_cli(capsys, "--preset", "tiniest")
  assert code == 2 and "preset='tiniest' is invalid: it must be one of accurate, default" in error


def test_a_run_writes_its_recipe_and_the_recipe_reruns_it(tmp_path, capsys):
  data_dir = tmp_path / "data"
  write_idx_dataset(data_dir / "mnist", train=160, test=40)
  output_dir = tmp_path / "run"
  code, error = run_cli(capsys, "--quick", "--stages", "teacher", "--teacher_epochs", "1",
                        "--data_dir", str(data_dir), "--output_dir", str(output_dir))
  assert code == 0, error
  written = output_dir / recipe.FILENAME
  manifest = json.loads((output_dir / "manifest.json").read_text())
  assert recipe.FILENAME in {entry["path"] for entry in manifest["artifacts"]}
  text = written.read_text()
  assert "teacher:\n  builder: teacher\n  epochs: 1\n" in text
  copy = write(tmp_path, text, "shared.yaml")  # the recipe, sent to a colleague
  code, error = run_cli(capsys, "--recipe", copy)  # no other flag
  assert code == 0, error
  report = json.loads((output_dir / "report.json").read_text())
  assert report["resumed_stages"] == ["teacher", "convert", "evaluate"]
  assert written.read_text() == text
  # A flag over the recipe is a different run: the teacher is trained again.
  code, error = run_cli(capsys, "--recipe", copy, "--teacher_epochs", "2")
  assert code == 0, error
  report = json.loads((output_dir / "report.json").read_text())
  assert report["resumed_stages"] == [] and report["config"]["teacher"]["epochs"] == 2
  assert os.path.isfile(output_dir / "baseline_int8.tflite")


def test_the_recipes_in_readme_and_docs_are_valid(tmp_path):
  import pathlib  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).parent.parent
  pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
  blocks = [block for page in pages
            for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.DOTALL)]
  assert len(blocks) >= 3
  for number, block in enumerate(blocks):
    loaded = recipe.load(write(tmp_path, block, f"readme{number}.yaml"))
    config = recipe.build(loaded.changes(), loaded)
    assert config.stages[0] == "teacher"


def test_on_and_off_are_words_where_a_setting_is_a_string(tmp_path):
  # YAML 1.1 reads `off` as false; convert.int8_repair takes the words on / off.
  loaded = recipe.load(write(tmp_path, "convert:\n  int8_repair: off\n"))
  assert recipe.build(loaded.changes(), loaded).convert.int8_repair == "off"
  assert parse_dotted("--convert.int8_repair=off").convert.int8_repair == "off"
  with pytest.raises(recipe.RecipeError, match="prune.target_sparsity: 'x' is not a number"):
    parse_dotted("--prune.target_sparsity=x")


def test_the_shared_finetune_section_fills_every_technique_that_does_not_set_its_own(tmp_path):
  path = write(tmp_path, "finetune:\n  epochs: 3\n  learning_rate: 0.0002\n"
               "  use_teacher: false\nslim:\n  finetune_epochs: 4\n")
  config = parse("--recipe", path)
  assert (config.prune.epochs, config.cluster.epochs, config.qat.epochs) == (3, 3, 3)
  assert config.strided.finetune_epochs == config.search.finetune_epochs == 3
  assert config.slim.finetune_epochs == 4  # its own, in the same file
  assert config.slim.sparsity_epochs == PipelineConfig().slim.sparsity_epochs
  assert config.prune.learning_rate == config.lowrank.learning_rate == 0.0002
  assert not config.prune.use_teacher and not config.binary.use_teacher
  # Not a technique: the teacher and the student keep theirs.
  assert config.teacher.epochs == PipelineConfig().teacher.epochs
  assert config.distill.learning_rate == PipelineConfig().distill.learning_rate
  # A later layer wins: the command line's finetune over the recipe's slim.
  assert parse_dotted("--recipe", path, "--finetune.epochs=1").slim.finetune_epochs == 1
  assert parse_dotted("--quick", "--finetune.epochs=2").prune.epochs == 2
  beside = parse_dotted("--prune_epochs=4", "--finetune.epochs=1")  # its own flag wins
  assert (beside.prune.epochs, beside.cluster.epochs) == (4, 1)
  with pytest.raises(recipe.RecipeError, match=r"finetune.epochs\): epochs=0 is invalid"):
    parse_dotted("--finetune.epochs=0")
  dumped = recipe.load(write(tmp_path, recipe.dump(config), "dumped.yaml"))
  assert recipe.build(dumped.changes(), dumped) == config  # written out section by section
