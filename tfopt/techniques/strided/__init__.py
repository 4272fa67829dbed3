"""Strided downsampling: a 2 x 2 pool folded into a stride-2 convolution.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `strided` pipeline stage

Its settings are the `strided` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.strided import ...` or `strided.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.strided.algorithm import *
from tfopt.techniques.strided.algorithm import __all__
