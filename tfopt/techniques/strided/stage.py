"""strided: 2 x 2 pools folded into stride-2 convolutions (faster, same size).

Each stride-1 conv that a 2 x 2 pool follows (through BatchNorm and its
activation) computes at stride 2 and the pool goes, where the shapes after it
stay the same; the weights carry over and the model is fine-tuned, distilled
from the teacher (tfopt.techniques.strided.algorithm). The file keeps its size and loses most of
the work at full resolution, which is what batch-1 latency on a CPU pays for.
Report: the pools folded and kept, MACs before and after, validation accuracy
before and after fine-tuning.
"""

import time

from tfopt.core import progress
from tfopt.core.validate import ConfigError
from tfopt.keras_io import macs
from tfopt.stages.base import NewModel, Stage, StageOutput, TaskStage
from tfopt.techniques.strided import algorithm as strided
from tfopt.techniques.strided.settings import StridedConfig


# On a user's task (tfopt.run.task_run).
def _run_on_task(run, model, config: StridedConfig):
  """Each stride-1 conv before a 2 x 2 pool made stride 2 and the pool
  removed (where the shapes after it stay), then fine-tuned on the task."""
  started = time.perf_counter()
  result = strided.strided(model)
  progress.log(f"strided: {len(result.folded)} pool(s) folded into strided convs, "
               f"{config.finetune_epochs} epoch(s) of fine-tuning")
  before = run.validation_loss(result.model)
  run.fit(result.model, config.finetune_epochs, config.learning_rate,
          teacher=config.use_teacher)
  run.add(run.name("strided"), result.model, {
      "folded": [f"{conv} + {pool}" for conv, pool in result.folded], "kept": result.kept,
      "validation_loss_before_finetune": before,
      "validation_loss_after_finetune": run.validation_loss(result.model),
      "macs": [int(macs.total_macs(model)), int(macs.total_macs(result.model))],
      "seconds": time.perf_counter() - started})
  return result.model


def _check_task(model, task, config: StridedConfig, stages):
  del task, config, stages
  strided.strided(model)  # raises when no pool can be folded


class StridedStage(Stage):
  name = "strided"
  on_task = TaskStage(StridedConfig, _run_on_task, check=_check_task, defaults={
      "finetune_epochs": 2, "learning_rate": 5e-4, "use_teacher": False})
  settings = ("strided", "distill")
  report_fields = {"strided": dict}

  def training_epochs(self, config):
    return config.strided.finetune_epochs

  def check_chain(self, config, before):
    """Its plain fine-tune would undo what these stages leave in the weights."""
    undone = {"prune": "zeros", "sensitivity": "zeros", "cluster": "shared values",
              "binary": "binary weights", "search": "zeros or int4 grid"}
    for name, what in undone.items():
      if name in before:
        raise ConfigError(f"stages={','.join(config.stages)} is invalid: strided after "
                          f"{name} would fine-tune away the {what} {name} leaves; put "
                          f"strided before {name} in --stages.")

  def preflight(self, config, dataset, architecture):
    folded = strided.strided(architecture()).model  # nothing to fold stops here
    return lambda: folded

  def run(self, context) -> StageOutput:
    config, model = context.config.strided, context.current_model()
    context.log(f"strided: 2 x 2 pools of {context.current.name} folded into stride-2 "
                f"convolutions, then {config.finetune_epochs} fine-tuning epoch(s)")
    result = strided.strided_and_finetuned(model, context.dataset, config,
                                           teacher=context.teacher(config.use_teacher),
                                           fits=context.fits)
    for conv, pool in result.folded:
      context.log(f"  {conv}: stride 2, {pool} removed")
    for reason in result.kept:
      context.log(f"  kept {reason}")
    record = dict(folded=[list(pair) for pair in result.folded], kept=result.kept,
                  macs_before=macs.total_macs(model), macs_after=macs.total_macs(result.model),
                  val_accuracy_before_finetune=result.val_accuracy_before_finetune,
                  val_accuracy_after_finetune=result.val_accuracy_after_finetune)
    context.log(f"  MACs {record['macs_before']:,} -> {record['macs_after']:,}; validation "
                f"accuracy {record['val_accuracy_before_finetune']:.2%} before fine-tuning, "
                f"{record['val_accuracy_after_finetune']:.2%} after")
    return StageOutput(models=[NewModel(context.current.then("strided", "strided"),
                                        result.model)], record=record)

  def summarize(self, record, context):
    return {"strided": record}

  def report_section(self, report):
    record = report.strided
    if not record:
      return []
    lines = ["", "## Strided downsampling (2 x 2 pools folded into stride-2 convolutions)",
             "", f"MACs per image {record['macs_before']:,} → {record['macs_after']:,} "
             f"({record['macs_before'] / record['macs_after']:.2f}× fewer); validation "
             f"accuracy {100 * record['val_accuracy_before_finetune']:.2f} % before "
             f"fine-tuning, {100 * record['val_accuracy_after_finetune']:.2f} % after.", "",
             "| convolution | pool removed |", "|---|---|"]
    lines += [f"| {conv} | {pool} |" for conv, pool in record["folded"]]
    return lines + [""] + [f"Kept: {reason}." for reason in record["kept"]]


STAGE = StridedStage()
