"""The int8 file of a user's model, plain and repaired, side by side.

    python benchmarks/int8_repair.py --model resnet.keras --data_dir digits32 \\
        --out runs/bench_resnet

Runs `tfopt compress --model M --dataset folder --stages teacher` twice, with
--int8_repair off and on (its own output folder each), and prints one
Markdown row per run from report.json: the float32 file's test accuracy, the
int8 file's accuracy and top-1 agreement with the Keras model on the test
split, its bytes and latency, the convert + evaluate seconds, and the recipe
chosen. The table in BUILD_NOTES ("int8 fidelity and repair") comes from it.
"""

import argparse
import json
import os
import platform
import subprocess
import sys


def run(model: str, data_dir: str, out: str, repair: str, extra) -> dict:
  folder = os.path.join(out, f"repair_{repair}")
  command = [sys.executable, "-m", "tfopt.pipeline", "--model", model, "--dataset", "folder",
             "--data_dir", data_dir, "--labels_file", os.path.join(data_dir, "labels.txt"),
             "--stages", "teacher", "--noaugment", "--int8_repair", repair,
             "--output_dir", folder] + list(extra)
  subprocess.run(command, check=True)
  with open(os.path.join(folder, "report.json"), encoding="utf-8") as stream:
    return json.load(stream)


def row(report: dict, repair: str) -> str:
  rows = {row["name"]: row for row in report["models"]}
  floating = rows["baseline float32"]
  name = next(name for name in rows if name.endswith(" int8"))
  int8, record = rows[name], report.get("int8_repair", {}).get(name, {})
  recipe = record.get("chosen", {}).get("choice", {}).get("description", "")
  seconds = report["stages"].get("convert", 0) + report["stages"].get("evaluate", 0)
  return (f"| {repair} | {floating['accuracy']:.2%} | {int8['accuracy']:.2%} "
          f"| {int8['agreement']:.2%} | {int8['tflite_bytes']:,} | {int8['latency_us']:,.0f} "
          f"| {seconds:.1f} | {recipe} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True)
  parser.add_argument("--data_dir", required=True, help="an image folder with labels.txt")
  parser.add_argument("--out", required=True)
  args, extra = parser.parse_known_args()
  reports = {repair: run(args.model, args.data_dir, args.out, repair, extra)
             for repair in ("off", "on")}
  print(f"\n{args.model} on {args.data_dir} ({platform.processor() or platform.machine()})\n")
  print("| --int8_repair | float32 | int8 | int8 agrees with Keras | bytes | µs "
        "| convert + evaluate s | recipe |")
  print("|---|---|---|---|---|---|---|---|")
  for repair, report in reports.items():
    print(row(report, repair))


if __name__ == "__main__":
  main()
