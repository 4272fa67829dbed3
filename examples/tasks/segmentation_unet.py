"""Segmentation: a small U-Net labels every pixel of a digit canvas, scored
by mean IoU over 11 classes (background and the ten digits).

Each MNIST digit is placed at a random spot of a 48 x 48 canvas; a pixel is
its digit's class where the ink is above half, else background. The U-Net
has two strided stages down, two Conv2DTranspose stages up, and each up
stage concatenates the encoder's map of the same size (the skips).

    python examples/tasks/segmentation_unet.py --train_only --model unet.keras
    tfopt compress --model unet.keras --task examples/tasks/segmentation_unet.py
    python examples/tasks/segmentation_unet.py --out runs/unet     # from Python

MNIST comes from $TFOPT_DATA_DIR or ../shared/data (example_tools.py).
"""

import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import example_tools  # pylint: disable=g-import-not-at-top

SIZE = 48
CLASSES = 11  # 0: background, 1 + d: digit d
BATCH = 64
VALIDATION = 5000


def canvases(images, labels, seed: int):
  """(images N x 48 x 48 x 1 in 0..1, masks N x 48 x 48 of class indices)."""
  rng = np.random.default_rng(seed)
  count = len(images)
  canvas = np.zeros((count, SIZE, SIZE), np.float32)
  masks = np.zeros((count, SIZE, SIZE), np.int64)
  corners = rng.integers(0, SIZE - 28 + 1, size=(count, 2))
  for index, ((row, col), image, label) in enumerate(zip(corners, images, labels)):
    canvas[index, row:row + 28, col:col + 28] = image / 255.0
    masks[index, row:row + 28, col:col + 28] = np.where(image > 127, 1 + label, 0)
  return canvas[..., None], masks


@functools.lru_cache(maxsize=None)
def _splits():
  images, labels = example_tools.digits("train")
  (train_x, train_y), (val_x, val_y) = example_tools.split_off(
      min(VALIDATION, len(images) // 6), images, labels)
  test_x, test_y = example_tools.digits("test")
  return (canvases(train_x, train_y, 0), canvases(val_x, val_y, 1),
          canvases(test_x, test_y, 2))


def _batches(pair, shuffle=False):
  dataset = tf.data.Dataset.from_tensor_slices(pair)
  if shuffle:
    dataset = dataset.shuffle(len(pair[0]), seed=0)
  return dataset.batch(BATCH)


def train():
  return _batches(_splits()[0], shuffle=True)


def val():
  return _batches(_splits()[1])


def test():
  return _batches(_splits()[2])


loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
metrics = [keras.metrics.MeanIoU(num_classes=CLASSES, sparse_y_true=True,
                                 sparse_y_pred=False, name="mean_iou")]


def _convs(x, filters: int):
  for _ in range(2):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
  return x


def build_model(width: int = 16) -> keras.Model:
  """A U-Net: 48 -> 24 -> 12 and back, skips concatenated on the way up."""
  layers = keras.layers
  inputs = keras.Input((SIZE, SIZE, 1), name="canvas")
  skip1 = _convs(inputs, width)
  skip2 = _convs(layers.MaxPooling2D()(skip1), 2 * width)
  bottom = _convs(layers.MaxPooling2D()(skip2), 4 * width)
  x = layers.Conv2DTranspose(2 * width, 2, strides=2)(bottom)
  x = _convs(layers.Concatenate()([x, skip2]), 2 * width)
  x = layers.Conv2DTranspose(width, 2, strides=2)(x)
  x = _convs(layers.Concatenate()([x, skip1]), width)
  outputs = layers.Conv2D(CLASSES, 1, name="mask")(x)
  return keras.Model(inputs, outputs, name="unet")


if __name__ == "__main__":
  example_tools.main(sys.modules[__name__], "segmentation_unet", epochs=6, learning_rate=2e-3)
