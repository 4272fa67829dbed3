"""Low-rank approximation of Dense layers by truncated SVD.

    algorithm.py  the technique, callable on any Keras 2 model
    settings.py   its section of the settings (PipelineConfig.lowrank)
    stage.py      the `lowrank` pipeline stage
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
