"""The one number that ranks a task's models: its objective.

Where a choice is made by measurement on a task (the sensitivity scan, the
search), the quality of a model is one number: the user's score on the
whole data (mAP, ROC AUC; its direction is the task's higher_is_better),
one of the user's metrics, or the loss (lower is better). Measured on the
validation data (a fixed slice of the training data when there is none),
never the test data the report gives.
"""

import dataclasses
from typing import Optional

from tfopt.task import measure as task_measure
from tfopt.task.definition import Task, TaskError

__all__ = ["Objective", "objective_for", "metric_keys", "judging_data", "keras_value",
           "LOWER_IS_BETTER", "TRAIN_EXAMPLES"]

# Without validation data, objectives are measured on this many training examples.
TRAIN_EXAMPLES = 2000
# Metric names in which lower is better (Keras' error and loss metrics).
LOWER_IS_BETTER = ("loss", "error", "crossentropy", "hinge", "poisson", "divergence",
                   "logcosh", "mse", "mae", "mape", "msle", "rmse")


@dataclasses.dataclass(frozen=True)
class Objective:
  """A task's measure of quality: `key` is "score", "loss" or a metric key
  of task_measure.Measured.metrics."""
  key: str
  name: str
  higher_is_better: bool

  def value(self, row: task_measure.Measured) -> float:
    return row.score if self.key == "score" else row.metrics[self.key]

  def oriented(self, value: float) -> float:
    """`value` signed so that higher is better (a drop is a loss of quality)."""
    return value if self.higher_is_better else -value

  @property
  def describe(self) -> str:
    return f"{self.name} ({'higher' if self.higher_is_better else 'lower'} is better)"


def objective_for(task: Task, metric: Optional[str] = None,
                  higher_is_better: Optional[bool] = None) -> Objective:
  """The objective `metric` names ("score", "loss" or a metric key); by
  default the task's score when it has one, else its loss.

  Raises:
    TaskError: `metric` is not one the task measures.
  """
  metric = metric or ("score" if task.score is not None else "loss")
  if metric == "score":
    if task.score is None:
      raise TaskError("The objective is the score, but the task has none: give score= "
                      "(a function of the whole data), or name a metric or the loss.")
    return Objective("score", task.score_name, task.higher_is_better
                     if higher_is_better is None else bool(higher_is_better))
  keys = metric_keys(task)
  if metric != "loss" and metric not in keys:
    raise TaskError(f"The objective {metric!r} is not measured by the task; choose "
                    f"score, loss or one of its metrics: {', '.join(keys) or '(none)'}.")
  if higher_is_better is None:
    higher_is_better = not any(word in metric.lower() for word in LOWER_IS_BETTER)
  return Objective(metric, metric, bool(higher_is_better))


def metric_keys(task: Task):
  """The metric keys of a task's rows (output/metric with several outputs)."""
  return [metric_name if len(task.outputs) == 1 else f"{output.name}/{metric_name}"
          for output in task.outputs
          for metric_name in (make().name for make in task.metrics[output.name])]


def judging_data(task: Task, examples: Optional[int] = None):
  """The data objectives are measured on, the same examples at every pass: the
  validation data (its first `examples`), else the first `examples`
  (TRAIN_EXAMPLES by default) of the training data, kept in memory (the
  training stream may shuffle). Build it once and pass it to keras_value."""
  if task.val is not None:
    return task.val if examples is None else _first(task.val, examples, task.batch_size)
  return _first(task.train, examples or TRAIN_EXAMPLES, task.batch_size).cache()


def _first(data, count: int, batch_size: int):
  return data.unbatch().take(count).batch(batch_size)


def keras_value(model, task: Task, objective: Objective, data) -> float:
  """The objective of a Keras model on `data` (judging_data), oriented so
  that higher is better."""
  row = task_measure.measure(model, task, {}, "the validation data", data=data,
                             with_score=objective.key == "score")[0]
  return objective.oriented(objective.value(row))
