"""TensorBoard curves of every training stage, under the run's tensorboard/.

Inside a pipeline stage, train.fit adds `callback(log_dir)` to each epoch's
fit (see tfopt.training.epoch_checkpoints for the folder of each fit): Keras' own
TensorBoard callback, which writes the loss, accuracy and learning rate of
every epoch for the training and validation splits; for a fit that prunes,
tfmot's PruningSummaries, which also writes the sparsity of every pruned
kernel (the ramp) and its threshold. Open them with

    tensorboard --logdir RUN_DIR/tensorboard
"""

from typing import Sequence

from tfopt.core._keras import keras

__all__ = ["DIRECTORY", "callback", "close", "command"]

DIRECTORY = "tensorboard"


def callback(log_dir: str, callbacks: Sequence[keras.callbacks.Callback] = ()):
  """TensorBoard writing epoch curves to log_dir; PruningSummaries when pruning."""
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  options = dict(log_dir=log_dir, histogram_freq=0, write_graph=False,
                 profile_batch=0, update_freq="epoch")
  if any(isinstance(each, tfmot.sparsity.keras.UpdatePruningStep) for each in callbacks):
    return _pruning_summaries(tfmot)(**options)
  return keras.callbacks.TensorBoard(**options)


def _pruning_summaries(tfmot):
  """PruningSummaries that also logs the sparsity an epoch ends with.

  tfmot logs it when an epoch begins; the pipeline fits one epoch per call,
  so without this the last value of the ramp (the target) would be missing.
  """

  class PruningSummaries(tfmot.sparsity.keras.PruningSummaries):

    def on_epoch_end(self, epoch, logs=None):
      super().on_epoch_end(epoch, logs)
      super().on_epoch_begin(epoch + 1, None)  # logs=None: the pruning values only

  return PruningSummaries


def close(summaries: keras.callbacks.TensorBoard):
  """Closes the writer PruningSummaries opens beside Keras' (Keras closes its own)."""
  writer = getattr(summaries, "_file_writer", None)
  if writer is not None:
    writer.close()


def command(output_dir: str) -> str:
  return f"tensorboard --logdir {output_dir}/{DIRECTORY}"
