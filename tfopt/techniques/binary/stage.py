"""binary: BinaryConnect / BWN weights, trained with the straight-through estimator.

The chosen Conv2D / Dense layers of the latest model use sign(w) (BWN:
alpha * sign(w)) in the forward pass (tfopt.techniques.binary.algorithm). The trainable model is
kept as <name>_trainable.keras; what is converted and deployed is its export
to plain layers, which LiteRT stores as int8 with two codes per channel.
Report: the effective size at 1 bit per weight beside the real files.
"""

import time

from tfopt.core import progress
from tfopt.litert import convert
from tfopt.stages.base import NewModel, Stage, StageOutput, TaskStage
from tfopt.stages.report import percent
from tfopt.task.definition import TaskError
from tfopt.techniques.binary import algorithm as binary
from tfopt.techniques.binary.settings import BinaryConfig

LABELS = {"bwn": "BWN", "binaryconnect": "BinaryConnect"}


# On a user's task (tfopt.run.task_run).
def _run_on_task(run, model, config: BinaryConfig):
  """Binary weights (BWN or BinaryConnect) trained with the straight-through
  estimator on the task; the file holds them as plain layers, and the record
  their size at 1 bit per weight."""
  started = time.perf_counter()
  progress.log(f"binary: {config.mode} weights, {config.epochs} epoch(s)")
  result = binary.binary(model, None, config, train=run.trainer(config))
  record = {key: value for key, value in result.size.items() if key != "layers"}
  run.add(run.name("binarized"), result.model, dict(
      record, mode=config.mode, layers=[entry["layer"] for entry in result.size["layers"]],
      seconds=time.perf_counter() - started))
  return result.model


def _check_task(model, task, config: BinaryConfig, stages):
  del task, stages
  if not binary.binarizable_layers(model, config.layers):
    raise TaskError(f"binary: {model.name!r} has no Conv2D or Dense layer to binarize.")


class BinaryStage(Stage):
  name = "binary"
  on_task = TaskStage(BinaryConfig, _run_on_task, check=_check_task, defaults={
      "epochs": 3, "learning_rate": 1e-4, "use_teacher": False})
  settings = ("binary", "distill")
  report_fields = {"binary": list}

  def training_epochs(self, config):
    return config.binary.epochs

  def preflight(self, config, dataset, architecture):
    if config.binary.layers:
      binary.binarizable_layers(architecture(), config.binary.layers)
    return architecture

  def run(self, context) -> StageOutput:
    config = context.config.binary
    label = LABELS[config.mode]
    context.log(f"binary: {label} weights for "
                f"{', '.join(config.layers) if config.layers else 'every Conv2D and Dense'} "
                f"of {context.current.name}, {config.epochs} epoch(s) with the "
                "straight-through estimator")
    result = binary.binary(context.current_model(), context.dataset, config,
                           teacher=context.teacher(config.use_teacher), fits=context.fits)
    entry = context.current.then("binary", label)
    size = result.size
    context.log(f"  {size['binary_weights']:,} binary weights, {size['scales']} scales, "
                f"{size['other_params']:,} other parameters: "
                f"{size['effective_bytes']:,} B at 1 bit per binary weight")
    context.save_model(f"{entry.name}_trainable.keras", result.trainable)
    return StageOutput(models=[NewModel(entry, result.model)],
                       record={"models": {entry.name: dict(size, mode=config.mode)}})

  def summarize(self, record, context):
    """Each binary model: effective 1-bit size beside its real files."""
    summary = []
    for name, size in record["models"].items():
      rows = [row for row in (context.row_of(name, mode) for mode in convert.MODES)
              if row is not None]
      summary.append(dict(size, model=name, files=[
          dict(row=row.name, accuracy=row.accuracy, tflite_bytes=row.tflite_bytes,
               gzip_bytes=row.gzip_bytes,
               max_distinct_per_channel=max(kernel.max_distinct_per_channel
                                            for kernel in context.contents(row.name).kernels))
          for row in rows]))
    return {"binary": summary}

  def report_section(self, report):
    if not report.binary:
      return []
    lines = ["", "## Binary weights (effective size at 1 bit per weight)", ""]
    for entry in report.binary:
      lines += [
          f"**{entry['model']}** ({entry['mode']}): {entry['binary_weights']:,} "
          f"binary weights, {entry['scales']} scales, {entry['other_params']:,} "
          "other parameters (BatchNorm, biases, layers left real) → "
          f"**{entry['effective_bytes']:,} B** at 1 bit per binary weight and "
          f"32 bits per scale and other parameter ({entry['float32_bytes']:,} B "
          "in float32).", "",
          "| file | accuracy | .tflite bytes | gzip bytes | max distinct values "
          "per channel |", "|---|---|---|---|---|"]
      lines += [f"| {row['row']} | {percent(row['accuracy'], 2)} "
                f"| {row['tflite_bytes']:,} | {row['gzip_bytes']:,} "
                f"| {row['max_distinct_per_channel']} |" for row in entry["files"]]
      lines += ["", "| layer | kernel shape | binary weights | scales |",
                "|---|---|---|---|"]
      lines += [f"| {layer['layer']} | {tuple(layer['shape'])} "
                f"| {layer['binary_weights']:,} | {layer['scales']} |"
                for layer in entry["layers"]]
    return lines


STAGE = BinaryStage()
