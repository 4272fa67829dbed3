"""Low-rank approximation of Dense layers by truncated SVD.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `lowrank` pipeline stage

Its settings are the `lowrank` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.lowrank import ...` or `lowrank.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.lowrank.algorithm import *
from tfopt.techniques.lowrank.algorithm import __all__
