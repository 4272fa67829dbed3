"""The four task examples, trained and compressed at full size, summarized.

    python benchmarks/task_examples.py --out bench_tasks [--examples detection_yolo,...]

Each example (examples/tasks/) trains its model on MNIST-made data, then
tfopt.compress prunes it and measures every .tflite in LiteRT on its test
set. The summary (bench_tasks/summary.md) puts each model's int8 baseline
beside its slimmed and pruned int8 files: bytes, gzip bytes, latency, the
task's metric, and the lowest cosine similarity of any output to its Keras
model.
"""

import argparse
import importlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples", "tasks"))

# example: (training epochs, learning rate, fine-tuning epochs of each slim
# step and of prune, the headline metric: a metric key or "score", stage
# settings over the example's). The U-Net's slimmed model relearns which
# digit each pixel is for about as long as the model first took to: three
# epochs a step at the training rate, distilled (one epoch a step collapsed
# it to background; see BUILD_NOTES).
EXAMPLES = {
    "detection_yolo": (10, 2e-3, 3, "score",
                       {"slim": {"learning_rate": 2e-3, "use_teacher": True}}),
    "segmentation_unet": (5, 2e-3, 3, "mean_iou",
                          {"slim": {"learning_rate": 2e-3, "use_teacher": True}}),
    "anomaly_autoencoder": (10, 1e-3, 2, "score", {}),
    "keyword_spotting": (8, 3e-3, 2, "accuracy", {}),
}


def run(name: str, out: str, stages: str, train_epochs=None, reuse=False) -> dict:
  example = importlib.import_module(name)
  import example_tools  # pylint: disable=g-import-not-at-top
  epochs, learning_rate, finetune_epochs, headline, settings = EXAMPLES[name]
  epochs = train_epochs or epochs
  started = time.perf_counter()
  report = example_tools.main(example, name, epochs, learning_rate, [
      "--model", os.path.join(out, f"{name}.keras"), "--out", os.path.join(out, name),
      "--stages", stages, "--finetune_epochs", str(finetune_epochs),
      "--settings", json.dumps(settings)] + ["--reuse"] * reuse)
  seconds = time.perf_counter() - started
  rows = [row for row in report.rows if row.name.endswith((" Keras", " int8"))]
  return {"example": name, "seconds": seconds, "headline": headline,
          "rows": {row.name: _summary(row, headline) for row in rows}}


def _summary(row, headline: str) -> dict:
  value = row.score if headline == "score" else row.metrics[headline]
  return {"value": value, "bytes": row.tflite_bytes, "gzip": row.gzip_bytes,
          "latency_us": row.latency_us,
          "min_cosine": min((item.cosine for item in row.fidelity), default=None)}


def markdown(results) -> str:
  lines = ["| example | metric | row | value | bytes | gzip | latency (us) | min cosine |",
           "|---|---|---|---|---|---|---|---|"]
  for result in results:
    for key, row in result["rows"].items():
      lines.append(f"| {result['example']} | {result['headline']} | {key} | {row['value']:.4f} "
                   f"| {row['bytes'] or '-'} | {row['gzip'] or '-'} | "
                   f"{'-' if row['latency_us'] is None else round(row['latency_us'])} | "
                   f"{row['min_cosine'] or '-'} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="bench_tasks")
  parser.add_argument("--examples", default=",".join(EXAMPLES))
  parser.add_argument("--stages", default="slim,prune")
  parser.add_argument("--train_epochs", type=int, help="instead of each example's own")
  parser.add_argument("--reuse", action="store_true",
                      help="compress the models already in --out instead of training them")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  results = []
  for name in args.examples.split(","):
    results.append(run(name, args.out, args.stages, args.train_epochs, args.reuse))
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as stream:
      json.dump(results, stream, indent=2)
    with open(os.path.join(args.out, "summary.md"), "w", encoding="utf-8") as stream:
      stream.write(markdown(results))
  print(markdown(results))


if __name__ == "__main__":
  main()
