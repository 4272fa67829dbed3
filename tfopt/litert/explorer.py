"""Per-layer overlays for Google's Model Explorer: the graph coloured by what
each compression step did.

`tfopt inspect FILE.tflite --explorer` writes one node-data file per overlay
(Model Explorer's JSON format: {"results": {node key: {"value": v}},
"gradient": [...]}) beside the file, keyed by each op's output tensor name,
which is how Model Explorer matches node data to the nodes of a .tflite graph:

    sparsity        % of zero weights in the op's kernel
    distinct        most distinct stored values in one output channel
    bits            bits per stored weight (4, 8, 16, 32)
    latency_share   % of the file's latency (from its run's report.json)
    sensitivity     accuracy drop (pp) when the layer alone is pruned to the
                    highest sparsity the sensitivity stage measured

The last two come from the report.json of the tfopt run the file sits in,
when that run measured them. Model Explorer itself is an optional extra
(`pip install tfopt[explorer]`): `model-explorer FILE --node_data_paths=...`
opens the graph with the overlays; tfopt prints that command.
"""

import json
import os
import re
from typing import Dict, List, Optional

from tfopt.core import artifacts
from tfopt.litert import evaluate

__all__ = ["overlays", "write", "command"]

_BITS = {"int4": 4, "uint4": 4, "int8": 8, "uint8": 8, "int16": 16, "float16": 16,
         "float32": 32}
# Low values white, high values a saturated colour (Model Explorer gradient stops).
_GRADIENTS = {
    "sparsity": ("#ffffff", "#1f77b4"), "distinct": ("#2ca02c", "#ffffff"),
    "bits": ("#d62728", "#ffffff"), "latency_share": ("#ffffff", "#ff7f0e"),
    "sensitivity": ("#ffffff", "#d62728"),
}


def overlays(path: str, report: Optional[dict] = None) -> Dict[str, Dict[str, float]]:
  """{overlay: {op output tensor name: value}} for the .tflite file at `path`."""
  kernels = [kernel for kernel in evaluate.inspect_tflite(path).kernels if kernel.output]
  found = {
      "sparsity": {k.output: round(100 * k.sparsity, 2) for k in kernels},
      "distinct": {k.output: k.max_distinct_per_channel for k in kernels},
      "bits": {k.output: _BITS.get(k.dtype, 32) for k in kernels},
  }
  report = report if report is not None else _run_report(path)
  if report:
    for name, per_layer in (("latency_share", _latency_share(report, path)),
                            ("sensitivity", _sensitivity(report))):
      matched = {k.output: per_layer[layer] for k in kernels
                 for layer in per_layer if _is_layer(k.name, layer)}
      if matched:
        found[name] = matched
  return found


def write(path: str, directory: Optional[str] = None) -> List[str]:
  """Writes each overlay as <file stem>.<overlay>.json; returns their paths."""
  directory = directory or os.path.dirname(os.path.abspath(path))
  stem = os.path.splitext(os.path.basename(path))[0]
  written = []
  for name, results in overlays(path).items():
    low, high = _GRADIENTS[name]
    node_data = {"name": f"tfopt {name}",
                 "results": {key: {"value": value} for key, value in results.items()},
                 "gradient": [{"stop": 0, "bgColor": low}, {"stop": 1, "bgColor": high}]}
    written.append(artifacts.write_text_atomic(
        os.path.join(directory, f"{stem}.{name}.json"), json.dumps(node_data, indent=2)))
  return written


def command(path: str, written: List[str]) -> str:
  return f"model-explorer {path} --node_data_paths={','.join(written)}"


def _run_report(path: str) -> Optional[dict]:
  """The report.json of the tfopt run that wrote the file, if it is beside it."""
  report_path = os.path.join(os.path.dirname(os.path.abspath(path)), "report.json")
  try:
    with open(report_path, encoding="utf-8") as stream:
      report = json.load(stream)
  except (OSError, ValueError):
    return None
  rows = [row for row in report.get("models", []) if isinstance(row, dict)]
  if not any(row.get("path") == os.path.basename(path) for row in rows):
    return None  # another file of the same name
  return report


def _latency_share(report: dict, path: str) -> Dict[str, float]:
  row = next(row for row in report["models"] if row.get("path") == os.path.basename(path))
  segments = (report.get("latency_breakdown") or {}).get(row["name"]) or []
  total = sum(max(segment["latency_us"], 0.0) for segment in segments)
  return {segment["layer"]: round(100 * max(segment["latency_us"], 0.0) / total, 2)
          for segment in segments} if total else {}


def _sensitivity(report: dict) -> Dict[str, float]:
  points = (report.get("sensitivity") or {}).get("points") or []
  if not points:
    return {}
  highest = max(point["sparsity"] for point in points)
  return {point["layer"]: round(point["drop"], 3) for point in points
          if point["sparsity"] == highest}


def _is_layer(tensor: str, layer: str) -> bool:
  """True when the weight tensor `tensor` belongs to Keras layer `layer`."""
  return re.search(rf"(^|/){re.escape(layer)}(/|$)", tensor) is not None
