"""Network slimming and filter pruning: remove whole conv channels.

    algorithm.py       the technique, callable on any Keras 2 model
    channels.py        which channels flow where, and their removal
    channel_groups.py  filters that must go together (residual adds, SE)
    settings.py   its section of the settings (PipelineConfig.slim)
    stage.py           the `slim` pipeline stage
"""

import importlib


def __getattr__(name):
  """`from tfopt.techniques.slim import ...` and `slim.<name>` read algorithm.py,
  imported on first use (so settings.py imports without TensorFlow)."""
  if name.startswith("__") or name in ("algorithm", "settings", "stage"):
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  try:
    return getattr(importlib.import_module(__name__ + ".algorithm"), name)
  except AttributeError:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
