"""Bit-width study: min-max weight quantization to N bits, accuracy for each N.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `bitwidth` pipeline stage

Its settings are the `analysis` section (tfopt.config).
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
