"""Weight sharing (Deep Compression's k-means quantization) with tfmot.

    algorithm.py  the technique, callable on any Keras 2 model
    settings.py   its section of the settings (PipelineConfig.cluster)
    stage.py      the `cluster` pipeline stage
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
