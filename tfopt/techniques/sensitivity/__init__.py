"""Per-layer sensitivity: how much each layer can lose, and pruning by it.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `sensitivity` pipeline stage

Its settings are the `analysis` section (tfopt.config).
"""

import importlib


def __getattr__(name):
  """`from tfopt.techniques.sensitivity import ...` and `sensitivity.<name>` read algorithm.py,
  imported on first use (so settings.py imports without TensorFlow)."""
  if name.startswith("__") or name in ("algorithm", "settings", "stage"):
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  try:
    return getattr(importlib.import_module(__name__ + ".algorithm"), name)
  except AttributeError:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
