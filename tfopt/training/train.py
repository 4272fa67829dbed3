"""Plain supervised training, shared by the teacher and the scratch control."""

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from tfopt.config import TrainConfig
from tfopt.core import progress
from tfopt.core._keras import keras
from tfopt.data.datasets import Dataset
from tfopt.data.image_files import augmenter, is_image_files, reading_errors
from tfopt.keras_io.predict import predict_top1
from tfopt.training import epoch_checkpoints, tensorboard_logs

__all__ = ["FitContext", "make_optimizer", "classifier_loss", "train_classifier", "fit",
           "accuracy"]


@dataclasses.dataclass(frozen=True)
class FitContext:
  """What the fits of one pipeline stage report to, passed down to them as
  `fits=` (no module state): the stage's epoch checkpoints (each fit goes one
  epoch at a time, saved, and resumes from its last epoch; see
  tfopt.training.epoch_checkpoints) and the run's clock (each epoch's seconds, for
  the estimate of the training left; see tfopt.core.progress)."""
  checkpoints: epoch_checkpoints.StageCheckpoints
  clock: Optional[progress.Progress] = None


def make_optimizer(learning_rate: float, epochs: int, num_examples: int,
                   batch_size: int) -> keras.optimizers.Optimizer:
  """Adam whose learning rate decays to zero along a cosine over the run."""
  total_steps = epochs * math.ceil(num_examples / batch_size)
  schedule = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
  return keras.optimizers.Adam(schedule)


def classifier_loss() -> keras.losses.Loss:
  """Cross-entropy on logits with integer labels."""
  return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_classifier(model: keras.Model, dataset: Dataset, config: TrainConfig,
                     verbose: int = 2,
                     fits: Optional[FitContext] = None) -> keras.callbacks.History:
  """Compiles `model` and fits it on the dataset's training split.

  Args:
    model: a Keras 2 model that outputs logits; it is trained in place.
    dataset: training and validation data.
    config: epochs, batch size, learning rate.
    verbose: Keras fit verbosity (2: one line per epoch).

  Returns:
    The Keras History of the fit.
  """
  model.compile(
      optimizer=make_optimizer(config.learning_rate, config.epochs,
                               len(dataset.x_train), config.batch_size),
      loss=classifier_loss(), metrics=["accuracy"])
  return fit(model, dataset, config.epochs, config.batch_size, verbose=verbose, fits=fits)


def fit(trainer: keras.Model, dataset: Dataset, epochs: int, batch_size: int,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose: int = 2, targets=None,
        fits: Optional[FitContext] = None) -> keras.callbacks.History:
  """trainer.fit on the training split, validated on the validation split.

  Arrays are fed as they are. Image files stream through tf.data: shuffled
  each epoch, decoded in parallel, augmented when dataset.augment; an image
  that cannot be decoded stops the fit with an ImageFolderError naming it.
  `targets`: what the trainer fits on per training image, if not the labels
  (a Distiller: (labels, the teacher's cached logits)).
  With `fits` (inside a pipeline stage), the fit goes one epoch at a time,
  checkpointed, resumes from the last epoch saved, and tells the run's clock
  each epoch's time; without, it is one plain Keras fit.
  """
  if targets is not None:
    dataset = dataclasses.replace(dataset, y_train=targets)
  if fits is None:
    return _fit(trainer, dataset, epochs, 0, batch_size, callbacks, verbose)
  return _fit_by_epoch(trainer, dataset, epochs, batch_size, callbacks, verbose,
                       fits.checkpoints.next_fit(), fits.clock)


