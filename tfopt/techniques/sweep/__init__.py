"""Pruning without fine-tuning, to see what a model tolerates.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `sweep` pipeline stage

Its settings are the `analysis` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.sweep import ...` or `sweep.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.sweep.algorithm import *
from tfopt.techniques.sweep.algorithm import __all__
