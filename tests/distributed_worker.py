"""A fresh process for the tf.distribute tests: logical CPUs, then tfopt.

    python tests/distributed_worker.py CPUS pipeline [pipeline flags ...]
    python tests/distributed_worker.py CPUS distiller_step

Logical devices must be set before TensorFlow initializes, hence a process
of its own. "pipeline" runs the CLI; "distiller_step" prints the largest
weight difference between one Distiller step on one device and the same
step on CPUS replicas (same global batch).
"""

import json
import sys

import numpy as np
import tensorflow as tf


def split_cpu(count: int):
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def distiller_step(strategy) -> list:
  """Student weights after one SGD step of distillation on a fixed batch."""
  from tfopt.core._keras import keras
  from tfopt.techniques.distill.algorithm import Distiller
  rng = np.random.default_rng(0)
  images = rng.normal(size=(8, 6)).astype(np.float32)
  labels = rng.integers(0, 3, size=8)

  def dense(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.layers.Input((6,)), keras.layers.Dense(5, activation="relu"),
                             keras.layers.Dense(3)])
  with strategy.scope():
    teacher, student = dense(1), dense(2)
    distiller = Distiller(student, teacher, alpha=0.3, temperature=2.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))
  distiller.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
  return student.get_weights()


def main(argv):
  split_cpu(int(argv[1]))
  if argv[2] == "distiller_step":
    single = distiller_step(tf.distribute.get_strategy())
    mirrored = tf.distribute.MirroredStrategy(
        [device.name for device in tf.config.list_logical_devices("CPU")])
    replicated = distiller_step(mirrored)
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "max_difference": max(
        float(np.max(np.abs(a - b))) for a, b in zip(single, replicated))}))
    return 0
  from tfopt.cli import compress as cli  # pylint: disable=g-import-not-at-top
  sys.argv = ["tfopt.pipeline"] + argv[3:]
  cli.run_main()


if __name__ == "__main__":
  sys.exit(main(sys.argv))
