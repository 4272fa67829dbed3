"""Knowledge distillation (Hinton et al. 2015): a student learns from a teacher.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `distill` pipeline stage

Its settings are the `distill` section, in tfopt.config.pipeline_config beside
the teacher's: every built-in run makes its student with it.
"""

import importlib


def __getattr__(name):
  """`from tfopt.techniques.distill import ...` and `distill.<name>` read algorithm.py,
  imported on first use (so settings.py imports without TensorFlow)."""
  if name.startswith("__") or name in ("algorithm", "settings", "stage"):
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  try:
    return getattr(importlib.import_module(__name__ + ".algorithm"), name)
  except AttributeError:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
