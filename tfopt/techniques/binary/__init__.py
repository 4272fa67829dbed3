"""Binary weights: BinaryConnect and BWN, trained with the straight-through estimator.

    algorithm.py  the technique, callable on any Keras 2 model
    settings.py   its section of the settings (PipelineConfig.binary)
    stage.py      the `binary` pipeline stage
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
