"""Shared fixtures: small synthetic data, tiny trained models, real MNIST."""

import gzip
import os
import pathlib
import struct

import numpy as np
import pytest

from tfopt.data.datasets import Dataset

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def synthetic_images(count, seed=0, num_classes=10, size=28):
  """Noise with one of `num_classes` fixed 10x10 binary glyphs near the centre.

  Like a tiny MNIST: the class is a local shape, shifted by up to 2 pixels.
  """
  glyphs = np.random.default_rng(1234).random((num_classes, 10, 10)) < 0.5
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, size=count).astype(np.int32)
  images = rng.uniform(0, 0.3, size=(count, size, size, 1)).astype(np.float32)
  corner = size // 2 - 5
  for index, label in enumerate(labels):
    row, col = corner + rng.integers(-2, 3, size=2)
    patch = images[index, row:row + 10, col:col + 10, 0]
    patch[glyphs[label]] = 1.0
  return images, labels


def synthetic_dataset(train=600, val=100, test=200, seed=0):
  x_train, y_train = synthetic_images(train, seed)
  x_val, y_val = synthetic_images(val, seed + 1)
  x_test, y_test = synthetic_images(test, seed + 2)
  return Dataset("synthetic", x_train, y_train, x_val, y_val, x_test, y_test,
                 [str(index) for index in range(10)], "synthetic")


def write_idx(path, array):
  """Writes an unsigned-byte IDX file (gzipped when path ends in .gz)."""
  array = np.asarray(array, dtype=np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I",
                                                         *array.shape)
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as stream:
    stream.write(header + array.tobytes())


def write_idx_dataset(directory, train=120, test=40, seed=0):
  """The four MNIST-named IDX .gz files of a small synthetic data set."""
  os.makedirs(directory, exist_ok=True)
  for split, count in (("train", train), ("t10k", test)):
    images, labels = synthetic_images(count, seed)
    write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"),
              (images[..., 0] * 255).round())
    write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"), labels)
  return directory


@pytest.fixture(scope="session")
def dataset():
  return synthetic_dataset()


@pytest.fixture(scope="session")
def mnist_dir():
  """The directory holding mnist/ (TFOPT_DATA_DIR, else ../shared/data)."""
  candidates = [os.environ.get("TFOPT_DATA_DIR"), REPO_ROOT.parent / "shared" / "data"]
  for candidate in candidates:
    if candidate and (pathlib.Path(candidate) / "mnist").is_dir():
      return str(candidate)
  pytest.skip("real MNIST not found: set TFOPT_DATA_DIR to the directory "
              "holding mnist/")


@pytest.fixture(scope="session")
def trained_teacher(dataset):
  """A 'teacher' model trained for two epochs on the synthetic data."""
  from tfopt.keras_io import models  # pylint: disable=g-import-not-at-top
  from tfopt.training import train
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  from tfopt.config import TrainConfig  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(1)
  model = models.build_model("student", dataset.input_shape, 10)
  train.train_classifier(model, dataset, TrainConfig("student", epochs=3,
                                                     batch_size=32), verbose=0)
  return model


def keras3_cnn(input_shape=(28, 28, 1), classes=10, activation=None, name="users_cnn"):
  """A user's Keras 3 model: Rescaling, Conv/BN/ReLU, pooling, Dropout, Dense."""
  import keras as keras3  # pylint: disable=g-import-not-at-top
  inputs = keras3.Input(input_shape)
  x = keras3.layers.Rescaling(1 / 255.0)(inputs)
  x = keras3.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
  x = keras3.layers.BatchNormalization()(x)
  x = keras3.layers.ReLU()(x)
  x = keras3.layers.MaxPooling2D()(x)
  x = keras3.layers.Flatten()(x)
  x = keras3.layers.Dropout(0.2)(x)
  outputs = keras3.layers.Dense(classes, activation=activation)(x)
  return keras3.Model(inputs, outputs, name=name)
