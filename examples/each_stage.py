"""Each tfopt stage called alone from Python, on MNIST.

    python examples/each_stage.py --data_dir ../shared/data [--max_train 5000]

Trains a teacher, distills a student, prunes it, writes an int8 .tflite and
measures it in LiteRT. tests/test_examples.py runs this file on a small slice.
"""

import argparse
import os

from tfopt.config import DataConfig, DistillConfig, PruneConfig, TrainConfig
from tfopt.core.artifacts import gzip_size, write_bytes_atomic
from tfopt.data import load_dataset
from tfopt.keras_io import models
from tfopt.litert import convert, evaluate
from tfopt.techniques.distill import distill
from tfopt.techniques.prune import prune
from tfopt.training import train


def main(data_dir=None, max_train=None, max_test=None, epochs=2,
         batch_size=128, output_dir="runs/example"):
  data = load_dataset(DataConfig("mnist", data_dir, max_train_examples=max_train,
                                 max_test_examples=max_test))

  teacher = models.build_model("teacher", data.input_shape, data.num_classes)
  train.train_classifier(teacher, data, TrainConfig(epochs=epochs, batch_size=batch_size))

  student = models.build_model("student", data.input_shape, data.num_classes)
  distill(teacher, student, data, DistillConfig(epochs=epochs, batch_size=batch_size))

  pruned = prune(student, data, PruneConfig(target_sparsity=0.7, epochs=1,
                                              batch_size=batch_size),
                 teacher=teacher)
  for entry in pruned.layers:
    print(f"{entry.layer}/{entry.weight}: {entry.sparsity:.1%} zeros")

  os.makedirs(output_dir, exist_ok=True)
  path = write_bytes_atomic(os.path.join(output_dir, "student_int8.tflite"),
                            convert.to_tflite(pruned.model, "int8", data.x_train))
  measured = {
      "accuracy": evaluate.accuracy(path, data.x_test, data.y_test),
      "agreement": evaluate.agreement(path, pruned.model, data.x_test),
      "latency_us": evaluate.latency_us(path, data.x_test[0]),
      "tflite_bytes": os.path.getsize(path),
      "gzip_bytes": gzip_size(path),
      "weight_sparsity": evaluate.inspect_tflite(path).weight_sparsity,
  }
  print(measured)
  return measured


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--max_train", type=int, default=None)
  parser.add_argument("--max_test", type=int, default=None)
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--output_dir", default="runs/example")
  arguments = parser.parse_args()
  main(arguments.data_dir, arguments.max_train, arguments.max_test,
       arguments.epochs, arguments.batch_size, arguments.output_dir)
