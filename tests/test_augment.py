"""Augmented training of in-memory images (MNIST and the other named data sets):
shifted (and flipped, except digits) each epoch, reproducible from the seeds,
and distilled from a teacher that sees the same augmented batch."""

import dataclasses

import numpy as np
import pytest

from conftest import write_idx_dataset
from tfopt.config import DataConfig, DistillConfig, TrainConfig
from tfopt.core._keras import keras
from tfopt.data import image_files
from tfopt.data.datasets import load_dataset
from tfopt.keras_io import models
from tfopt.techniques.distill import algorithm as distill
from tfopt.training import train


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  write_idx_dataset(root / "mnist", train=200, test=40)
  return load_dataset(DataConfig(data_dir=str(root), augment=True))


def test_mnist_is_shifted_not_flipped_from_a_black_background(digits):
  assert digits.augment and not digits.augment_flip
  assert digits.describe().endswith("training images randomly translated")
  keras.utils.set_random_seed(0)
  images, labels = next(iter(train._augmented_arrays(digits, 64)))  # pylint: disable=protected-access
  images = images.numpy()
  assert images.shape == (64,) + digits.input_shape and len(labels) == 64
  # The batch is a shuffled, shifted copy: no image equals its source, the
  # pixels stay in range, and what the shift uncovered is the background (0).
  sources = {digits.x_train[i].tobytes() for i in range(len(digits.x_train))}
  assert sum(image.tobytes() in sources for image in images) < 8
  assert images.min() >= 0 and images.max() <= 1
  layers = [type(layer).__name__ for layer in image_files.augmenter(
      digits.input_shape, 0, flip=False, fill_value=0.0).layers]
  assert layers == ["RandomTranslation"]


def _trained(dataset, seed):
  keras.utils.set_random_seed(seed)
  model = models.build_model("student", dataset.input_shape, dataset.num_classes)
  train.train_classifier(model, dataset, TrainConfig(epochs=1, batch_size=32), verbose=0)
  return model.get_weights()


def test_augmented_training_follows_the_seeds(digits):
  first, again, other = _trained(digits, 3), _trained(digits, 3), _trained(digits, 4)
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  plain = _trained(dataclasses.replace(digits, augment=False), 3)
  assert not all(np.array_equal(a, b) for a, b in zip(first, plain))
  assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_distillation_runs_the_teacher_on_the_augmented_batch(digits, trained_teacher):
  teacher = distill.Teacher(trained_teacher).with_train_logits(digits)
  assert teacher.train_logits is None and teacher.targets(digits) is digits.y_train
  seen = []
  original_call = trained_teacher.call

  def watched(inputs, *args, **kwargs):
    seen.append(inputs.shape[0])
    return original_call(inputs, *args, **kwargs)

  keras.utils.set_random_seed(0)
  student = models.build_model("student", digits.input_shape, digits.num_classes)
  trained_teacher.call = watched
  try:
    distill.distill(teacher, student, digits, DistillConfig(epochs=1, batch_size=32), verbose=0)
  finally:
    del trained_teacher.call
  assert seen  # traced on the training batches: no cached logits were read
