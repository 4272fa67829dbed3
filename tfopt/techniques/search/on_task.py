"""Search on a task: the smallest (or fastest) file within a drop of the
user's objective, under a time budget.

The walk is tfopt.techniques.search.algorithm's (strided downsampling for latency, slim rates,
sparsities spread by a sensitivity scan, conversion modes, the promising
models fine-tuned longer, int4 QAT when an int4 file wins); TaskSpace trains
and measures on the task instead of a classifier's data: fine-tunes on the
task's loss, every candidate .tflite run in LiteRT on the validation data
and judged by the task's objective (its score, a metric or the loss, with
its direction: tfopt.task.objective). A candidate is feasible when its
objective is within `max_drop` of the Keras model's (in the objective's own
units; by default 1 % of the model's value). The chosen model goes on as
the run's final model, in its own conversion mode.
"""

import dataclasses
import os
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from tfopt.core import artifacts, progress
from tfopt.core.errors import TfoptError
from tfopt.core.validate import require, require_positive_int, require_positive_number
from tfopt.litert import convert, evaluate
from tfopt.task import measure as task_measure
from tfopt.task.definition import TaskError
from tfopt.task.objective import Objective, judging_data, keras_value, objective_for
from tfopt.techniques.prune.algorithm import prune
from tfopt.techniques.prune.settings import PruneConfig
from tfopt.techniques.qat.int4 import qat_int4
from tfopt.techniques.qat.settings import QatConfig
from tfopt.techniques.search import algorithm as search
from tfopt.techniques.search.settings import SEARCH_OBJECTIVES, require_search_space
from tfopt.techniques.search.space import Candidate, Spec
from tfopt.techniques.sensitivity.algorithm import allocate_sparsity, scan_layers
from tfopt.techniques.slim.algorithm import slim_with
from tfopt.techniques.slim.settings import SlimConfig
from tfopt.techniques.sweep.algorithm import prunable_kernels

__all__ = ["TaskSearchConfig", "TaskSpace", "search_stage", "check_search"]

SCAN_SPARSITIES = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)  # finer than the search's own


@dataclasses.dataclass(frozen=True)
class TaskSearchConfig:
  """The search task stage (see the module docstring).

  objective: what the search makes small: gzip bytes ("size") or batch-1
    latency in LiteRT ("latency").
  max_drop: how much of the task's objective a file may lose against the
    Keras model, in its own units (0.01 of mAP); None: 1 % of its value.
  metric / higher_is_better: the objective, as in the sensitivity stage
    ("score", "loss" or a metric key; default the score, else the loss).
  time_budget: seconds the search may spend; no fine-tune starts that would
    not end within it.
  slim_rates / sparsities / modes: the space (channels removed, then
    sparsity spread by the sensitivity curves, then the file's mode).
  finetune_epochs / learning_rate / use_teacher: each fine-tune, on the
    task's loss or distilled from the model searched from.
  examples: validation examples each measurement reads (None: all; without
    validation data, the first TRAIN_EXAMPLES training examples).
  """
  objective: str = "size"
  max_drop: Optional[float] = None
  metric: Optional[str] = None
  higher_is_better: Optional[bool] = None
  time_budget: float = 600.0
  slim_rates: Tuple[float, ...] = (0.25, 0.5)
  sparsities: Tuple[float, ...] = (0.5, 0.7, 0.9)
  modes: Tuple[str, ...] = ("int8",)
  finetune_epochs: int = 2
  learning_rate: float = 5e-4
  use_teacher: bool = False
  examples: Optional[int] = None

  def __post_init__(self):
    require(self.objective in SEARCH_OBJECTIVES, "objective", self.objective,
            "one of " + ", ".join(SEARCH_OBJECTIVES))
    require(self.max_drop is None or (isinstance(self.max_drop, (int, float))
                                      and not isinstance(self.max_drop, bool)
                                      and self.max_drop >= 0),
            "max_drop", self.max_drop, "None or a number >= 0")
    require_positive_number("time_budget", self.time_budget)
    require_search_space(self)
    require_positive_int("finetune_epochs", self.finetune_epochs)
    require_positive_number("learning_rate", self.learning_rate)
    require(isinstance(self.use_teacher, bool), "use_teacher", self.use_teacher,
            "True or False")
    if self.examples is not None:
      require_positive_int("examples", self.examples)


