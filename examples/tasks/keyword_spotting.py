"""Keyword-spotting shape: a DS-CNN on 49 x 10 feature maps, scored by accuracy.

MLPerf Tiny's keyword spotter reads 49 frames x 10 MFCCs of one second of
audio. Here each MNIST digit is resized to 49 x 10, a 2-D feature map of
the same shape, so the example needs no download; the model is the
benchmark's DS-CNN (a strided 10x4 conv, four depthwise-separable blocks,
average pooling, a softmax over 10 "keywords").

    python examples/tasks/keyword_spotting.py --train_only --model kws.keras
    tfopt compress --model kws.keras --task examples/tasks/keyword_spotting.py
    python examples/tasks/keyword_spotting.py --out runs/kws     # from Python

MNIST comes from $TFOPT_DATA_DIR or ../shared/data (example_tools.py).
"""

import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import example_tools  # pylint: disable=g-import-not-at-top

FRAMES, COEFFICIENTS = 49, 10
BATCH = 100
VALIDATION = 5000


@functools.lru_cache(maxsize=None)
def _splits():
  """(features, labels) of train / val / test: digits as 49 x 10 maps in 0..1."""
  images, labels = example_tools.digits("train")
  (train_x, train_y), (val_x, val_y) = example_tools.split_off(
      min(VALIDATION, len(images) // 6), images, labels)
  test_x, test_y = example_tools.digits("test")
  return (train_x, train_y), (val_x, val_y), (test_x, test_y)


def _features(images, labels, shuffle=False):
  """Batches of (49 x 10 x 1 feature maps, labels), resized as they stream."""
  dataset = tf.data.Dataset.from_tensor_slices((images, labels))
  if shuffle:
    dataset = dataset.shuffle(len(images), seed=0)

  def resized(image, label):
    image = tf.image.resize(tf.cast(image[..., None], tf.float32) / 255.0,
                            (FRAMES, COEFFICIENTS), antialias=True)
    return image, label
  return dataset.map(resized, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH)


def train():
  return _features(*_splits()[0], shuffle=True)


def val():
  return _features(*_splits()[1])


def test():
  return _features(*_splits()[2])


loss = "sparse_categorical_crossentropy"
metrics = ["accuracy"]


def build_model(filters: int = 64) -> keras.Model:
  """MLPerf Tiny's DS-CNN (small)."""
  layers = keras.layers
  inputs = keras.Input((FRAMES, COEFFICIENTS, 1), name="features")
  x = layers.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", use_bias=False)(inputs)
  x = layers.ReLU()(layers.BatchNormalization()(x))
  for _ in range(4):
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Conv2D(filters, 1, use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
  x = layers.Dropout(0.2)(layers.GlobalAveragePooling2D()(x))
  outputs = layers.Dense(10, activation="softmax", name="keyword")(x)
  return keras.Model(inputs, outputs, name="ds_cnn")


if __name__ == "__main__":
  example_tools.main(sys.modules[__name__], "keyword_spotting", epochs=8, learning_rate=3e-3)
