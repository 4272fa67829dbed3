"""The option reference is read from the config: every setting documented,
every short flag an alias of one `--section.field`, nothing left out."""

import dataclasses

import pytest
from absl import flags

from tfopt.cli import compress as cli
from tfopt.config import options, PipelineConfig

FLAGS = flags.FLAGS
# Flags that steer the run rather than set one of its settings.
RUN_FLAGS = {"force", "log_format", "preset", "quick", "recipe", "search", "set", "task"}


def test_every_setting_has_a_type_a_default_and_a_description():
  found = options.options()
  keys = [option.key for option in found]
  assert len(keys) == len(set(keys)) > 100
  assert "prune.target_sparsity" in keys and "seed" in keys and "data" not in keys
  undocumented = [option.key for option in found if not option.description]
  assert not undocumented, f"document these in their class docstring: {undocumented}"
  sparsity = next(option for option in found if option.key == "prune.target_sparsity")
  assert (sparsity.type_text, sparsity.default, sparsity.flags) == (
      "float", 0.7, ("target_sparsity",))
  assert "[0, 1)" in sparsity.description


def test_every_task_stage_setting_has_a_description():
  from tfopt.run import task_run  # pylint: disable=g-import-not-at-top
  undocumented = []
  for stage, hook in task_run.task_stages().items():
    described = options.field_descriptions(hook.config_class)
    undocumented += [f"{stage}.{field.name}" for field in dataclasses.fields(hook.config_class)
                     if field.name not in described and field.name not in options.FINE_TUNING]
    assert set(hook.defaults) <= {field.name for field in dataclasses.fields(hook.config_class)}
  assert not undocumented, f"document these in their class docstring: {undocumented}"


def test_every_short_flag_is_an_alias_of_a_real_setting():
  keys = {option.key for option in options.options()}
  targets = [f"{section}.{name}" if section else name
             for section, name in options.ALIASES.values()]
  targets += [f"{section}.{name}" for pairs in options.MULTI_ALIASES.values()
              for section, name in pairs]
  assert set(targets) <= keys, set(targets) - keys
  defined = {flag.name for flag in FLAGS.get_flags_for_module(cli.__name__)}
  aliased = set(options.ALIASES) | set(options.MULTI_ALIASES)
  assert defined - RUN_FLAGS == aliased, (defined - RUN_FLAGS) ^ aliased


@pytest.mark.parametrize("alias, dotted", [
    ("--target_sparsity=0.5", "--prune.target_sparsity=0.5"),
    ("--teacher_epochs=3", "--teacher.epochs=3"),
    ("--slim_scope=global", "--slim.scope=global"),
    ("--cluster_preserve_sparsity=false", "--cluster.preserve_sparsity=false"),
    ("--search_budget=60", "--search.time_budget=60"),
    ("--seed=5", "--seed=5"),
    ("--int8_repair=off", "--convert.int8_repair=off"),
])
def test_a_short_flag_and_its_dotted_setting_make_the_same_run(alias, dotted):
  def parse(*args) -> PipelineConfig:
    FLAGS.unparse_flags()
    cli.parse_flags(["tfopt compress", *args])
    return cli.config_from_flags()
  with_alias, with_dotted = parse(alias), parse(dotted)
  assert with_alias == with_dotted != parse()


def test_batch_size_sets_every_training_section_and_nothing_else():
  FLAGS.unparse_flags()
  cli.parse_flags(["tfopt compress", "--batch_size=64"])
  config, default = cli.config_from_flags(), PipelineConfig()
  changed = {f"{section}.batch_size" for section, _ in options.sections()[1:]
             if getattr(getattr(config, section, None), "batch_size", None)
             != getattr(getattr(default, section, None), "batch_size", None)}
  assert changed == {f"{section}.batch_size"
                     for section, _ in options.MULTI_ALIASES["batch_size"]}


def test_the_reference_is_a_table_per_section_with_every_setting():
  text = options.reference_markdown()
  for section, _ in options.sections()[1:]:
    assert f"### `{section}`" in text
  for option in options.options():
    assert f"| `{option.key}` |" in text
  prune = options.reference_markdown("prune")
  assert prune.count("\n| `prune.") == len(dataclasses.fields(PipelineConfig().prune))
  assert "--target_sparsity" in prune and "`slim." not in prune


def test_a_deprecated_flag_still_works_and_says_its_new_form(capsys):
  assert "qat_epochs" in options.DEPRECATED and "target_sparsity" not in options.DEPRECATED
  assert all(options.replacement(flag).count(".") == 1 for flag in options.DEPRECATED)
  FLAGS.unparse_flags()
  cli.parse_flags(["tfopt compress", "--slim_l1=0.001", "--target_sparsity=0.5",
                   "--dataset=nosuch"])
  assert cli.main(["tfopt compress"]) == 2  # the bad data set, after the note
  out = capsys.readouterr().out
  assert ("note: --slim_l1 is deprecated and goes in tfopt 0.3; write "
          "--slim.l1_strength=VALUE") in out
  assert "--target_sparsity" not in out  # an everyday flag: no note
  assert "Deprecated" in FLAGS["slim_l1"].help and "Deprecated" not in FLAGS["alpha"].help


def test_a_registered_stage_cannot_take_a_built_in_section_name():
  from tfopt.config import registry  # pylint: disable=g-import-not-at-top
  fields = [item.name for item in dataclasses.fields(PipelineConfig)]
  # PipelineConfig is the run-wide fields and the registry's technique sections, no more.
  assert sorted(fields) == sorted(registry.RUN_WIDE + tuple(registry.SECTIONS))
  assert set(fields) | {"finetune"} <= set(registry._TAKEN)  # pylint: disable=protected-access


def test_a_technique_section_in_the_registry_becomes_a_pipeline_config_field(monkeypatch):
  from tfopt.config import pipeline_config, registry  # pylint: disable=g-import-not-at-top
  from tfopt.config.technique_config import FineTuneConfig  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(registry.SECTIONS, "toy", "tfopt.config.technique_config:FineTuneConfig")

  @dataclasses.dataclass(frozen=True)
  @pipeline_config._with_technique_sections  # pylint: disable=protected-access
  class Toy:
    data: int = 0
    distill: int = 0
    seed: int = 0

  assert [item.name for item in dataclasses.fields(Toy)] == [
      "data", "distill", *registry.SECTIONS, "seed"]
  assert isinstance(Toy().toy, FineTuneConfig) and Toy().prune == PipelineConfig().prune


def test_finetune_on_a_task_run_fills_its_stages_below_their_own_flags():
  FLAGS.unparse_flags()
  cli.parse_flags(["tfopt compress", "--model=m.keras", "--task=t.py",
                   "--finetune.epochs=2", "--finetune.learning_rate=0.001",
                   "--prune.epochs=5"])
  settings = cli._task_stage_flags(  # pylint: disable=protected-access
      {"slim": {"finetune_epochs": 7, "rate": 0.25}, "qat": {"epochs": 9}})
  assert settings["prune"]["epochs"] == 5  # its own flag, on the same command line
  assert settings["slim"] == {"finetune_epochs": 2, "rate": 0.25, "learning_rate": 0.001}
  assert settings["qat"]["epochs"] == settings["cluster"]["epochs"] == 2
  assert "distill" not in settings  # not fine-tuning
  FLAGS.unparse_flags()
  cli.parse_flags(["tfopt compress", "--model=m.keras", "--task=t.py", "--finetune.epoch=2"])
  with pytest.raises(cli.ConfigError, match="unknown key 'epoch' in section finetune"):
    cli._task_stage_flags({})  # pylint: disable=protected-access
