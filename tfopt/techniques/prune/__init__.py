"""Unstructured magnitude pruning with tfmot: apply, fine-tune, strip, verify.

    algorithm.py  the technique, callable on any Keras 2 model
    settings.py   its section of the settings (PipelineConfig.prune)
    stage.py      the `prune` pipeline stage
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
