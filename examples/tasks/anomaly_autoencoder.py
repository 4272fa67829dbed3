"""Anomaly detection: the MLPerf Tiny dense autoencoder, on MNIST digits.

The autoencoder learns to reconstruct every digit but one (ANOMALY_DIGIT);
an image's anomaly score is its reconstruction error, and the task's score
is the ROC AUC of that error at telling the held-out digit from the rest.

As a task file (the model first, then tfopt on it):

    python examples/tasks/anomaly_autoencoder.py --train_only --model ae.keras
    tfopt compress --model ae.keras --task examples/tasks/anomaly_autoencoder.py

From Python (trains the model, then calls tfopt.compress):

    python examples/tasks/anomaly_autoencoder.py --out runs/anomaly

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

ANOMALY_DIGIT = 9
BATCH = 128
VALIDATION = 5000


@functools.lru_cache(maxsize=None)
def _splits():
  """Flattened digits in 0..1: normal train / val, and the test set with its
  anomaly labels (1 for ANOMALY_DIGIT), in the order test is read."""
  images, labels = example_tools.digits("train")
  normal = images[labels != ANOMALY_DIGIT].reshape(-1, 784).astype("float32") / 255
  count = min(VALIDATION, len(normal) // 6)
  (train,), (val,) = example_tools.split_off(count, normal)
  test_images, test_labels = example_tools.digits("test")
  test = test_images.reshape(-1, 784).astype("float32") / 255
  return train, val, test, (test_labels == ANOMALY_DIGIT).astype(np.int64)


def _pairs(images, shuffle=False):
  """(x, x) batches: the target is the input itself."""
  dataset = tf.data.Dataset.from_tensor_slices(images)
  if shuffle:
    dataset = dataset.shuffle(len(images), seed=0)
  return dataset.batch(BATCH).map(lambda x: (x, x))


def train():
  return _pairs(_splits()[0], shuffle=True)


def val():
  return _pairs(_splits()[1])


def test():
  return _pairs(_splits()[2])


loss = "mse"
metrics = ["mae"]
score_name = "roc_auc"
higher_is_better = True


def score(y_true, y_pred):
  """ROC AUC of the per-image reconstruction error (anomalies should be worse)."""
  error = np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2, axis=1)
  return roc_auc(_splits()[3], error)


def roc_auc(labels, scores) -> float:
  """Area under the ROC curve: the chance a random positive outscores a
  random negative (ties count half), from the ranks (Mann-Whitney U)."""
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores))
  ranks[order] = np.arange(1, len(scores) + 1)
  _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
  sums = np.bincount(inverse, weights=ranks)
  ranks = (sums / counts)[inverse]  # tied scores share their mean rank
  positives = labels == 1
  count_positive, count_negative = positives.sum(), (~positives).sum()
  if not count_positive or not count_negative:
    raise ValueError("ROC AUC needs both anomalies and normal images in the test set.")
  return float((ranks[positives].sum() - count_positive * (count_positive + 1) / 2)
               / (count_positive * count_negative))


def build_model() -> keras.Model:
  """MLPerf Tiny's anomaly-detection autoencoder, on 784 inputs: four dense
  layers of 128, an 8-wide bottleneck, four of 128, the reconstruction."""
  inputs = keras.Input((784,), name="image")
  x = inputs
  for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
    x = keras.layers.Dense(units)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
  outputs = keras.layers.Dense(784, name="reconstruction")(x)
  return keras.Model(inputs, outputs, name="anomaly_autoencoder")


if __name__ == "__main__":
  example_tools.main(sys.modules[__name__], "anomaly_autoencoder", epochs=10, learning_rate=1e-3)
