"""lowrank: truncated SVD of Dense layers (and spatial SVD of Conv2D).

Each chosen layer becomes a pair of rank-r factors (r by retained energy,
a parameter ratio, or given per layer), then the model is fine-tuned
(tfopt.techniques.lowrank.algorithm). Report: per layer, its rank, energy kept, parameters before
and after, and validation accuracy before and after fine-tuning.
"""

import dataclasses
import functools
import time

from tfopt.core import progress
from tfopt.stages.base import NewModel, Stage, StageOutput, TaskStage
from tfopt.techniques.lowrank import algorithm as lowrank
from tfopt.techniques.lowrank.settings import LowRankConfig


# On a user's task (tfopt.run.task_run).
def _run_on_task(run, model, config: LowRankConfig):
  """Truncated SVD of the chosen Dense / conv kernels, fine-tuned."""
  started = time.perf_counter()
  progress.log(f"lowrank: factorizing {', '.join(config.layers or ['by rank'])}")
  result = lowrank.lowrank(model, None, config, train=run.trainer(config),
                           validate=run.validation_loss)
  run.add(run.name("factorized"), result.model, {
      "layers": {entry.layer: entry.rank for entry in result.layers},
      "validation_loss_before_finetune": result.val_accuracy_before_finetune,
      "validation_loss_after_finetune": result.val_accuracy_after_finetune,
      "seconds": time.perf_counter() - started})
  return result.model


def _check_task(model, task, config: LowRankConfig, stages):
  del task, stages
  lowrank.factorize(model, config)  # raises on a bad layer or rank


class LowRankStage(Stage):
  name = "lowrank"
  on_task = TaskStage(LowRankConfig, _run_on_task, check=_check_task, defaults={
      "finetune_epochs": 2, "learning_rate": 1e-4, "use_teacher": False})
  settings = ("lowrank", "distill")
  report_fields = {"lowrank_layers": list}

  def training_epochs(self, config):
    return config.lowrank.finetune_epochs

  def preflight(self, config, dataset, architecture):
    names = list(config.lowrank.ranks or ()) or [
        name for name in (config.lowrank.layers or ()) if name != "largest_dense"]
    if names:
      lowrank.check_layers(architecture(), names)
    return functools.lru_cache(maxsize=None)(
        lambda: _factorized_or_not(architecture(), config.lowrank))

  def run(self, context) -> StageOutput:
    config, model = context.config.lowrank, context.current_model()
    names = (list(config.ranks) if config.ranks
             else lowrank.resolve_layers(model, config.layers))
    context.log(f"lowrank: truncated SVD of {', '.join(names or ['every layer'])} "
                f"in {context.current.name}, then {config.finetune_epochs} fine-tuning "
                "epoch(s)")
    result = lowrank.lowrank(model, context.dataset, config,
                             teacher=context.teacher(config.use_teacher),
                             fits=context.fits)
    for entry in result.layers:
      context.log(f"  {entry.layer} {entry.shape}: rank {entry.rank}, "
                  f"{entry.params_before:,} -> {entry.params_after:,} params "
                  f"({entry.params_before / entry.params_after:.1f}x fewer), "
                  f"{entry.retained_energy:.1%} energy kept")
    before, after = result.val_accuracy_before_finetune, result.val_accuracy_after_finetune
    context.log(f"  validation accuracy {before:.2%} before fine-tuning, {after:.2%} after")
    layers = [dict(dataclasses.asdict(entry), val_accuracy_before_finetune=before,
                   val_accuracy_after_finetune=after) for entry in result.layers]
    return StageOutput(models=[NewModel(context.current.then("lowrank", "low-rank"),
                                        result.model)], record={"layers": layers})

  def summarize(self, record, context):
    return {"lowrank_layers": record["layers"]}

  def report_section(self, report):
    if not report.lowrank_layers:
      return []
    lines = ["", "## Low-rank layers (truncated SVD)", "",
             "| layer | shape | rank | energy kept | params before | after "
             "| × fewer | val acc before fine-tune | after |",
             "|---|---|---|---|---|---|---|---|---|"]
    return lines + [
        f"| {entry['layer']} | {tuple(entry['shape'])} | {entry['rank']} "
        f"| {100 * entry['retained_energy']:.1f} % | {entry['params_before']:,} "
        f"| {entry['params_after']:,} "
        f"| {entry['params_before'] / entry['params_after']:.1f}× "
        f"| {100 * entry['val_accuracy_before_finetune']:.2f} % "
        f"| {100 * entry['val_accuracy_after_finetune']:.2f} % |"
        for entry in report.lowrank_layers]


def _factorized_or_not(model, config):
  """What the next stages will see: the factorized model (its ranks are only
  indicative on untrained weights), or the model itself if none would be."""
  try:
    return lowrank.factorize(model, config)[0]
  except lowrank.LowRankError:
    return model


STAGE = LowRankStage()
