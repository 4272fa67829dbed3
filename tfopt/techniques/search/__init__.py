"""Search under a budget: the smallest (or fastest) file within an accuracy drop.

    algorithm.py  the technique, callable on any Keras 2 model
    space.py      the search's space: its models, files and measurements
    settings.py   its section of the settings (PipelineConfig.search)
    stage.py      the `search` pipeline stage
"""

import importlib


def __getattr__(name):
  """`from tfopt.techniques.search import ...` and `search.<name>` read algorithm.py,
  imported on first use (so settings.py imports without TensorFlow)."""
  if name.startswith("__") or name in ("algorithm", "settings", "stage"):
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  try:
    return getattr(importlib.import_module(__name__ + ".algorithm"), name)
  except AttributeError:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
