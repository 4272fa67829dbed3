"""Search under a budget: the smallest (or fastest) file within an accuracy drop.

    algorithm.py  the technique, callable on any Keras 2 model
    space.py      the search's space: its models, files and measurements
    settings.py   its section of the settings (PipelineConfig.search)
    stage.py      the `search` pipeline stage
    on_task.py    the search on a user's task, judged by its objective
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
