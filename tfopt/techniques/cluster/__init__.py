"""Weight sharing (Deep Compression's k-means quantization) with tfmot.

    algorithm.py  the technique, callable on any Keras 2 model
    settings.py   its section of the settings (PipelineConfig.cluster)
    stage.py      the `cluster` pipeline stage
"""

import importlib


def __getattr__(name):
  """`from tfopt.techniques.cluster import ...` and `cluster.<name>` read algorithm.py,
  imported on first use (so settings.py imports without TensorFlow)."""
  if name.startswith("__") or name in ("algorithm", "settings", "stage"):
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  try:
    return getattr(importlib.import_module(__name__ + ".algorithm"), name)
  except AttributeError:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