def _fit(trainer, dataset, epochs, initial_epoch, batch_size, callbacks, verbose):
  if not is_image_files(dataset.x_train):
    if dataset.augment:
      return trainer.fit(_augmented_arrays(dataset, batch_size), epochs=epochs,
                         initial_epoch=initial_epoch,
                         validation_data=(dataset.x_val, dataset.y_val),
                         validation_batch_size=batch_size,
                         callbacks=list(callbacks), verbose=verbose)
    return trainer.fit(dataset.x_train, dataset.y_train, batch_size=batch_size,
                       epochs=epochs, initial_epoch=initial_epoch,
                       validation_data=(dataset.x_val, dataset.y_val),
                       callbacks=list(callbacks), verbose=verbose)
  train = dataset.x_train.tf_dataset(batch_size, dataset.y_train, shuffle=True,
                                     augment=dataset.augment)
  validation = dataset.x_val.tf_dataset(batch_size, dataset.y_val)
  with reading_errors():
    return trainer.fit(train, epochs=epochs, initial_epoch=initial_epoch,
                       validation_data=validation, callbacks=list(callbacks),
                       verbose=verbose)


def _augmented_arrays(dataset: Dataset, batch_size: int):
  """In-memory training images as shuffled, augmented tf.data batches (the
  shuffle and the augmentation follow the global seeds)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  digits = not dataset.augment_flip  # shifted in from a black background
  augment = augmenter(dataset.input_shape, np.random.randint(2 ** 30),
                      flip=dataset.augment_flip,
                      fill_value=dataset.input_range[0] if digits else None)
  batches = tf.data.Dataset.from_tensor_slices((dataset.x_train, dataset.y_train)).shuffle(
      len(dataset.x_train), seed=np.random.randint(2 ** 30)).batch(batch_size)
  return batches.map(lambda images, targets: (augment(images, training=True), targets)
                     ).prefetch(2)


def _fit_by_epoch(trainer, dataset, epochs, batch_size, callbacks, verbose,  # pylint: disable=too-many-arguments
                  checkpoints: epoch_checkpoints.FitCheckpoints,
                  clock: Optional[progress.Progress]):
  """`epochs` fits of one epoch, each from its own seed, each checkpointed."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  trained = getattr(trainer, "trained_model", trainer)  # a Distiller's student
  trainer.optimizer.build(trained.trainable_variables)  # its slots exist to restore
  checkpoint = tf.train.Checkpoint(model=trained, optimizer=trainer.optimizer)
  start = checkpoints.last_epoch()
  if start and not checkpoints.restore(checkpoint, start):
    start = 0
  if start:
    checkpoints.stage.log(
        f"resume: {checkpoints.stage.stage}: fit {checkpoints.number} " + (
            f"goes on after epoch {start} of {epochs}" if start < epochs else
            "restored (it had finished)") + " from its checkpoint")
  history: Optional[keras.callbacks.History] = None
  for epoch in range(start, epochs):
    keras.utils.set_random_seed(checkpoints.epoch_seed(epoch))
    trainer.train_function = None  # retraced: its random ops follow the epoch's seed
    summaries = tensorboard_logs.callback(checkpoints.tensorboard_dir, callbacks)
    watched = [summaries, progress.epoch_log(checkpoints.stage.stage, clock), _StopAfterOneEpoch()]
    one = _fit(trainer, dataset, epochs, epoch, batch_size, list(callbacks) + watched,
               progress.keras_verbose() if verbose else 0)
    tensorboard_logs.close(summaries)
    checkpoints.record_tensorboard_files()
    history = one if history is None else _appended(history, one)
    checkpoints.save(checkpoint, epoch + 1)
  # What follows is the same whether this fit ran or was restored.
  keras.utils.set_random_seed(checkpoints.epoch_seed(epochs))
  return history or keras.callbacks.History()


class _StopAfterOneEpoch(keras.callbacks.Callback):

  def on_epoch_end(self, epoch, logs=None):
    self.model.stop_training = True


def _appended(history, more):
  for name, values in more.history.items():
    history.history.setdefault(name, []).extend(values)
  history.epoch.extend(more.epoch)
  return history


def accuracy(model: keras.Model, images, labels: np.ndarray,
             batch_size: int = 1000) -> float:
  """Top-1 accuracy of a Keras model that outputs logits."""
  return float(np.mean(predict_top1(model, images, batch_size) == labels))
