"""prune: unstructured magnitude pruning of the latest model with tfmot.

Sparsity ramps to --target_sparsity while fine-tuning (distilled from the
teacher unless use_teacher is off), under the run's tf.distribute strategy;
the wrappers are stripped and every pruned weight's zeros are counted
(tfopt.techniques.prune.algorithm). Report: the per-layer sparsity table.
"""

import dataclasses
import time

from tfopt.core import progress
from tfopt.stages.base import NewModel, Stage, StageOutput, TaskStage
from tfopt.techniques.prune import algorithm as prune
from tfopt.techniques.prune.settings import PruneConfig


# On a user's task (tfopt.run.task_run).
def _run_on_task(run, model, config: PruneConfig):
  """tfmot magnitude pruning while fine-tuning on the task (unstructured:
  the file keeps its shape; its zeros show in gzip bytes)."""
  started = time.perf_counter()
  progress.log(f"prune: fine-tuning to {config.target_sparsity:.0%} sparsity for "
               f"{config.epochs} epoch(s) with the task's loss")
  result = prune.prune(model, None, config, train=run.trainer(config),
                       steps_per_epoch=run.steps_per_epoch)
  run.add(run.name("pruned"), result.model, {
      "target_sparsity": config.target_sparsity, "epochs": config.epochs,
      "pruned_weights": sum(entry.size for entry in result.layers),
      "sparsity": result.overall_sparsity, "seconds": time.perf_counter() - started},
      pruned=True)
  return result.model


class PruneStage(Stage):
  name = "prune"
  on_task = TaskStage(PruneConfig, _run_on_task, defaults={
      "target_sparsity": 0.5, "epochs": 2, "learning_rate": 1e-4, "use_teacher": False})
  settings = ("prune", "distill")
  report_fields = {"layer_sparsity": list}

  def training_epochs(self, config):
    return config.prune.epochs

  def run(self, context) -> StageOutput:
    config = context.config.prune
    context.log(f"prune: magnitude pruning of {context.current.name} to "
                f"{config.target_sparsity:.0%} sparsity, {config.epochs} fine-tuning "
                "epoch(s)" + (" distilled from the teacher" if config.use_teacher else ""))
    distribution, teacher = context.distribution, context.teacher(config.use_teacher)
    with distribution.scope():
      model = distribution.in_scope(context.current_model())
      if teacher is not None:
        teacher = dataclasses.replace(teacher, model=distribution.in_scope(teacher.model))
      result = prune.prune(model, context.dataset, context.per_replica(config),
                           teacher=teacher, fits=context.fits)
    for entry in result.layers:
      context.log(f"  {entry.layer}/{entry.weight} {entry.shape}: "
                  f"{entry.sparsity:.1%} zeros")
    return StageOutput(
        models=[NewModel(context.current.then("pruned", "pruned",
                                              sparsity=config.target_sparsity),
                         distribution.plain(result.model))],
        record={"layers": [dict(dataclasses.asdict(entry), sparsity=entry.sparsity)
                           for entry in result.layers]})

  def summarize(self, record, context):
    return {"layer_sparsity": record["layers"]}

  def report_section(self, report):
    if not report.layer_sparsity:
      return []
    lines = ["", "## Pruned weights (measured after strip_pruning)", "",
             "| layer | weight | shape | sparsity |", "|---|---|---|---|"]
    return lines + [f"| {entry['layer']} | {entry['weight']} | {tuple(entry['shape'])} "
                    f"| {100 * entry['sparsity']:.1f} % |"
                    for entry in report.layer_sparsity]


STAGE = PruneStage()
