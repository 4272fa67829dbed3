"""Binary weights: BinaryConnect and BWN, trained with the straight-through estimator.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `binary` pipeline stage

Its settings are the `binary` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.binary import ...` or `binary.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.binary.algorithm import *
from tfopt.techniques.binary.algorithm import __all__
