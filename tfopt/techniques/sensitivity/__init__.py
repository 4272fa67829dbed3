"""Per-layer sensitivity: how much each layer can lose, and pruning by it.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `sensitivity` pipeline stage
    on_task.py    the scan on a user's task, by its objective

Its settings are the `analysis` section (tfopt.config).
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
