"""Strided downsampling: a 2 x 2 pool folded into a stride-2 convolution.

    algorithm.py  the technique, callable on any Keras 2 model
    settings.py   its section of the settings (PipelineConfig.strided)
    stage.py      the `strided` pipeline stage
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
