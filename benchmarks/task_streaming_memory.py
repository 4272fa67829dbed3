"""Peak memory: tfopt.compress on a streaming tf.data pipeline of 224-px
images vs. the classifier pipeline on the same image folder.

    python examples/make_image_folder.py --data_dir ../shared/data --out f224 \
        --layout classes --size 224 --train 3000 --val 500 --test 500
    python benchmarks/task_streaming_memory.py --folder f224 --out bench_memory

Both runs compress the same untrained Keras 3 MobileNetV2 (alpha 0.35,
224 x 224 x 3, weights=None: memory, not accuracy, is measured here) with
one epoch of pruning and an int8 file, each in its own process under
/usr/bin/time -v; the summary gives each one's maximum resident set size.
The task run reads the folder with keras.utils.image_dataset_from_directory
(batches decoded as they stream, as the Keras guides load images).
"""

import argparse
import os
import re
import subprocess
import sys

TASK_FILE = '''"""The image folder as a streaming tf.data task (written by the benchmark)."""
import keras

FOLDER = {folder!r}


def _split(name, shuffle):
  return keras.utils.image_dataset_from_directory(
      f"{{FOLDER}}/{{name}}", image_size=(224, 224), batch_size=32, label_mode="int",
      shuffle=shuffle, seed=0)


def train():
  return _split("training", True)


def val():
  return _split("validation", False)


def test():
  return _split("evaluation", False)


loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
metrics = ["accuracy"]
'''


def write_model(path: str):
  import keras  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((224, 224, 3))
  x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
  backbone = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=0.35,
                                            include_top=False, weights=None, pooling="avg")
  outputs = keras.layers.Dense(10)(backbone(x))
  keras.Model(inputs, outputs, name="mnv2_224").save(path)


def peak_rss_kib(command, log: str) -> int:
  """Runs `command` under /usr/bin/time -v; its maximum resident set size."""
  with open(log, "w", encoding="utf-8") as stream:
    done = subprocess.run(["/usr/bin/time", "-v"] + command, stdout=stream,
                          stderr=subprocess.STDOUT, check=False)
  text = open(log, encoding="utf-8").read()
  if done.returncode:
    sys.exit(f"{' '.join(command)} failed (rc {done.returncode}); see {log}")
  return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--folder", required=True, help="an image folder, --layout classes")
  parser.add_argument("--out", default="bench_memory")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  folder = os.path.abspath(args.folder)
  model = os.path.join(args.out, "mnv2_224.keras")
  write_model(model)
  task_file = os.path.join(args.out, "folder_task.py")
  with open(task_file, "w", encoding="utf-8") as stream:
    stream.write(TASK_FILE.format(folder=folder))
  common = ["--model", model, "--prune_epochs", "1", "--quant_modes", "int8"]
  tfopt = [sys.executable, "-m", "tfopt", "compress"]
  folder_kib = peak_rss_kib(tfopt + common + [
      "--dataset", "folder", "--data_dir", folder, "--stages", "teacher,prune",
      "--int8_repair", "off", "--output_dir", os.path.join(args.out, "folder_run")],
      os.path.join(args.out, "folder_run.log"))
  task_kib = peak_rss_kib(tfopt + common + [
      "--task", task_file, "--stages", "prune",
      "--output_dir", os.path.join(args.out, "task_run")], os.path.join(args.out, "task_run.log"))
  summary = (f"peak RSS: folder pipeline {folder_kib / 1024:.0f} MiB, "
             f"tfopt.compress on tf.data {task_kib / 1024:.0f} MiB "
             f"(ratio {task_kib / folder_kib:.2f})")
  print(summary)
  with open(os.path.join(args.out, "summary.txt"), "w", encoding="utf-8") as stream:
    stream.write(summary + "\n")


if __name__ == "__main__":
  main()
