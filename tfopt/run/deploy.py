"""The deploy bundle: what an app needs to run the chosen .tflite.

    deploy/model.tflite   the file itself
    deploy/labels.txt     one class name per line, in output order
    deploy/model.json     input/output shapes, dtypes, scale and zero-point,
                          the preprocessing the model expects, class names,
                          the measured accuracy, size and latency, and the
                          sha256 of model.tflite

`examples/edge_infer.py` reads exactly this, with LiteRT, numpy and Pillow.
"""

import json
import os
from typing import List, Optional, Tuple

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfopt.core.artifacts import copy_file_atomic, sha256_of, write_text_atomic
from tfopt.core.version import __version__

__all__ = ["DIRECTORY", "PREFERRED_MODES", "write_bundle"]

DIRECTORY = "deploy"
# Which file of the final model is deployed, best first: int8 runs on
# integer-only accelerators and is the smallest file that runs fast on CPUs.
PREFERRED_MODES = ("int8", "int4", "dynamic_range", "dynamic_int4", "float16", "float32",
                   "int16x8")


def _tensor(detail: dict) -> dict:
  scale, zero_point = detail["quantization"]
  return {"shape": [int(size) for size in detail["shape"]],
          "dtype": np.dtype(detail["dtype"]).name,
          "scale": float(scale), "zero_point": int(zero_point)}


def _copied(output_dir: str, tflite_path: str, row_name: str, kind: str):
  """(deploy/, deploy/model.tflite copied there, model.json's first entries)."""
  directory = os.path.join(output_dir, DIRECTORY)
  os.makedirs(directory, exist_ok=True)
  model_path = copy_file_atomic(tflite_path, os.path.join(directory, "model.tflite"))
  return directory, model_path, {
      "format": kind, "tfopt_version": __version__, "model": "model.tflite",
      "sha256": sha256_of(model_path),
      "source": {"row": row_name, "file": os.path.basename(tflite_path)}}


def write_bundle(output_dir: str, tflite_path: str, row: dict,
                 class_names: List[str], dataset: str,
                 input_range: Tuple[float, float] = (0.0, 1.0),
                 int8_recipe: Optional[dict] = None) -> List[str]:
  """Writes deploy/ for the .tflite at `tflite_path`; returns the file paths.

  Args:
    output_dir: the run's output directory.
    tflite_path: the chosen file (copied as deploy/model.tflite).
    row: its measured report row (accuracy, sizes, latency, name).
    class_names: the class names, in the model's output order.
    dataset: the data set the figures were measured on.
    input_range: the float input that pixel values 0 and 255 map to.
    int8_recipe: for an int8 file, how it was quantized (tfopt.litert.int8_repair's
      record of the chosen recipe), written as "quantization".
  """
  low, high = input_range
  directory, model_path, description = _copied(output_dir, tflite_path, row["name"],
                                               "tfopt deploy bundle 1")
  interpreter = Interpreter(model_path=model_path)
  input_detail = interpreter.get_input_details()[0]
  height, width, channels = (int(size) for size in input_detail["shape"][1:4])
  description.update({
      "input": _tensor(input_detail),
      "output": _tensor(interpreter.get_output_details()[0]),
      "preprocessing": {
          "image_size": [height, width],
          "color_mode": "grayscale" if channels == 1 else "rgb",
          "layout": "NHWC",
          # float input = pixel (0..255) * scale + offset; an int8 input then
          # quantizes it with input.scale and input.zero_point.
          "pixel_scale": (high - low) / 255.0, "pixel_offset": low,
      },
      "labels": "labels.txt",
      "class_names": list(class_names),
      "measured": {
          "dataset": dataset, "accuracy": row["accuracy"],
          "tflite_bytes": row["tflite_bytes"], "gzip_bytes": row["gzip_bytes"],
          "latency_us": row["latency_us"],
          "note": "accuracy of this file in LiteRT on the test split; latency "
                  "at batch 1 on the machine in report.json",
      },
  })
  if int8_recipe:
    description["quantization"] = int8_recipe
  labels_path = write_text_atomic(os.path.join(directory, "labels.txt"),
                                  "\n".join(class_names) + "\n")
  json_path = write_text_atomic(os.path.join(directory, "model.json"),
                                json.dumps(description, indent=2) + "\n")
  return [model_path, labels_path, json_path]


def write_task_bundle(output_dir: str, tflite_path: str, row: dict,
                      outputs: List[dict]) -> List[str]:
  """deploy/ for a task's file: model.tflite and model.json describing its
  input and every output (by the task's names, in the task's order: shape,
  dtype, scale, zero-point, meaning) and what was measured on the test data."""
  from tfopt.litert import int8_fidelity  # pylint: disable=g-import-not-at-top
  from tfopt.task import measure as task_measure
  directory, model_path, description = _copied(output_dir, tflite_path, row["name"],
                                               "tfopt deploy bundle 2 (task)")
  with open(model_path, "rb") as stream:
    runner = int8_fidelity.FileRunner(stream.read())
  order = task_measure.file_outputs(runner, [output["keras_name"] for output in outputs])
  description.update({
      "inputs": [dict(_tensor(detail), index=int(detail["index"]))
                 for detail in runner.inputs],
      "outputs": [dict(_tensor(runner.outputs[position]), name=output["name"],
                       meaning=output["meaning"], index=int(runner.outputs[position]["index"]))
                  for output, position in zip(outputs, order)],
      "measured": {"metrics": row["metrics"], "score": row["score"],
                   "fidelity_to_keras": row["fidelity"], "tflite_bytes": row["tflite_bytes"],
                   "gzip_bytes": row["gzip_bytes"], "latency_us": row["latency_us"],
                   "note": "this file in LiteRT on the task's test data; latency at "
                           "batch 1 on the machine in task_report.json"},
  })
  if runner.fixed_batch:
    description["runs"] = ("one example at a time (batch 1), reset_all_variables() before "
                           "each invoke: its recurrent states are variables that outlive one")
  json_path = write_text_atomic(os.path.join(directory, "model.json"),
                                json.dumps(description, indent=2) + "\n")
  return [model_path, json_path]

