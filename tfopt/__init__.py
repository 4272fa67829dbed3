"""tfopt: compress Keras models into small, fast .tflite files, measured.

    report = tfopt.compress(model, train=train_ds, val=val_ds, test=test_ds,
                            loss=..., metrics=[...], stages=["prune"])

compresses any one-input Keras model on the user's own data, loss and
metrics (tfopt.run.task_run); `tfopt compress --dataset ...` runs the full
pipeline on image classifiers. Importing the package is cheap; TensorFlow is
loaded by the submodules that need it.
"""

from tfopt import _moved
from tfopt.core.version import __version__

_moved.install()  # the flat folder's module paths, until 0.3

__all__ = ["compress"]


def compress(model, train, test, **settings):
  """tfopt.run.task_run.compress: see there."""
  from tfopt.run import task_run  # pylint: disable=g-import-not-at-top
  return task_run.compress(model, train, test, **settings)
