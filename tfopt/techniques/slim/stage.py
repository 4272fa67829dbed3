"""slim: network slimming / filter pruning, whole conv channels removed.

Channels are removed by dependency group (tfopt.techniques.slim.channel_groups): the convs
of a residual stream or a squeeze-excite block lose the same channels.

L1 on BatchNorm gamma, then --slim_prune_count steps that each remove more
channels and fine-tune (tfopt.techniques.slim.algorithm); after each step the model is converted
to int8 and measured in LiteRT, so the report shows size, accuracy and
latency falling step by step. Report: the step table and channels per conv.
"""


import time

from tfopt.core import progress
from tfopt.keras_io.macs import total_macs
from tfopt.litert import convert, evaluate
from tfopt.stages.base import NewModel, Stage, StageOutput, TaskStage
from tfopt.task.definition import TaskError
from tfopt.techniques.slim import algorithm as slim
from tfopt.techniques.slim.settings import SlimConfig


# On a user's task (tfopt.run.task_run).
def _run_on_task(run, model, config: SlimConfig):
  """Network slimming: whole channels removed by dependency group (through
  residual adds, concatenated skips, upsampling, transposed convs and every
  head), in prune_count steps, each fine-tuned on the task."""
  started = time.perf_counter()
  progress.log(f"slim: removing {config.rate:.0%} of the channels in "
               f"{config.prune_count} step(s), {config.finetune_epochs} epoch(s) each")
  result = slim.slim_with(model, config, run.trainer(config), run.validation_loss)
  run.add(run.name("slimmed"), result.model, {
      "rate": config.rate, "criterion": config.criterion,
      "removed_channels": result.removed_fraction,
      "params": [int(model.count_params())] + [step.params for step in result.steps],
      "macs": [int(total_macs(model))] + [step.macs for step in result.steps],
      "validation_loss": [step.val_accuracy for step in result.steps],
      "groups": result.groups, "skipped": result.skipped,
      "seconds": time.perf_counter() - started})
  return result.model


def _check_task(model, task, config: SlimConfig, stages):
  del task, stages  # any task: the groups are the model's
  groups, skipped = slim.slimmable_groups(model, config.criterion, config.layers)
  if not groups:
    raise TaskError(f"slim: no conv of {model.name!r} can be slimmed: " + "; ".join(
        f"{name}: {why}" for name, why in list(skipped.items())[:5]))


class SlimStage(Stage):
  name = "slim"
  on_task = TaskStage(SlimConfig, _run_on_task, check=_check_task, defaults={
      "rate": 0.5, "prune_count": 2, "finetune_epochs": 2, "sparsity_epochs": 0,
      "learning_rate": 5e-4, "use_teacher": False})
  settings = ("slim", "distill", "convert", "evaluate")
  report_fields = {"slim_steps": list, "slim_channels": list}

  def training_epochs(self, config):
    return (config.slim.sparsity_epochs
            + config.slim.prune_count * config.slim.finetune_epochs)

  def preflight(self, config, dataset, architecture):
    if config.slim.layers:
      slim.prunable_convs(architecture(), config.slim.criterion, config.slim.layers)
    return architecture

  def run(self, context) -> StageOutput:
    config = context.config.slim
    context.log(f"slim: removing {config.rate:.0%} of the conv channels of "
                f"{context.current.name} in {config.prune_count} step(s) "
                f"({config.criterion}, {config.scope}), {config.sparsity_epochs} "
                f"sparsity epoch(s) with L1 {config.l1_strength} on BN gamma, "
                f"{config.finetune_epochs} fine-tuning epoch(s) per step")
    result = slim.slim(context.current_model(), context.dataset, config,
                       teacher=context.teacher(config.use_teacher), fits=context.fits)
    for name, reason in result.skipped.items():
      context.log(f"  skipped {name}: {reason}")
    entry = context.current.then("slimmed", "slimmed")
    steps = [_measure_step(context, entry.stem, step) for step in result.steps]
    group_of = {name: group for group, names in result.groups.items() for name in names}
    channels = [{"layer": name, "group": group_of.get(name, name), "before": before,
                 "after": result.steps[-1].channels[name]}
                for name, before in result.channels_before.items()]
    return StageOutput(models=[NewModel(entry, result.model)],
                       record={"steps": steps, "channels": channels})

  def summarize(self, record, context):
    return {"slim_steps": record["steps"], "slim_channels": record["channels"]}

  def report_section(self, report):
    if not report.slim_steps:
      return []
    lines = ["", "## Slimming (channels removed, int8 measured in LiteRT after "
             "each step's fine-tuning)", "",
             "| step | rate | channels | params | MACs | int8 accuracy "
             "| .tflite bytes | latency µs |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {step['step']} | {100 * step['rate']:.0f} % | {step['channels']:,} "
              f"| {step['params']:,} | {step['macs']:,} | {100 * step['accuracy']:.2f} % "
              f"| {step['tflite_bytes']:,} | {step['latency_us']:,.0f} |"
              for step in report.slim_steps]
    lines += ["", "Layers of one group (coupled through a residual Add, squeeze-excite "
              "Multiply, ...) keep the same channels.", "",
              "| layer | group | channels before | after |", "|---|---|---|---|"]
    return lines + [f"| {entry['layer']} | {entry.get('group', entry['layer'])} "
                    f"| {entry['before']} | {entry['after']} |"
                    for entry in report.slim_channels]


def _measure_step(context, stem: str, step) -> dict:
  """Converts one step's model to int8 and measures it in LiteRT."""
  config, data = context.config.evaluate, context.dataset
  path = context.write_bytes(f"{stem}_step{step.step}_int8.tflite", convert.to_tflite(
      step.model, "int8", data.x_train, context.config.convert.representative_examples))
  file = evaluate.measure_file(path, data.x_test[0], data.x_test, data.y_test,
                               config.num_threads, config.batch_size,
                               config.latency_warmup, config.latency_runs)
  measured = dict(
      step=step.step, rate=step.rate, channels=sum(step.channels.values()),
      params=step.params, macs=step.macs, val_accuracy=step.val_accuracy,
      accuracy=file.accuracy, tflite_bytes=file.tflite_bytes, latency_us=file.latency_us)
  context.log(f"  step {step.step}: {measured['channels']} channels, {step.params:,} "
              f"params, {step.macs:,} MACs, int8 accuracy {measured['accuracy']:.2%}, "
              f"{measured['tflite_bytes']:,} B, {measured['latency_us']:,.0f} µs")
  return measured


STAGE = SlimStage()
