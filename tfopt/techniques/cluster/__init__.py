"""Weight sharing (Deep Compression's k-means quantization) with tfmot.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `cluster` pipeline stage

Its settings are the `cluster` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.cluster import ...` or `cluster.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.cluster.algorithm import *
from tfopt.techniques.cluster.algorithm import __all__
