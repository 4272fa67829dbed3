"""The user's task: any Keras model with its own data, loss and metrics.

    definition   Task and make_task: data (train / val / test), loss, metrics
    file         --task task.py files
    model        reading the user's model (Keras 2 or 3)
    measure      one .tflite measured on the task: metrics, per-output fidelity
    objective    the score a search or sensitivity ranks by
    report       TaskReport, the rows `tfopt.compress` returns

Each technique's task stage is its stage.py's `on_task`
(tfopt/techniques/<name>/stage.py, a tfopt.stages.base.TaskStage); distill,
sensitivity and search have their task side in on_task.py beside it. The run
itself is tfopt.run.task_run (`tfopt.compress`).
`from tfopt.task import make_task` reads from tfopt.task.definition.
"""

# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.task.definition import *
from tfopt.task.definition import __all__
