"""Bit-width study: min-max weight quantization to N bits, accuracy for each N.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `bitwidth` pipeline stage

Its settings are the `analysis` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.bitwidth import ...` or `bitwidth.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.bitwidth.algorithm import *
from tfopt.techniques.bitwidth.algorithm import __all__
