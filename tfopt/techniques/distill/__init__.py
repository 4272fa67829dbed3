"""Knowledge distillation (Hinton et al. 2015): a student learns from a teacher.

    algorithm.py  the technique, callable on any Keras 2 model
    stage.py      the `distill` pipeline stage
    on_task.py    distillation on a user's task: a student per output (its on_task)

Its settings are the `distill` section, in tfopt.config.pipeline_config beside
the teacher's: every built-in run makes its student with it.
"""

from tfopt.techniques import lazy_algorithm

__getattr__ = lazy_algorithm(__name__)
