"""evaluate: every .tflite file measured in LiteRT, one report row each.

Ends every run. Per file: top-1 accuracy on the whole test set, raw and gzip
bytes, median latency at batch 1, agreement with its Keras model, weight
sparsity and dtypes read back from the file; per int8 file of a model without
wrappers, where its latency comes from, segment by segment (tfopt.breakdown).
Report: the comparison table (rendered by tfopt.report) and the latency
breakdown.
"""

import dataclasses
import os

import numpy as np

from tfopt import artifacts, breakdown, evaluate
from tfopt._keras import keras
from tfopt.macs import count_macs
from tfopt.report import ModelRow
from tfopt.stages.base import Stage, StageOutput

# Variables of tfmot's quantize wrappers that are ranges and counters, not
# parameters of the network.
_QUANTIZER_VARIABLES = ("_min:0", "_max:0", "optimizer_step:0")


class EvaluateStage(Stage):
  name = "evaluate"
  settings = ("evaluate",)
  report_fields = {"latency_breakdown": dict}

  def run(self, context) -> StageOutput:
    rows, breakdowns = [], {}
    for row_name, (filename, model_name) in context.tflite_files.items():
      row = measure_row(context, row_name, filename, model_name)
      context.log(f"evaluate: {row_name}: accuracy {row.accuracy:.2%}, "
                  f"{row.tflite_bytes:,} B ({row.gzip_bytes:,} B gzip), "
                  f"{row.latency_us:,.0f} µs")
      rows.append(row)
      model = context.models[model_name]
      if row_name.endswith(" int8") and _wants_breakdown(context, row_name, model):
        breakdowns[row_name] = _breakdown(context, model)
    return StageOutput(rows=rows, record={"latency_breakdown": breakdowns})

  def summarize(self, record, context):
    return {"latency_breakdown": record["latency_breakdown"]}

  def report_section(self, report):
    if not report.latency_breakdown:
      return []
    lines = ["", "## Where latency comes from (int8, LiteRT)", "",
             "Each segment runs from one compute layer to the next (its BN, "
             "activation and pooling included), timed as the difference between "
             "prefixes of the model converted on their own; small segments can "
             "read slightly negative from timing noise.", ""]
    for name, segments in report.latency_breakdown.items():
      total = segments[-1]["cumulative_us"] if segments else 0.0
      lines += [f"**{name}** ({total:,.1f} µs in this measurement)", "",
                "| segment | kind | MACs | µs | share |", "|---|---|---|---|---|"]
      lines += [f"| {segment['layer']} | {segment['kind']} | {segment['macs']:,} "
                f"| {segment['latency_us']:.1f} "
                f"| {100 * segment['latency_us'] / total if total else 0:.0f} % |"
                for segment in segments]
      lines.append("")
    return lines


def measure_row(context, row_name: str, filename: str, model_name: str) -> ModelRow:
  """One .tflite file measured in LiteRT, beside its Keras model."""
  config, data = context.config.evaluate, context.dataset
  path, model = context.path(filename), context.models[model_name]
  contents = context.contents(row_name)
  tflite_top1 = evaluate.top1(path, data.x_test, config.num_threads, config.batch_size)
  parameters = [weight.numpy() for weight in model.weights
                if not weight.name.endswith(_QUANTIZER_VARIABLES)]
  return ModelRow(
      name=row_name, path=os.path.basename(path),
      accuracy=float(np.mean(tflite_top1 == data.y_test)),
      tflite_bytes=os.path.getsize(path), gzip_bytes=artifacts.gzip_size(path),
      latency_us=evaluate.latency_us(path, data.x_test[0], config.num_threads,
                                     config.latency_warmup, config.latency_runs),
      params=int(sum(weight.size for weight in parameters)),
      nonzero_params=int(sum(np.count_nonzero(weight) for weight in parameters)),
      macs=sum(entry.macs for entry in count_macs(model)),
      agreement=float(np.mean(tflite_top1 == context.keras_top1(model_name))),
      weight_sparsity=contents.weight_sparsity,
      input_dtype=contents.input_dtype, weight_dtypes=contents.weight_dtypes)


def _wants_breakdown(context, row_name: str, model: keras.Model) -> bool:
  """Whether to time `model` segment by segment (see EvaluateConfig)."""
  asked = context.config.evaluate.latency_breakdown
  if asked is False or any(isinstance(layer, keras.layers.Wrapper)
                           for layer in model.layers):
    return False
  segments = len(count_macs(model))
  if asked is None and segments > breakdown.AUTO_MAX_SEGMENTS:
    context.log(f"evaluate: no latency breakdown of {row_name}: {segments} compute "
                f"layers (more than {breakdown.AUTO_MAX_SEGMENTS}, one conversion "
                "each); --latency_breakdown times it anyway")
    return False
  return True


def _breakdown(context, model: keras.Model) -> list:
  config = context.config.evaluate
  segments = breakdown.latency_breakdown(
      model, "int8", context.dataset.x_train,
      context.config.convert.representative_examples, config.num_threads,
      config.latency_warmup, config.latency_runs)
  return [dataclasses.asdict(segment) for segment in segments]


STAGE = EvaluateStage()
