"""Per-layer sensitivity: how much each layer can lose, and pruning by it.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `sensitivity` pipeline stage

Its settings are the `analysis` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.sensitivity import ...` or `sensitivity.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.sensitivity.algorithm import *
from tfopt.techniques.sensitivity.algorithm import __all__
