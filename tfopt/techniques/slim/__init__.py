"""Network slimming and filter pruning: remove whole conv channels.

    algorithm.py       the technique, callable on any Keras 2 model
    channels.py        which channels flow where, and their removal
    channel_groups.py  filters that must go together (residual adds, SE)
    stage.py           the `slim` pipeline stage

Its settings are the `slim` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.slim import ...` or `slim.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.slim.algorithm import *
from tfopt.techniques.slim.algorithm import __all__
