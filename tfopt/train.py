"""Plain supervised training, shared by the teacher and the scratch control."""

import math

import numpy as np

from tfopt._keras import keras
from tfopt.config import TrainConfig
from tfopt.data import Dataset

__all__ = ["make_optimizer", "classifier_loss", "train_classifier", "accuracy"]


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
                     verbose: int = 2) -> keras.callbacks.History:
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
  return model.fit(dataset.x_train, dataset.y_train,
                   batch_size=config.batch_size, epochs=config.epochs,
                   validation_data=(dataset.x_val, dataset.y_val),
                   verbose=verbose)


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 1000) -> float:
  """Top-1 accuracy of a Keras model that outputs logits."""
  logits = model.predict(images, batch_size=batch_size, verbose=0)
  return float(np.mean(np.argmax(logits, axis=-1) == labels))
