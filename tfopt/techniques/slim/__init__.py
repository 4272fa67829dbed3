"""Network slimming and filter pruning: remove whole conv channels.

    algorithm.py       the technique, callable on any Keras 2 model
    channels.py        which channels flow where, and their removal
    channel_groups.py  filters that must go together (residual adds, SE)
    settings.py   its section of the settings (PipelineConfig.slim)
    stage.py           the `slim` pipeline stage
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
