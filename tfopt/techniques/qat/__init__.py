"""Quantization-aware training with tfmot, and its collaborative variants.

    algorithm.py  the technique, callable on any Keras 2 model
    int4.py       4-bit weight QAT, for an int4 file
    stage.py      the `qat` pipeline stage

Its settings are the `qat` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.qat import ...` or `qat.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.qat.algorithm import *
from tfopt.techniques.qat.algorithm import __all__
