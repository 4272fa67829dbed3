"""Quantization-aware training with tfmot, and its collaborative variants.

    algorithm.py  the technique, callable on any Keras 2 model
    int4.py       4-bit weight QAT, for an int4 file
    settings.py   its section of the settings (PipelineConfig.qat)
    stage.py      the `qat` pipeline stage
"""

import importlib


def __getattr__(name):
  """`from tfopt.techniques.qat import ...` and `qat.<name>` read algorithm.py,
  imported on first use (so settings.py imports without TensorFlow)."""
  if name.startswith("__") or name in ("algorithm", "settings", "stage"):
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  try:
    return getattr(importlib.import_module(__name__ + ".algorithm"), name)
  except AttributeError:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
