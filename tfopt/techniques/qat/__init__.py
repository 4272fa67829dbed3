"""Quantization-aware training with tfmot, and its collaborative variants.

    algorithm.py  the technique, callable on any Keras 2 model
    int4.py       4-bit weight QAT, for an int4 file
    settings.py   its section of the settings (PipelineConfig.qat)
    stage.py      the `qat` pipeline stage
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
