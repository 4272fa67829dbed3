"""Unstructured magnitude pruning with tfmot: apply, fine-tune, strip, verify.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `prune` pipeline stage

Its settings are the `prune` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.prune import ...` or `prune.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.prune.algorithm import *
from tfopt.techniques.prune.algorithm import __all__
