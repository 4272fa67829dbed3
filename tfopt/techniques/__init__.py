"""The compression techniques, one folder each: the algorithm (algorithm.py,
callable from Python on any Keras 2 model), its settings section (settings.py:
a frozen dataclass, in the config layer) and its pipeline stage (stage.py,
whose `on_task` runs it on a user's task; distill, sensitivity and search
keep their task side in on_task.py). Stage and settings are registered in tfopt.config.registry (BUILTIN, SECTIONS). distill's
section is run-wide (tfopt.config.pipeline_config); sensitivity, sweep and
bitwidth share `analysis` (tfopt.config.technique_config).

    distill      knowledge distillation into a smaller student
    prune        magnitude pruning (tfmot)
    slim         structured channel pruning through residual / SE groups
    strided      2 x 2 pools folded into stride-2 convolutions
    lowrank      truncated-SVD factorization
    cluster      weight sharing (tfmot clustering)
    qat          quantization-aware training (int8, int4)
    binary       binarized and ternary weights
    sensitivity  per-layer pruning sensitivity -> per-layer sparsities
    sweep        accuracy vs sparsity curves
    bitwidth     accuracy vs weight bits
    search       the budgeted search for the smallest or fastest file
"""

import importlib

SUBMODULES = ("algorithm", "settings", "stage", "on_task")


def lazy_algorithm(package: str):
  """The module `__getattr__` of a technique package: `from tfopt.techniques.<name>
  import ...` and `<name>.<attr>` read its algorithm.py, imported on first use, so
  that its settings.py imports without TensorFlow."""

  def __getattr__(name):  # pylint: disable=invalid-name
    if name.startswith("__") or name in SUBMODULES:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    try:
      return getattr(importlib.import_module(package + ".algorithm"), name)
    except AttributeError:
      raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

  return __getattr__
