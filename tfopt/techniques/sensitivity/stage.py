"""sensitivity: per-layer sparsities from a sensitivity scan, against uniform.

Each prunable layer of the latest model is pruned alone to each of
--sensitivity_sparsities; the highest sparsity within --max_accuracy_drop
(or --sensitivity_target_sparsity overall, where it costs least) is chosen
per layer, and the model is pruned both ways to the same total, fine-tuned
alike (tfopt.techniques.sensitivity.algorithm). The chosen model goes on; the uniform one is the
control. Report: the scan, the choice, and both int8 files side by side.
"""

import dataclasses

from tfopt.stages.base import NewModel, Stage, StageOutput, TaskStage
from tfopt.stages.report import percent, sensitivity_table
from tfopt.techniques.sensitivity import algorithm as sensitivity
from tfopt.techniques.sensitivity.on_task import (TaskSensitivityConfig, check_sensitivity,
                                                  sensitivity_stage)

KINDS = (("uniform_pruned", "uniformly pruned"),
         ("sensitivity_pruned", "sensitivity-pruned"))


def _check_task(model, task, config: TaskSensitivityConfig, stages):
  del stages
  check_sensitivity(model, task, config)


class SensitivityStage(Stage):
  name = "sensitivity"
  on_task = TaskStage(TaskSensitivityConfig, sensitivity_stage, check=_check_task)
  settings = ("analysis.sensitivity_sparsities", "analysis.max_accuracy_drop",
              "analysis.sensitivity_target_sparsity", "prune", "distill",
              "evaluate.batch_size")
  report_fields = {"sensitivity": dict}

  def run(self, context) -> StageOutput:
    config = context.config.analysis
    context.log(
        f"sensitivity: each layer of {context.current.name} pruned alone to "
        f"{', '.join(f'{value:.0%}' for value in config.sensitivity_sparsities)}, "
        "validation accuracy; " + (
            f"budget {config.max_accuracy_drop} pp per layer"
            if config.sensitivity_target_sparsity is None else
            f"{config.sensitivity_target_sparsity:.0%} overall where it costs least"))
    result = sensitivity.sensitivity(
        context.current_model(), context.dataset, config, context.config.prune,
        teacher=context.teacher(context.config.prune.use_teacher),
        batch_size=context.config.evaluate.batch_size, seed=context.config.seed,
        fits=context.fits)
    total = result.overall_sparsity
    context.log("  chosen: " + ", ".join(f"{name} {value:.0%}"
                                         for name, value in result.chosen.items())
                + f" -> {total:.1%} of the prunable weights; uniform control at {total:.1%}")
    uniform, chosen = (context.current.then(*kind, sparsity=total) for kind in KINDS)
    record = dict(
        model=context.current.name, budget_pp=config.max_accuracy_drop,
        target_sparsity=config.sensitivity_target_sparsity,
        points=[dataclasses.asdict(point) for point in result.points],
        chosen=result.chosen, overall_sparsity=total, layer_sizes=result.layer_sizes,
        sensitivity_layers=[dataclasses.asdict(entry)
                            for entry in result.chosen_result.layers],
        uniform_layers=[dataclasses.asdict(entry) for entry in result.uniform.layers],
        models={"uniform_pruned": uniform.name, "sensitivity_pruned": chosen.name})
    return StageOutput(models=[NewModel(uniform, result.uniform.model, current=False),
                               NewModel(chosen, result.chosen_result.model)],
                       record=record)

  def summarize(self, record, context):
    """The run with its two int8 files side by side."""
    compared = {}
    for kind, model_name in record["models"].items():
      row = context.row_of(model_name)
      compared[kind] = dataclasses.asdict(row) if row else None
    return {"sensitivity": dict(record, compared=compared)}

  def report_section(self, report):
    entry = report.sensitivity
    if not entry:
      return []
    lines = ["", f"## Sensitivity-chosen vs uniform sparsity ({entry['model']})", "",
             "Each layer pruned alone, no fine-tuning: validation accuracy drop in "
             + (f"pp. Budget {entry['budget_pp']} pp per layer; the chosen sparsity "
                "is the highest within it." if entry.get("target_sparsity") is None
                else f"pp. Target {entry['target_sparsity']:.0%} overall, given to "
                "the layers where the curves say it costs least."), ""]
    lines += sensitivity_table(entry, lambda drop: f"{100 * drop:.2f}")
    lines += ["", f"Both prune {entry['overall_sparsity']:.1%} of the prunable "
              "weights and are fine-tuned alike; int8 files in LiteRT:", "",
              "| allocation | accuracy | gzip bytes | nonzero params |", "|---|---|---|---|"]
    for kind, title in (("uniform_pruned", "uniform"),
                        ("sensitivity_pruned", "sensitivity-chosen")):
      row = entry["compared"].get(kind)
      if row:
        lines.append(f"| {title} | {percent(row['accuracy'], 2)} "
                     f"| {row['gzip_bytes']:,} | {row['nonzero_params']:,} |")
    return lines


STAGE = SensitivityStage()
