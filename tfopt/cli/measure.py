"""Measure one .tflite file (or deploy bundle) on a data set's test split.

    python -m tfopt.cli.measure runs/mnist/student_pruned_int8.tflite --dataset mnist
    python -m tfopt.cli.measure runs/mnist/deploy --data_dir ../shared/data

Prints the file's size, gzip size, input type, top-1 accuracy in LiteRT and
batch-1 latency, the same measurements as the pipeline's report. Needs no
TensorFlow unless the data set must be downloaded.

    python -m tfopt.cli.measure model_int8.tflite --float_file model_float.tflite ...

also diagnoses a quantized file made anywhere (tfopt.litert.int8_fidelity): its
top-1 agreement and output SNR against the float file it was converted from,
and the ops along the graph where it parts from it, on the test images.
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import List, Optional, Tuple

from tfopt.config import DATASETS, DataConfig
from tfopt.core.errors import OneLineArgumentParser, TfoptError
from tfopt.data.datasets import load_dataset
from tfopt.litert import evaluate, int8_fidelity

__all__ = ["measure_file", "diagnose_file", "fidelity_text", "main"]


def _bundle_file(path: str) -> Tuple[str, Optional[Tuple[float, float]]]:
  """A deploy bundle's .tflite and input range; a file path as it is."""
  spec_path = os.path.join(path, "model.json")
  if not os.path.isdir(path):
    return path, None
  if not os.path.isfile(spec_path):
    raise evaluate.TFLiteError(f"{path} is a directory without model.json; give a "
                               ".tflite file or a tfopt deploy/ bundle.")
  try:
    with open(spec_path, encoding="utf-8") as stream:
      spec = json.load(stream)
    scale, low = spec["preprocessing"]["pixel_scale"], spec["preprocessing"]["pixel_offset"]
    return os.path.join(path, spec["model"]), (low, low + 255 * scale)
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise evaluate.TFLiteError(f"{spec_path} is not a tfopt bundle description "
                               f"({error}); write the bundle again with "
                               "python -m tfopt.pipeline.") from error


def measure_file(path: str, data: DataConfig, num_threads: int = 1,
                 latency_runs: int = 50, float_file: Optional[str] = None,
                 diagnosis_images: int = 32) -> dict:
  """Size, gzip size, input dtype, accuracy and latency of one .tflite file;
  with `float_file`, its fidelity to that file (see diagnose_file)."""
  path, bundle_range = _bundle_file(path)
  if data.input_range is None and bundle_range is not None:
    data = dataclasses.replace(data, input_range=bundle_range)
  classifier = evaluate.TFLiteClassifier(path, num_threads)  # checks the file first
  dataset = load_dataset(data)
  fidelity = (diagnose_file(path, float_file, dataset.x_test, diagnosis_images)
              if float_file else None)
  measured = evaluate.measure_file(path, dataset.x_test[0], dataset.x_test, dataset.y_test,
                                   num_threads, warmup=max(1, latency_runs // 10),
                                   runs=latency_runs)
  return dict(fidelity=fidelity,
      file=path, tflite_bytes=measured.tflite_bytes, gzip_bytes=measured.gzip_bytes,
      input_dtype=str(classifier.input_dtype.__name__), accuracy=measured.accuracy,
      test_examples=len(dataset.x_test), dataset=dataset.name,
      latency_us=measured.latency_us)


def diagnose_file(path: str, float_file: str, images, diagnosis_images: int = 32) -> dict:
  """Agreement and output SNR of `path` against `float_file` on `images`, and
  the ops along the graph that add the most noise (on the first
  `diagnosis_images`)."""
  if not os.path.isfile(float_file):
    raise evaluate.TFLiteError(f"--float_file {float_file} does not exist; give the "
                               "float32 .tflite the quantized file was made from.")
  with open(path, "rb") as stream:
    quantized = stream.read()
  with open(float_file, "rb") as stream:
    reference = stream.read()
  expected = int8_fidelity.FileRunner(reference).predict(images)
  got = int8_fidelity.FileRunner(quantized).predict(images)
  ops = int8_fidelity.op_fidelity(reference, quantized, images[:diagnosis_images])
  worst = int8_fidelity.worst_first(ops)
  return dict(agreement=int8_fidelity.output_agreement(expected, got),
              output_snr_db=int8_fidelity.output_snr_db(expected, got),
              worst_ops=[dataclasses.asdict(op) for op in worst[:8]])


def _parser(prog: str = "python -m tfopt.cli.measure") -> argparse.ArgumentParser:
  parser = OneLineArgumentParser(prog=prog, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("model", help="a .tflite file, or a deploy/ bundle directory")
  parser.add_argument("--dataset", default="mnist", choices=DATASETS)
  parser.add_argument("--data_dir", help="the data set's directory (default "
                      "$TFOPT_DATA_DIR, then download)")
  parser.add_argument("--labels_file", help="image folders: class names in order")
  parser.add_argument("--input_range", help="LOW,HIGH the model takes for pixels "
                      "0 and 255 (default: the bundle's, else 0,1)")
  parser.add_argument("--max_test_examples", type=int)
  parser.add_argument("--num_threads", type=int, default=1)
  parser.add_argument("--latency_runs", type=int, default=50)
  parser.add_argument("--float_file", help="the float32 .tflite this file was quantized "
                      "from: also diagnose where the file parts from it")
  return parser


def _input_range(text: Optional[str]) -> Optional[Tuple[float, ...]]:
  if text is None:
    return None
  try:
    return tuple(float(value) for value in text.split(","))
  except ValueError as error:
    raise TfoptError(f"--input_range={text} is invalid: give LOW,HIGH, e.g. "
                     "0,1 or -1,1.") from error


def main(argv: Optional[List[str]] = None, prog: str = "python -m tfopt.cli.measure") -> int:
  args = _parser(prog).parse_args(argv)
  try:
    if args.num_threads < 1 or args.latency_runs < 1:
      raise TfoptError("--num_threads and --latency_runs must be integers >= 1.")
    data = DataConfig(dataset=args.dataset, data_dir=args.data_dir,
                      labels_file=args.labels_file,
                      input_range=_input_range(args.input_range),
                      max_test_examples=args.max_test_examples)
    measured = measure_file(args.model, data, args.num_threads, args.latency_runs,
                            args.float_file)
  except TfoptError as error:
    print(f"tfopt: error: {error}", file=sys.stderr)
    return 2
  print(f"{measured['file']}: {measured['tflite_bytes']:,} B "
        f"({measured['gzip_bytes']:,} B gzip), {measured['input_dtype']} input, "
        f"accuracy {measured['accuracy']:.2%} on {measured['test_examples']} "
        f"{measured['dataset']} test images, {measured['latency_us']:,.0f} µs "
        f"(batch 1, {args.num_threads} thread(s))")
  if measured["fidelity"]:
    print(fidelity_text(measured["fidelity"]))
  return 0


def fidelity_text(fidelity: dict) -> str:
  lines = [f"against the float file: top-1 agreement {fidelity['agreement']:.2%}, output "
           f"SNR {fidelity['output_snr_db']:.1f} dB; the ops that add the most noise "
           "(SNR along the graph, dB lost by the op itself):"]
  lines += [f"  {op['layer']:<32} {op['op']:<20} SNR {op['snr_db']:6.1f} dB  "
            f"lost {op['drop_db']:5.1f} dB" for op in fidelity["worst_ops"]]
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
