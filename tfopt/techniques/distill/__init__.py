"""Knowledge distillation (Hinton et al. 2015): a student learns from a teacher.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `distill` pipeline stage

Its settings are the `distill` section (tfopt.config).
"""

# The technique itself, as `from tfopt.techniques.distill import ...` or `distill.<name>`.
# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.techniques.distill.algorithm import *
from tfopt.techniques.distill.algorithm import __all__
