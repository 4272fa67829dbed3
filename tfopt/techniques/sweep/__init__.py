"""Pruning without fine-tuning, to see what a model tolerates.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `sweep` pipeline stage

Its settings are the `analysis` section (tfopt.config).
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
