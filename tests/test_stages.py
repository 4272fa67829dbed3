"""The stage registry: one list of names, one interface, a toy stage added from outside."""

import dataclasses
import json

import numpy as np
import pytest

from conftest import write_idx_dataset
from tfopt import pipeline
from tfopt.config import recipe
from tfopt.config import (ConfigError, ConvertConfig, DataConfig, EvaluateConfig, PipelineConfig,
                          TrainConfig)
from tfopt.config import registry
from tfopt.run import resume
from tfopt.stages.base import NewModel, Stage, StageOutput



class KernelNormStage(Stage):
  """A toy analysis defined here, outside tfopt: the L2 norm of each kernel."""
  name = "kernel_norm"
  settings = ("seed", "evaluate.batch_size")
  report_fields = {"kernel_norms": dict}

  def run(self, context):
    model = context.current_model()
    norms = {layer.name: float(np.linalg.norm(layer.kernel.numpy()))
             for layer in model.layers if hasattr(layer, "kernel")}
    return StageOutput(record={"norms": norms, "model": context.current.name})

  def summarize(self, record, context):
    return {"kernel_norms": record["norms"]}

  def report_section(self, report):
    norms = report.sections.get("kernel_norms")
    return ["", "## Kernel norms", ""] + [f"- {name}: {value:.3f}"
                                          for name, value in norms.items()] if norms else []


class HalveStage(Stage):
  """A toy compressing stage: every kernel halved; makes a model the next stage takes."""
  name = "halve"
  settings = ()

  def run(self, context):
    from tfopt.core._keras import clone_model  # pylint: disable=g-import-not-at-top
    model = clone_model(context.current_model())
    for layer in model.layers:
      if hasattr(layer, "kernel"):
        layer.kernel.assign(layer.kernel.numpy() / 2)
    return StageOutput(models=[NewModel(context.current.then("halved", "halved"), model)])


@pytest.fixture
def toy_stages():
  stages = [registry.register(KernelNormStage()), registry.register(HalveStage())]
  yield stages
  for stage in stages:
    registry.unregister(stage.name)


def tiny_config(tmp_path, stages):
  write_idx_dataset(tmp_path / "data" / "mnist", train=200, test=40)
  return recipe.quick(
      data=DataConfig(data_dir=str(tmp_path / "data")),
      teacher=TrainConfig("student", epochs=1, batch_size=32), stages=stages,
      output_dir=str(tmp_path / "out"), convert=ConvertConfig(representative_examples=10),
      evaluate=EvaluateConfig(latency_warmup=1, latency_runs=2, latency_breakdown=False))


def test_a_stage_defined_outside_tfopt_runs_in_a_chain_and_resumes(toy_stages, tmp_path):
  config = tiny_config(tmp_path, ("teacher", "halve", "kernel_norm"))
  first = pipeline.run(config)
  assert [row.name for row in first.models] == [
      "baseline float32", "baseline int8", "halved teacher int8"]
  # The analysis measured the model the toy compressing stage made.
  norms = first.kernel_norms
  assert set(norms) == {"block1_conv", "block2_conv", "block3_conv", "logits"}
  report = json.loads((tmp_path / "out" / "report.json").read_text())
  assert report["kernel_norms"] == pytest.approx(norms)
  assert "## Kernel norms" in (tmp_path / "out" / "report.md").read_text()
  manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
  by_stage = {stage["stage"]: stage for stage in manifest["stages"]}
  assert by_stage["halve"]["files"] == ["teacher_halved.keras"]
  assert by_stage["kernel_norm"]["output"]["record"]["model"] == "teacher_halved"
  again = pipeline.run(config)
  assert again.resumed_stages == ["teacher", "halve", "kernel_norm", "convert", "evaluate"]
  assert again.kernel_norms == norms and again.models == first.models
  # A setting the toy stage declares redoes it and what follows, not what is before.
  changed = pipeline.run(dataclasses.replace(config, evaluate=dataclasses.replace(
      config.evaluate, batch_size=500)))
  assert changed.resumed_stages == ["teacher", "halve"]


@dataclasses.dataclass(frozen=True)
class ScaleConfig:
  """How much the toy scale stage shrinks every kernel.

  factor: each kernel is multiplied by it.
  """
  factor: float = 0.5


class ScaleStage(Stage):
  """A toy stage from outside tfopt that brings its own settings."""
  name = "scale"
  settings = ("scale",)
  config_class = ScaleConfig

  def run(self, context):
    from tfopt.core._keras import clone_model  # pylint: disable=g-import-not-at-top
    factor = context.config.section("scale").factor
    model = clone_model(context.current_model())
    for layer in model.layers:
      if hasattr(layer, "kernel"):
        layer.kernel.assign(layer.kernel.numpy() * factor)
    return StageOutput(models=[NewModel(context.current.then("scaled", "scaled"), model)],
                       record={"factor": factor})


