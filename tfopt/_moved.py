"""The module paths of tfopt's former flat folder, importable for this release
(they go in 0.3, with the deprecated short flags): `from tfopt import prune` or
`import tfopt.stages.prune` still work, with a DeprecationWarning naming the new
path. The alias is the new module itself (same object), so patching either name
patches both. tfopt/__init__.py installs the finder; nothing in tfopt imports an
old path.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["MOVED", "install"]

# old path -> new path, both under tfopt.
MOVED = {
    "_keras": "core._keras",
    "artifacts": "core.artifacts",
    "binary": "techniques.binary.algorithm",
    "bitwidth": "techniques.bitwidth.algorithm",
    "breakdown": "litert.breakdown",
    "channel_groups": "techniques.slim.channel_groups",
    "channels": "techniques.slim.channels",
    "cluster": "techniques.cluster.algorithm",
    "console": "cli.console",
    "convert": "litert.convert",
    "deploy": "run.deploy",
    "distill": "techniques.distill.algorithm",
    "distribute": "training.distribute",
    "epoch_checkpoints": "training.epoch_checkpoints",
    "errors": "core.errors",
    "evaluate": "litert.evaluate",
    "explorer": "litert.explorer",
    "image_files": "data.image_files",
    "image_folder": "data.image_folder",
    "inspect_file": "cli.inspect",
    "int4": "litert.int4",
    "int8_bias_correction": "litert.int8_bias_correction",
    "int8_equalization": "litert.int8_equalization",
    "int8_fidelity": "litert.int8_fidelity",
    "int8_file_edits": "litert.int8_file_edits",
    "int8_ranges": "litert.int8_ranges",
    "int8_repair": "litert.int8_repair",
    "keras2_flatten": "keras_io.keras2_flatten",
    "keras3": "keras_io.keras3",
    "lowrank": "techniques.lowrank.algorithm",
    "macs": "keras_io.macs",
    "measure": "cli.measure",
    "model_io": "keras_io.model_io",
    "models": "keras_io.models",
    "options": "config.options",
    "predict": "keras_io.predict",
    "preflight": "run.preflight",
    "progress": "core.progress",
    "prune": "techniques.prune.algorithm",
    "qat": "techniques.qat.algorithm",
    "qat_int4": "techniques.qat.int4",
    "quant_debug": "litert.quant_debug",
    "quiet_start": "core.quiet_start",
    "recipe": "config.recipe",
    "report": "stages.report",
    "resume": "run.resume",
    "runner": "run.runner",
    "search": "techniques.search.algorithm",
    "search_space": "techniques.search.space",
    "sensitivity": "techniques.sensitivity.algorithm",
    "slim": "techniques.slim.algorithm",
    "stages.binary": "techniques.binary.stage",
    "stages.bitwidth": "techniques.bitwidth.stage",
    "stages.cluster": "techniques.cluster.stage",
    "stages.convert": "stages.tflite_files",
    "stages.distill": "techniques.distill.stage",
    "stages.evaluate": "stages.measure_files",
    "stages.lowrank": "techniques.lowrank.stage",
    "stages.prune": "techniques.prune.stage",
    "stages.qat": "techniques.qat.stage",
    "stages.registry": "config.registry",
    "stages.search": "techniques.search.stage",
    "stages.sensitivity": "techniques.sensitivity.stage",
    "stages.slim": "techniques.slim.stage",
    "stages.strided": "techniques.strided.stage",
    "stages.sweep": "techniques.sweep.stage",
    "strided": "techniques.strided.algorithm",
    "sweep": "techniques.sweep.algorithm",
    "task_distill": "techniques.distill.on_task",
    "task_file": "task.file",
    "task_measure": "task.measure",
    "task_model": "task.model",
    "task_objective": "task.objective",
    "task_report": "task.report",
    "task_run": "run.task_run",
    "task_search": "techniques.search.on_task",
    "task_sensitivity": "techniques.sensitivity.on_task",
    "technique_config": "config",
    "tensorboard_logs": "training.tensorboard_logs",
    "train": "training.train",
    "validate": "core.validate",
}


class _AliasLoader(importlib.abc.Loader):
  """Loads an old path as the module at its new path."""

  def __init__(self, new_name: str):
    self.new_name = new_name
    self.own_spec = None

  def create_module(self, spec):
    module = importlib.import_module(self.new_name)
    self.own_spec = module.__spec__  # the import system sets the alias's; put it back
    warnings.warn(f"{spec.name} moved to {self.new_name}; the old path goes in tfopt 0.3.",
                  DeprecationWarning, stacklevel=2)
    return module

  def exec_module(self, module):
    """Nothing to run (the new module is loaded): its own spec back."""
    module.__spec__ = self.own_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
  """Finds the old paths (after the normal finders found nothing)."""

  def find_spec(self, fullname, path=None, target=None):  # pylint: disable=unused-argument
    moved = MOVED.get(fullname.removeprefix("tfopt.")) if fullname.startswith("tfopt.") else None
    if moved is None:
      return None
    return importlib.util.spec_from_loader(fullname, _AliasLoader("tfopt." + moved))


def install():
  """Adds the finder once (after the normal ones)."""
  if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
    sys.meta_path.append(_AliasFinder())
