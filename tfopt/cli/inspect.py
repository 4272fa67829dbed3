"""`tfopt inspect FILE.tflite`: what a .tflite file holds, read back from it.

    tfopt inspect runs/mnist/student_pruned_int8.tflite
    tfopt inspect model.tflite --json
    tfopt inspect model_int8.tflite --float_file model_float.tflite [--images x.npy]

Input and output types, op counts, and for every conv / fully-connected
weight tensor its dtype, quantization (per tensor or per channel), sparsity
(zeros: stored values equal to the zero-point) and distinct values (in the
whole tensor and in the fullest output channel, the unit weight sharing
keeps). The same numbers the report's tables are made of
(tfopt.litert.evaluate.inspect_tflite).

With --float_file (the float32 file the quantized one was made from), also
where the quantized file parts from it along the graph (tfopt.litert.int8_fidelity):
top-1 agreement, output SNR and the ops that add the most noise. On the
inputs in --images (a .npy of inputs as the model takes them), or, without
real data, on random inputs spread over the quantized file's own input range
(its int8 input scale says what range it was calibrated for): a data-free
first look, which real inputs refine.
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import List, Optional

import numpy as np

from tfopt.core import artifacts
from tfopt.core.errors import OneLineArgumentParser, TfoptError
from tfopt.litert import evaluate, int8_fidelity

__all__ = ["describe", "main"]


def describe(path: str) -> dict:
  """The file's contents as plain data (what --json prints)."""
  if not os.path.isfile(path):
    raise TfoptError(f"{path!r} is not a file; give a .tflite file.")
  contents = evaluate.inspect_tflite(path)
  return dict(file=path, bytes=os.path.getsize(path), gzip_bytes=artifacts.gzip_size(path),
              input_dtype=contents.input_dtype, output_dtype=contents.output_dtype,
              ops=contents.ops, weight_params=contents.weight_params,
              weight_dtypes=contents.weight_dtypes,
              weight_sparsity=contents.weight_sparsity,
              kernels=[dict(dataclasses.asdict(kernel), sparsity=kernel.sparsity)
                       for kernel in contents.kernels])


# Random inputs the data-free diagnosis runs on.
RANDOM_INPUTS = 64


def diagnose(path: str, float_file: str, images_file: Optional[str] = None) -> dict:
  """tfopt.cli.measure.diagnose_file on the inputs of `images_file`, or on random
  inputs over the quantized file's input range; says which."""
  from tfopt.cli import measure  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as stream:
    runner = int8_fidelity.FileRunner(stream.read())
  shape = tuple(int(size) for size in runner.inputs[0]["shape"][1:])
  if images_file:
    images, source = _images(images_file, shape), f"the {images_file} inputs"
  else:
    images, low, high = _random_inputs(runner.inputs[0], shape)
    source = (f"{RANDOM_INPUTS} random inputs over the file's input range [{low:.3g}, "
              f"{high:.3g}] (give --images for real ones)")
  fidelity = measure.diagnose_file(path, float_file, images)
  return dict(fidelity, inputs=source, examples=len(images))


def _images(images_file: str, shape: tuple) -> np.ndarray:
  try:
    images = np.load(images_file, allow_pickle=False).astype(np.float32)
  except (OSError, ValueError) as error:
    raise TfoptError(f"--images {images_file}: cannot read it as a .npy array ({error}).")
  if images.shape[1:] != shape:
    raise TfoptError(f"--images {images_file} holds inputs of shape {images.shape[1:]}; "
                     f"the file takes {shape} (batch first).")
  return images


def _random_inputs(detail: dict, shape: tuple):
  scale, zero_point = detail["quantization"]
  if np.issubdtype(detail["dtype"], np.integer) and scale:
    info = np.iinfo(detail["dtype"])
    low, high = (info.min - zero_point) * scale, (info.max - zero_point) * scale
  else:
    low, high = 0.0, 1.0
  images = np.random.default_rng(0).uniform(low, high, (RANDOM_INPUTS,) + shape)
  return images.astype(np.float32), float(low), float(high)


def _quantization(kernel: dict) -> str:
  if kernel["scales"] == 0:
    return "float"
  return "per tensor" if kernel["scales"] == 1 else f"per channel ({kernel['scales']})"


def as_text(found: dict) -> str:
  ops = ", ".join(f"{name} {count}" for name, count in sorted(found["ops"].items()))
  lines = [f"{found['file']}: {found['bytes']:,} B ({found['gzip_bytes']:,} B gzip), "
           f"{found['input_dtype']} in, {found['output_dtype']} out",
           f"ops: {ops}",
           f"weights: {found['weight_params']:,} in {len(found['kernels'])} tensors ("
           + ", ".join(f"{count} {dtype}" for dtype, count in
                       sorted(found["weight_dtypes"].items())) + "), "
           f"{found['weight_sparsity']:.1%} zeros", "",
           f"{'op':<18} {'dtype':<8} {'quantization':<18} {'shape':<18} {'zeros':>7} "
           f"{'distinct':>9} {'per channel':>11}  tensor"]
  for kernel in found["kernels"]:
    shape = "x".join(map(str, kernel["shape"]))
    lines.append(f"{kernel['op']:<18} {kernel['dtype']:<8} {_quantization(kernel):<18} "
                 f"{shape:<18} {kernel['sparsity']:>7.1%} {kernel['distinct']:>9,} "
                 f"{kernel['max_distinct_per_channel']:>11,}  {kernel['name']}")
  return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  parser = OneLineArgumentParser(prog="tfopt inspect", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("file", help="a .tflite file")
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  parser.add_argument("--float_file", help="the float32 .tflite this file was quantized "
                      "from: also diagnose where the file parts from it, op by op")
  parser.add_argument("--images", help="with --float_file: a .npy of inputs (batch first, "
                      "as the model takes them) to diagnose on; default: random inputs "
                      "over the file's input range")
  parser.add_argument("--explorer", nargs="?", const="", metavar="DIR",
                      help="also write per-layer overlays (sparsity, distinct values, "
                      "bits, latency share, sensitivity) as Model Explorer node data "
                      "into DIR (default: ./<file stem>.explorer), and print the "
                      "model-explorer command that opens them")
  args = parser.parse_args(argv)
  try:
    found = describe(args.file)
    if args.float_file:
      found["fidelity"] = diagnose(args.file, args.float_file, args.images)
    elif args.images:
      raise TfoptError("--images is for the diagnosis: give --float_file too.")
    if args.explorer is not None:
      from tfopt.litert import explorer  # pylint: disable=g-import-not-at-top
      directory = args.explorer or os.path.splitext(os.path.basename(args.file))[0] + ".explorer"
      os.makedirs(directory, exist_ok=True)
      written = explorer.write(args.file, directory)
  except (TfoptError, OSError) as error:
    print(f"tfopt: error: {error}", file=sys.stderr)
    return 2
  print(json.dumps(found, indent=2) if args.json else as_text(found))
  if "fidelity" in found and not args.json:
    from tfopt.cli import measure  # pylint: disable=g-import-not-at-top
    print(f"\ndiagnosis on {found['fidelity']['inputs']}:\n"
          + measure.fidelity_text(found["fidelity"]))
  if args.explorer is not None:
    print(f"\nModel Explorer overlays ({len(written)}): {', '.join(written)}\n"
          f"open them (pip install tfopt[explorer]): {explorer.command(args.file, written)}",
          file=sys.stderr if args.json else sys.stdout)
  return 0


if __name__ == "__main__":
  sys.exit(main())