def test_a_stage_from_outside_brings_its_settings(tmp_path):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfopt.cli import compress as cli  # pylint: disable=g-import-not-at-top
  from tfopt.config import options
  registry.register(ScaleStage())
  try:
    path = tmp_path / "scale.yaml"
    path.write_text("stages: [teacher, scale]\nscale:\n  factor: 0.25\n")
    loaded = recipe.load(str(path))
    config = recipe.build(loaded.changes(), loaded)
    assert config.section("scale") == ScaleConfig(0.25)
    assert PipelineConfig().section("scale") == ScaleConfig()  # its default
    dumped = recipe.dump(config)
    assert "scale:\n  factor: 0.25" in dumped and "stage_settings" not in dumped
    (tmp_path / "again.yaml").write_text(dumped)
    again = recipe.load(str(tmp_path / "again.yaml"))
    assert recipe.build(again.changes(), again) == config
    flags.FLAGS.unparse_flags()
    cli.parse_flags(["tfopt compress", "--stages=teacher,scale", "--scale.factor=0.75"])
    assert cli.config_from_flags().section("scale").factor == 0.75
    with pytest.raises(recipe.RecipeError, match="scale.factor: 'x' is not a number"):
      recipe.from_assignments(["scale.factor=x"])
    assert "| `scale.factor` | float | 0.5 |" in options.reference_markdown("scale")
    # Its settings are in its resume key: another factor redoes it.
    plan = registry.plan(config)
    other = dataclasses.replace(config, stage_settings=(("scale", ScaleConfig(0.5)),))
    keys, other_keys = (resume.stage_keys(c, plan, "data") for c in (config, other))
    assert keys[0] == other_keys[0] and keys[1] != other_keys[1]
    run = pipeline.run(dataclasses.replace(tiny_config(tmp_path, ("teacher", "scale")),
                                           stage_settings=config.stage_settings))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    by_stage = {stage["stage"]: stage for stage in manifest["stages"]}
    assert by_stage["scale"]["output"]["record"]["factor"] == 0.25
    assert "scaled teacher int8" in [row.name for row in run.models]
  finally:
    registry.unregister("scale")
  with pytest.raises(ConfigError, match="stage_settings"):
    PipelineConfig(stage_settings=(("scale", ScaleConfig()),))  # no longer registered


def test_registry_names_are_what_stages_accepts_and_resume_keys(toy_stages):
  names = registry.names()
  assert names[:13] == ("teacher", "distill", "scratch", "prune", "slim", "strided",
                        "lowrank", "cluster", "qat", "binary", "bitwidth", "sweep",
                        "sensitivity")
  assert names[-2:] == ("kernel_norm", "halve")
  for name in names[1:]:
    stages = ("teacher", "distill", name) if name == "scratch" else ("teacher", name)
    config = PipelineConfig(stages=stages)
    plan = registry.plan(config)
    assert [stage.name for stage in plan] == list(config.stage_list()) + [
        "convert", "evaluate"]
    assert len(resume.stage_keys(config, plan, "data")) == len(plan)
  with pytest.raises(ConfigError, match="a list of teacher, distill, .*, halve"):
    PipelineConfig(stages=("teacher", "convert"))
  registry.unregister("halve")
  with pytest.raises(ConfigError, match="stages='teacher,halve' is invalid"):
    PipelineConfig(stages=("teacher", "halve"))


def test_the_cli_help_lists_the_registry():
  from tfopt.cli import compress as cli  # pylint: disable=g-import-not-at-top
  help_text = cli.FLAGS["stages"].help
  assert all(name in help_text for name in registry.names())


def test_settings_are_field_level_where_it_matters():
  base = PipelineConfig(stages=("teacher", "distill", "prune", "sensitivity",
                                "bitwidth", "sweep"))
  plan = registry.plan(base)
  keys = dict(zip([stage.name for stage in plan], resume.stage_keys(base, plan, "d")))
  from tfopt.config import AnalysisConfig  # pylint: disable=g-import-not-at-top
  other_bits = dataclasses.replace(base, analysis=AnalysisConfig(bits=(8,)))
  changed = dict(zip([stage.name for stage in plan],
                     resume.stage_keys(other_bits, plan, "d")))
  # --bits changes bitwidth's key (and so every later key), not sensitivity's.
  assert changed["sensitivity"] == keys["sensitivity"]
  assert changed["bitwidth"] != keys["bitwidth"]


@pytest.mark.parametrize("after", ["bitwidth", "sweep", "prune", "cluster", "sensitivity",
                                   "slim", "lowrank", "binary"])
def test_nothing_that_touches_the_model_can_follow_qat(after):
  # teacher,...,qat,bitwidth used to end in a traceback when bitwidth cloned the
  # quantization-aware model; now it is refused before anything runs.
  with pytest.raises(ConfigError, match=f"{after} cannot follow qat.*before qat"):
    PipelineConfig(stages=("teacher", "qat", after))
  PipelineConfig(stages=("teacher", after, "qat"))  # the other way round is fine
  PipelineConfig(stages=("teacher", "distill", "qat", "scratch"))


def test_a_model_entry_knows_what_was_applied_not_from_its_name():
  from tfopt.stages.base import ModelEntry  # pylint: disable=g-import-not-at-top
  student = ModelEntry("student_distilled", "distilled student", "student_distilled", "student")
  pruned = student.then("pruned", "pruned", sparsity=0.7)
  clustered = pruned.then("clustered", "clustered")
  assert not student.pruned and pruned.pruned and clustered.sparsity == 0.7
  # A name that merely ends in "pruned" says nothing; the entry's fields do.
  assert not student.then("unpruned", "unpruned").pruned
  assert ModelEntry.from_json(clustered.to_json()) == clustered
