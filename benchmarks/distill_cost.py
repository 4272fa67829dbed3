"""What one distillation epoch costs against a plain epoch of the same student.

    python benchmarks/distill_cost.py --data_dir ../shared/data [--examples 20000]

In one process, on the same images: a teacher trained for one epoch, then one
epoch each of (a) the student from its labels, (b) the student distilled with
the teacher run on every batch, (c) the student distilled from the teacher's
logits computed once (tfopt's default for data that is not augmented; the
one-time logits pass is timed separately). Prints CPU time (process) and wall
time for each, and the ratios against (a). Issue 15's target: (c) <= 1.2x (a)
in CPU time.
"""

import argparse
import time

from tfopt.config import DataConfig, DistillConfig, TrainConfig
from tfopt.core._keras import keras
from tfopt.data.datasets import load_dataset
from tfopt.keras_io import models
from tfopt.techniques.distill.algorithm import Teacher, distill
from tfopt.training import train


def timed(work):
  cpu, wall = time.process_time(), time.perf_counter()
  work()
  return time.process_time() - cpu, time.perf_counter() - wall


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--examples", type=int, default=20000)
  args = parser.parse_args()
  data = load_dataset(DataConfig(dataset="mnist", data_dir=args.data_dir,
                                 max_train_examples=args.examples))
  keras.utils.set_random_seed(0)
  teacher = models.build_model("teacher", data.input_shape, data.num_classes)
  train.train_classifier(teacher, data, TrainConfig(epochs=1), verbose=0)
  one_epoch = DistillConfig(epochs=1)

  def student():
    keras.utils.set_random_seed(1)
    return models.build_model("student", data.input_shape, data.num_classes)

  for warm_up in (True, False):  # the first round traces and warms the caches
    results = {}
    results["plain"] = timed(lambda: train.train_classifier(
        student(), data, TrainConfig("student", epochs=1), verbose=0))
    results["distill, teacher every step"] = timed(lambda: distill(
        Teacher(teacher), student(), data, one_epoch, verbose=0))
    cached = {}
    results["teacher logits, once"] = timed(lambda: cached.update(
        teacher=Teacher(teacher).with_train_logits(data)))
    results["distill, cached logits"] = timed(lambda: distill(
        cached["teacher"], student(), data, one_epoch, verbose=0))
    if warm_up:
      continue
    plain_cpu, plain_wall = results["plain"]
    print(f"{len(data.x_train):,} training images, batch {one_epoch.batch_size}")
    print(f"{'epoch':<30} {'CPU s':>7} {'wall s':>7} {'CPU ratio':>10} {'wall ratio':>11}")
    for name, (cpu, wall) in results.items():
      print(f"{name:<30} {cpu:7.1f} {wall:7.1f} {cpu / plain_cpu:9.2f}x {wall / plain_wall:10.2f}x")


if __name__ == "__main__":
  main()
