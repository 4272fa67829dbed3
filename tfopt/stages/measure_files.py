"""evaluate: every .tflite file measured in LiteRT, one report row each.

Ends every run. Per file: top-1 accuracy on the whole test set, raw and gzip
bytes, median latency at batch 1, agreement with its Keras model, weight
sparsity and dtypes read back from the file; per int8 file of a model without
wrappers, where its latency comes from, segment by segment (tfopt.litert.breakdown),
and with --quantization_debug, TF Lite's QuantizationDebugger's per-op
errors in quantization steps (tfopt.litert.quant_debug; where each int8 file parts
from its float model, along the graph, is the convert stage's diagnosis).
Report: the comparison table (rendered by tfopt.stages.report), the latency
breakdown and the debugger's table.
"""

import dataclasses
import os

import numpy as np

from tfopt.core._keras import keras
from tfopt.keras_io.macs import count_macs, parameter_counts, total_macs
from tfopt.litert import breakdown, convert, evaluate, quant_debug
from tfopt.stages.base import Stage, StageOutput
from tfopt.stages.report import ModelRow
from tfopt.stages.tflite_files import tflite_plan



class EvaluateStage(Stage):
  name = "evaluate"
  settings = ("evaluate",)
  report_fields = {"latency_breakdown": dict, "precision_loss": dict}

  def run(self, context) -> StageOutput:
    rows, breakdowns, losses = [], {}, {}
    modes = {row_name: mode for row_name, _, _, mode in tflite_plan(context)}
    for row_name, (filename, model_name) in context.tflite_files.items():
      row = measure_row(context, row_name, filename, model_name)
      context.log(f"evaluate: {row_name}: accuracy {row.accuracy:.2%}, "
                  f"{row.tflite_bytes:,} B ({row.gzip_bytes:,} B gzip), "
                  f"{row.latency_us:,.0f} µs")
      rows.append(row)
      model = context.models[model_name]
      if modes.get(row_name) == "int8" and _wants_breakdown(context, row_name, model):
        breakdowns[row_name] = _breakdown(context, model)
      if modes.get(row_name) == "int8" and _wants_debug(context, row, model):
        losses[row_name] = _precision_loss(context, model)
    return StageOutput(rows=rows, record={"latency_breakdown": breakdowns,
                                          "precision_loss": losses})

  def summarize(self, record, context):
    return {"latency_breakdown": record["latency_breakdown"],
            "precision_loss": record.get("precision_loss", {})}

  def report_section(self, report):
    return _breakdown_section(report) + _precision_section(report)


def _breakdown_section(report) -> list:
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


def _precision_section(report) -> list:
  if not report.precision_loss:
    return []
  lines = ["", "## Layers that lose precision in int8 (TF Lite QuantizationDebugger)", "",
           "Each op runs in int8 and in float on the same input; RMSE / scale is its own "
           f"error in quantization steps ({quant_debug.ROUNDING_ONLY:.2f} is plain rounding). "
           "Listed with --quantization_debug; an op can round to a fine grid and still "
           "lose its signal, so the int8 section above (SNR along the graph) is the one "
           "that finds where a file loses accuracy.", ""]
  for name, layers in report.precision_loss.items():
    agreement = next((row.agreement for row in report.models if row.name == name), None)
    lines += [f"**{name}**" + (f" (agrees on {agreement:.2%})" if agreement is not None
                               else ""), "",
              "| layer | op | RMSE / scale | max abs error |", "|---|---|---|---|"]
    lines += [f"| {layer['layer']} | {layer['op']} | {layer['rmse_over_scale']:.2f} "
              f"| {layer['max_abs_error']:.3g} |" for layer in layers]
    lines.append("")
  return lines


def measure_row(context, row_name: str, filename: str, model_name: str) -> ModelRow:
  """One .tflite file measured in LiteRT, beside its Keras model."""
  config, data = context.config.evaluate, context.dataset
  path, model = context.path(filename), context.models[model_name]
  contents = context.contents(row_name)
  measured = evaluate.measure_file(path, data.x_test[0], data.x_test, data.y_test,
                                   config.num_threads, config.batch_size,
                                   config.latency_warmup, config.latency_runs)
  params, nonzero_params = parameter_counts(model)
  return ModelRow(
      name=row_name, path=os.path.basename(path), accuracy=measured.accuracy,
      tflite_bytes=measured.tflite_bytes, gzip_bytes=measured.gzip_bytes,
      latency_us=measured.latency_us,
      params=params, nonzero_params=nonzero_params,
      macs=total_macs(model),
      agreement=float(np.mean(measured.top1 == context.keras_top1(model_name))),
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


def _wants_debug(context, row: ModelRow, model: keras.Model) -> bool:
  if not context.config.evaluate.quantization_debug:
    return False
  if convert.is_quantization_aware(model):
    context.log(f"evaluate: {row.name} is quantization-aware; the debugger takes "
                "float models only")
    return False
  context.log(f"evaluate: {row.name}: per-op errors in quantization steps "
              "(QuantizationDebugger, --quantization_debug)")
  return True


def _precision_loss(context, model: keras.Model) -> list:
  errors = quant_debug.int8_layer_errors(
      model, context.dataset.x_train, context.config.convert.representative_examples)
  return [dataclasses.asdict(error) for error in errors]


def _breakdown(context, model: keras.Model) -> list:
  config = context.config.evaluate
  segments = breakdown.latency_breakdown(
      model, "int8", context.dataset.x_train,
      context.config.convert.representative_examples, config.num_threads,
      config.latency_warmup, config.latency_runs)
  return [dataclasses.asdict(segment) for segment in segments]


STAGE = EvaluateStage()
