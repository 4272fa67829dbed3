"""Search under a budget: the smallest (or fastest) file within an accuracy drop.

    algorithm.py  the technique, callable on any Keras 2 model
    space.py      the search's space: its models, files and measurements
    stage.py      the `search` pipeline stage

Its settings are the `search` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.search import ...` or `search.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.search.algorithm import *
from tfopt.techniques.search.algorithm import __all__
