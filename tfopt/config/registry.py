"""The only list of stage names and of the techniques' settings sections:
--stages, PipelineConfig's fields, config validation and resume read it.

Each built-in stage is one line below (its name and the module that defines
`STAGE`); the module is imported when the stage is first used. Each built-in
technique's settings section is one line of SECTIONS (its name and its
dataclass): PipelineConfig gets a field for it, recipes and
`--section.field=value` a section, the option reference a table. The order is
the order of the report's sections and of the --stages help text. Code
outside tfopt adds a stage with `register(stage)`:

    class Toy(Stage):
      name, settings = "toy", ("seed",)
      def run(self, context): return StageOutput(record={"layers": 3})

    register(Toy())   # now --stages teacher,toy runs it, and resume keeps it
"""

import dataclasses
import importlib
from typing import Dict, List, Tuple

from tfopt.core.validate import ConfigError, require

__all__ = ["BUILTIN", "SECTIONS", "RUN_WIDE", "builtin_sections", "names", "get", "all_stages",
           "register", "unregister", "plan", "check_chain", "stage_sections"]

BUILTIN = {
    "teacher": "tfopt.stages.teacher",
    "distill": "tfopt.techniques.distill.stage",
    "scratch": "tfopt.stages.scratch",
    "prune": "tfopt.techniques.prune.stage",
    "slim": "tfopt.techniques.slim.stage",
    "strided": "tfopt.techniques.strided.stage",
    "lowrank": "tfopt.techniques.lowrank.stage",
    "cluster": "tfopt.techniques.cluster.stage",
    "qat": "tfopt.techniques.qat.stage",
    "binary": "tfopt.techniques.binary.stage",
    "bitwidth": "tfopt.techniques.bitwidth.stage",
    "sweep": "tfopt.techniques.sweep.stage",
    "sensitivity": "tfopt.techniques.sensitivity.stage",
    "search": "tfopt.techniques.search.stage",
    # Finishing stages: every run ends with them; --stages does not name them.
    "convert": "tfopt.stages.tflite_files",
    "evaluate": "tfopt.stages.measure_files",
}
# The built-in techniques' settings sections, "module:Class", in the order of
# PipelineConfig's fields (after data, teacher and distill, which every run has).
# `analysis` is shared by bitwidth, sweep and sensitivity.
SECTIONS = {
    "prune": "tfopt.techniques.prune.settings:PruneConfig",
    "slim": "tfopt.techniques.slim.settings:SlimConfig",
    "strided": "tfopt.techniques.strided.settings:StridedConfig",
    "lowrank": "tfopt.techniques.lowrank.settings:LowRankConfig",
    "cluster": "tfopt.techniques.cluster.settings:ClusterConfig",
    "qat": "tfopt.techniques.qat.settings:QatConfig",
    "binary": "tfopt.techniques.binary.settings:BinaryConfig",
    "analysis": "tfopt.config.technique_config:AnalysisConfig",
    "search": "tfopt.techniques.search.settings:SearchConfig",
}
# PipelineConfig's run-wide sections and fields (tests/test_options.py checks the list).
RUN_WIDE = ("data", "teacher", "distill", "convert", "evaluate", "output_dir", "seed",
            "compare_scratch", "stages", "model", "allow_unsafe_model", "strategy",
            "worker_timeout", "stage_settings")
FINISHING = ("convert", "evaluate")
# Stages that may follow qat: they do not touch the latest (quantization-aware) model.
AFTER_QAT = ("scratch",)

_added: Dict[str, object] = {}  # stages registered at run time, by name
# Names a stage's own settings section cannot take: PipelineConfig's sections and
# fields, the shared finetune, the built-in stages.
_TAKEN = RUN_WIDE + tuple(SECTIONS) + ("finetune",) + tuple(BUILTIN)
_loaded: Dict[str, object] = {}


def builtin_sections() -> Dict[str, type]:
  """{section name: its settings dataclass} of the built-in techniques, in
  PipelineConfig's order (the settings modules import nothing but tfopt.core)."""
  found = {}
  for section, where in SECTIONS.items():
    module, name = where.split(":")
    found[section] = getattr(importlib.import_module(module), name)
  return found


def names() -> Tuple[str, ...]:
  """The stage names --stages accepts, in registry order."""
  return tuple(name for name in list(BUILTIN) + list(_added) if name not in FINISHING)


def get(name: str):
  """The Stage registered as `name`.

  Raises:
    ConfigError: no stage has that name.
  """
  if name in _added:
    return _added[name]
  if name not in BUILTIN:
    raise ConfigError(f"There is no stage {name!r}; the stages are "
                      f"{', '.join(names())}.")
  if name not in _loaded:
    _loaded[name] = importlib.import_module(BUILTIN[name]).STAGE
  return _loaded[name]


def all_stages() -> List[object]:
  """Every registered stage, finishing ones last (the report's section order)."""
  return [get(name) for name in names() + FINISHING]


def register(stage):
  """Adds `stage` (a tfopt.stages.base.Stage) under `stage.name`; returns it."""
  require(isinstance(stage.name, str) and stage.name.isidentifier(), "stage.name",
          stage.name, "an identifier such as 'my_stage'")
  if stage.name in BUILTIN or stage.name in _added:
    raise ConfigError(f"A stage named {stage.name!r} is already registered.")
  settings = getattr(stage, "config_class", None)
  if settings is not None:
    require(dataclasses.is_dataclass(settings) and isinstance(settings, type),
            "stage.config_class", settings, "a dataclass (its settings section)")
    require(stage.name not in _TAKEN, "stage.name", stage.name,
            "not the name of a built-in settings section")
  _added[stage.name] = stage
  return stage


def stage_sections() -> Dict[str, type]:
  """{stage name: its settings dataclass} of the registered stages that bring
  their own settings (Stage.config_class), in registry order."""
  return {name: stage.config_class for name, stage in _added.items()
          if getattr(stage, "config_class", None) is not None}


def unregister(name: str):
  """Removes a stage added with `register`."""
  _added.pop(name, None)


def plan(config) -> list:
  """The Stage objects one run executes, in order, finishing stages included."""
  return [get(name) for name in config.stage_list() + FINISHING]


def check_chain(config):
  """Checks config.stages, then lets each stage check what comes before it.

  Raises:
    ConfigError: an unknown or repeated stage, a chain not starting with
      teacher, or a stage that cannot follow the ones before it.
  """
  stages, known = tuple(config.stages), names()
  shown = ",".join(map(str, stages))
  require(bool(stages) and all(stage in known for stage in stages), "stages", shown,
          "a list of " + ", ".join(known))
  require(len(set(stages)) == len(stages), "stages", shown, "a list without repeats")
  require(stages[0] == "teacher", "stages", shown, "a list that starts with teacher")
  chain = config.stage_list()
  for position, name in enumerate(chain):
    if "qat" in chain[:position] and name not in FINISHING + AFTER_QAT:
      raise ConfigError(f"stages={shown} is invalid: {name} cannot follow qat, whose "
                        "quantization-aware model is the last step before the int8 "
                        f"file; put {name} before qat in --stages.")
    get(name).check_chain(config, chain[:position])