@dataclasses.dataclass
class TaskSpace:
  """How the search walk trains and measures on a task (see
  search_space.ClassifierSpace for the methods' contract)."""
  run: object  # the task run (tfopt.run.task_run): data, trainer, calibration
  config: TaskSearchConfig
  objective: Objective
  directory: str
  near: float
  data: object  # task_objective.judging_data: what every candidate is measured on
  failed: List[str] = dataclasses.field(default_factory=list)

  def measure(self, model, spec: Spec, seconds: float, modes=()) -> List[Candidate]:
    """The model's file in each mode, its objective on the validation data."""
    started, files, contents = time.monotonic(), {}, {}
    for mode in modes or self.config.modes:
      try:
        contents[mode] = convert.to_tflite(model, mode, self.run.calibration,
                                           len(self.run.calibration))
        evaluate.check_runs(contents[mode], f"the {mode} file of candidate {spec.stem}")
      except TfoptError as error:
        self._failed(spec, mode, error)
        continue
      files[mode] = artifacts.write_bytes_atomic(
          os.path.join(self.directory, spec.filename(mode)), contents[mode])
    if not files:
      return []
    task = self.run.task
    rows = task_measure.measure(
        model, task, files, "search", self.run.num_threads, data=self.data,
        with_score=self.objective.key == "score")[1:]
    found = []
    for mode, row in zip(files, rows):
      value = self.objective.value(row)
      found.append(Candidate.of(
          spec, mode, accuracy=self.objective.oriented(value), tflite_bytes=row.tflite_bytes,
          gzip_bytes=row.gzip_bytes, latency_us=row.latency_us, params=row.params,
          nonzero_params=row.nonzero_params, macs=row.macs or 0,
          seconds=seconds + time.monotonic() - started, content=contents[mode]))
      progress.log(f"  {spec.name}, {mode}: {self.objective.name} {value:.4g}, "
                   f"{row.gzip_bytes:,} B gzip ({row.tflite_bytes:,} B), "
                   f"{row.latency_us:,.1f} us")
    return found

  def masks(self, model, seconds: float, log) -> Dict[float, Dict[str, float]]:
    """{sparsity: per-layer sparsities}, from a scan of the task's objective."""
    sizes = prunable_kernels(model)
    if not sizes:
      return {}
    del seconds  # the scan reads `examples` validation examples per point
    points = scan_layers(model, lambda scanned: keras_value(
        scanned, self.run.task, self.objective, self.data), SCAN_SPARSITIES)
    log(f"search: scanned {len(sizes)} layer(s) of {model.name} at "
        + ", ".join(f"{value:.0%}" for value in SCAN_SPARSITIES))
    return {target: allocate_sparsity(points, sizes, target)
            for target in self.config.sparsities}

  def fine_tune(self, model, epochs: int):
    self.run.fit(model, epochs, self.config.learning_rate, teacher=self.config.use_teacher)

  def slim(self, model, rate: float, epochs: int):
    config = SlimConfig(rate=rate, prune_count=1, finetune_epochs=epochs, sparsity_epochs=0,
                        learning_rate=self.config.learning_rate,
                        use_teacher=self.config.use_teacher)
    return slim_with(model, config, self.run.trainer(config), self.run.validation_loss).model

  def prune(self, model, sparsity: float, epochs: int, layer_targets: Dict[str, float]):
    config = PruneConfig(target_sparsity=sparsity, epochs=epochs,
                         learning_rate=self.config.learning_rate,
                         use_teacher=self.config.use_teacher)
    return prune(model, None, config, layer_targets=layer_targets,
                 train=self.run.trainer(config), steps_per_epoch=self.run.steps_per_epoch).model

  def int4_qat(self, model, epochs: int, keep_zeros: bool):
    config = QatConfig(bits=4, epochs=epochs, learning_rate=self.config.learning_rate,
                       use_teacher=self.config.use_teacher)
    return qat_int4(model, None, config, keep_zeros=keep_zeros,
                    train=self.run.trainer(config)).model

  def _failed(self, spec: Spec, mode: str, error: Exception):
    reason = str(error).split(". ")[0]
    self.failed.append(f"{spec.name}, {mode}: {reason}")
    progress.log(f"  {spec.name}, {mode}: not measured: {reason}")


def check_search(model, task, config: TaskSearchConfig) -> Tuple[Objective, float]:
  """The search's objective and the Keras model's value of it (oriented);
  raises TaskError before any work where it cannot be measured."""
  objective = objective_for(task, config.metric, config.higher_is_better)
  try:
    return objective, keras_value(model, task, objective,
                                  judging_data(task, config.examples))
  except TaskError as error:
    raise TaskError(f"search: the objective {objective.name} cannot be measured on the "
                    f"validation data: {error} Set the stage's metric to 'loss' or one of "
                    "the task's metrics.") from error


def search_stage(run, model, config: TaskSearchConfig):
  """Walks the space from `model`; the chosen file's model goes on."""
  # Checked in prepare (the objective measured once on the model).
  objective = objective_for(run.task, config.metric, config.higher_is_better)
  data = judging_data(run.task, config.examples)  # the baseline and every candidate on it
  baseline = keras_value(model, run.task, objective, data)
  max_drop = config.max_drop if config.max_drop is not None else 0.01 * abs(baseline)
  floor = baseline - max_drop
  shown = objective.oriented(baseline)
  progress.log(f"search: {config.objective} within {max_drop:.4g} of the model's "
               f"{objective.describe} {shown:.4g} (validation); budget "
               f"{config.time_budget:,.0f} s")
  with tempfile.TemporaryDirectory(prefix="tfopt-task-search-") as directory:
    space = TaskSpace(run, config, objective, directory, max_drop, data)
    result = search.walk_space(model, space, config, floor, progress.log)
  chosen = result.candidates[result.chosen]
  progress.log(f"search: chose {chosen.name}: {objective.name} "
               f"{objective.oriented(chosen.accuracy):.4g}" + (
                   "" if chosen.feasible else " (none within the drop: the model as given)"))
  record = {"objective": config.objective, "metric": objective.name,
            "higher_is_better": objective.higher_is_better, "baseline": shown,
            "max_drop": max_drop, "chosen": chosen.name, "feasible": chosen.feasible,
            "candidates": [_candidate_json(candidate, objective, index, result)
                           for index, candidate in enumerate(result.candidates)],
            "skipped": result.skipped, "seconds": result.seconds}
  run.add(run.name("searched"), result.model, record, modes=(chosen.mode,),
          pruned=bool(chosen.spec.sparsity))
  return result.model


def _candidate_json(candidate: Candidate, objective: Objective, index: int, result) -> dict:
  return {"name": candidate.name, "mode": candidate.mode,
          "value": objective.oriented(candidate.accuracy), "bytes": candidate.tflite_bytes,
          "gzip_bytes": candidate.gzip_bytes, "latency_us": candidate.latency_us,
          "nonzero_params": candidate.nonzero_params, "feasible": candidate.feasible,
          "front": index in result.front, "chosen": index == result.chosen}
