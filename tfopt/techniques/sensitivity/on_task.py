"""Sensitivity on a task: per-layer sparsities chosen by the user's objective.

Each prunable layer (Conv2D, Dense) of the model is pruned alone to each of
`sparsities`, the others untouched, and the task's objective (its score, a
metric or the loss, with its direction: tfopt.task.objective) is measured on
the validation data. Then either each layer takes the highest sparsity whose
drop stays within `max_drop` (in the objective's own units), or
`target_sparsity` overall is spread where the curves say it costs least
(tfopt.techniques.sensitivity.algorithm). The model is pruned by that choice and, as a control,
uniformly at the same total, both fine-tuned alike on the task with the
prune stage's settings. The chosen model goes on.
"""

import dataclasses
import time
from typing import Optional, Tuple

from tfopt.core import progress
from tfopt.core._keras import keras
from tfopt.core.validate import require, require_fraction, require_positive_int
from tfopt.task.definition import TaskError
from tfopt.task.objective import Objective, judging_data, keras_value, objective_for
from tfopt.techniques.prune import algorithm as prune
from tfopt.techniques.sensitivity import algorithm as sensitivity
from tfopt.techniques.sweep.algorithm import prunable_kernels

__all__ = ["TaskSensitivityConfig", "sensitivity_stage", "scan", "check_sensitivity"]


@dataclasses.dataclass(frozen=True)
class TaskSensitivityConfig:
  """The sensitivity task stage.

  sparsities: each layer is pruned alone to each of these (in (0, 1)).
  target_sparsity: the share of all prunable weights removed, spread where
    it costs least; used when max_drop is None.
  max_drop: instead, per layer the highest sparsity whose objective drops by
    at most this, in the objective's own units (0.01 of mean IoU or AUC).
  metric: the objective: "score", "loss" or a metric key of the report
    (output/metric with several outputs); default the score, else the loss.
  higher_is_better: the metric's direction, when its name does not say it
    (names with loss/error/crossentropy are lower-is-better).
  examples: validation examples each measurement reads (None: all of them;
    without validation data, the first TRAIN_EXAMPLES training examples).
  """
  sparsities: Tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
  target_sparsity: float = 0.5
  max_drop: Optional[float] = None
  metric: Optional[str] = None
  higher_is_better: Optional[bool] = None
  examples: Optional[int] = None

  def __post_init__(self):
    require(bool(self.sparsities) and all(
        isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1
        for value in self.sparsities), "sparsities", self.sparsities, "numbers in (0, 1)")
    require_fraction("target_sparsity", self.target_sparsity, low_open=True)
    require(self.max_drop is None or (isinstance(self.max_drop, (int, float))
                                      and not isinstance(self.max_drop, bool)
                                      and self.max_drop >= 0),
            "max_drop", self.max_drop, "None or a number >= 0")
    require(self.metric is None or isinstance(self.metric, str), "metric", self.metric,
            'None, "score", "loss" or a metric name')
    require(self.higher_is_better in (None, True, False), "higher_is_better",
            self.higher_is_better, "None, True or False")
    if self.examples is not None:
      require_positive_int("examples", self.examples)


def scan(model, task, config: TaskSensitivityConfig, objective: Objective):
  """The scan's points: each layer alone at each sparsity, the objective's
  value (oriented so higher is better) and its drop."""
  data = judging_data(task, config.examples)
  return sensitivity.scan_layers(
      model, lambda scanned: keras_value(scanned, task, objective, data), config.sparsities)


def check_sensitivity(model, task, config: TaskSensitivityConfig) -> Objective:
  """The stage's objective, measured once on the model; raises TaskError
  before any work where the stage cannot run."""
  if not prunable_kernels(model):
    raise TaskError(f"sensitivity: {model.name!r} has no Conv2D or Dense kernel to prune.")
  objective = objective_for(task, config.metric, config.higher_is_better)
  try:
    keras_value(model, task, objective, judging_data(task, config.examples))
  except TaskError as error:
    raise TaskError(f"sensitivity: the objective {objective.name} cannot be measured on "
                    f"the validation data: {error} A score that holds only on the test "
                    "set (one that reads labels of its own) cannot judge models during "
                    "compression; set the stage's metric to 'loss' or one of the task's "
                    "metrics.") from error
  return objective


def sensitivity_stage(run, model, config: TaskSensitivityConfig):
  """Scans, chooses per-layer sparsities, prunes by them and uniformly."""
  started = time.perf_counter()
  # Checked in prepare (the objective measured once on the model).
  objective = objective_for(run.task, config.metric, config.higher_is_better)
  sizes = prunable_kernels(model)
  progress.log(f"sensitivity: {len(sizes)} layer(s) pruned alone to "
               + ", ".join(f"{value:.0%}" for value in config.sparsities)
               + f"; {objective.describe} on the validation data")
  points = scan(model, run.task, config, objective)
  chosen = _choose(points, sizes, config)
  total = sensitivity.overall_sparsity(chosen, sizes)
  if total == 0:
    raise TaskError(f"sensitivity: no layer stays within max_drop={config.max_drop} of "
                    f"{objective.name} at {min(config.sparsities):.0%}; raise max_drop or "
                    "add lower sparsities.")
  progress.log("sensitivity: chosen " + ", ".join(
      f"{name} {value:.0%}" for name, value in chosen.items())
               + f" -> {total:.1%} overall; uniform control at {total:.1%}")
  prune_config = run.configs["prune"]
  keras.utils.set_random_seed(run.seed)
  uniform = prune.prune(model, None, dataclasses.replace(
      prune_config, target_sparsity=total, initial_sparsity=0.0),
                        train=run.trainer(prune_config), steps_per_epoch=run.steps_per_epoch)
  keras.utils.set_random_seed(run.seed)  # the same shuffles for both
  result = prune.prune(model, None, prune_config, layer_targets=chosen,
                       train=run.trainer(prune_config), steps_per_epoch=run.steps_per_epoch)
  name = run.name("sensitivity_pruned")
  run.add(run.control_name("uniform_pruned"), uniform.model,
          {"control_of": name, "sparsity": uniform.overall_sparsity}, final=False)
  run.add(name, result.model, _record(objective, config, points, sizes, chosen, total,
                                      result, started), pruned=True)
  return result.model


def _choose(points, sizes, config: TaskSensitivityConfig):
  if config.max_drop is not None:
    return sensitivity.choose_sparsities(points, config.max_drop)
  return sensitivity.allocate_sparsity(points, sizes, config.target_sparsity)


def _record(objective, config, points, sizes, chosen, total, result, started) -> dict:
  return {
      "objective": objective.name, "higher_is_better": objective.higher_is_better,
      "max_drop": config.max_drop,
      "target_sparsity": None if config.max_drop is not None else config.target_sparsity,
      "points": [{"layer": point.layer, "sparsity": point.sparsity,
                  "value": objective.oriented(point.accuracy), "drop": point.drop}
                 for point in points],
      "layer_sizes": sizes, "chosen": chosen, "overall_sparsity": total,
      "sparsity": result.overall_sparsity, "seconds": time.perf_counter() - started}
