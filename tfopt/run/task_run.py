"""Compressing any one-input Keras model on the user's own task.

    report = tfopt.compress(model, train=train_ds, val=val_ds, test=test_ds,
                            loss="mse", metrics=["mae"], stages=["prune"],
                            output_dir="runs/mine")

The model (a Keras 3 or Keras 2 object, or a file) is measured as given and
after each stage, every .tflite file in LiteRT on the test data with the
user's loss, metrics and score (tfopt.task.measure). Everything is checked
before any training or file is written: the data against the model's
outputs, the loss and metrics, the stages and modes.

Stages (task_stages(): each registered stage with an `on_task`, a
tfopt.stages.base.TaskStage, in its technique's stage.py) run in the order
given, each compressing the model before it, trained on the task's data with
its loss; sensitivity and search choose by the task's objective
(tfopt/techniques/<name>/on_task.py). The others are refused by name before
any work. tfopt.task.model loads the model, tfopt.task.report writes the
report.
"""

import contextlib
import dataclasses
import json
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfopt.config import registry
from tfopt.core import artifacts, progress
from tfopt.core._keras import keras
from tfopt.keras_io import model_io
from tfopt.keras_io.keras3 import output_keys
from tfopt.litert import convert, evaluate
from tfopt.run import deploy, preflight
from tfopt.stages.base import TaskStage
from tfopt.task import measure as task_measure
from tfopt.task.definition import Task, TaskError, make_task
from tfopt.task.model import is_keras3, loaded, source_of
from tfopt.task.report import TaskReport, render_markdown, row_text
from tfopt.techniques.distill.on_task import TaskDistillConfig, TaskDistiller, distill_losses

__all__ = ["task_stages", "TASK_MODES", "compress", "prepare", "Prepared"]

TASK_MODES = ("float32", "float16", "dynamic_range", "int8", "int16x8", "int4", "dynamic_int4")
REPORT_FILES = ("task_report.json", "task_report.md")


def compress(model, train, test, val=None, loss=None, metrics=None, score=None,
             score_name: Optional[str] = None, higher_is_better: bool = True,
             distill_loss=None, stages: Sequence[str] = ("prune",),
             settings: Optional[dict] = None,
             quant_modes: Sequence[str] = ("float32", "int8"),
             output_dir: str = "runs/task", batch_size: int = 32,
             calibration_count: int = 200, num_threads: int = 1, seed: int = 0,
             allow_unsafe_model: bool = False) -> TaskReport:
  """Compresses `model` on the user's task; writes files, report and deploy/.

  Args:
    model: a Keras 3 or tf_keras model, or a .keras / .h5 file / SavedModel.
    train, val, test: see tfopt.task.definition (tf.data, numpy tuples, PyDataset).
    loss, metrics, score, score_name, higher_is_better: see tfopt.task.definition.
    distill_loss: fn(teacher_output, student_output), or a dict per output,
      for distillation where the default per output does not fit
      (tfopt.techniques.distill.on_task).
    stages: of task_stages(), in order; each compresses the model before it.
    settings: {stage: {setting: value}} over the stage's task defaults, as
      its config takes them (TaskStage: PruneConfig, SlimConfig,
      TaskSearchConfig ...; docs/reference/options.md lists them).
    quant_modes: the .tflite files made of every model (TASK_MODES).
    output_dir: where models, files and the report go (never a user's files).
    batch_size: batches for unbatched data.
    calibration_count: training examples that calibrate int8 ranges.

  Raises:
    TfoptError: bad input, before any training and with nothing written.
  """
  started = time.perf_counter()
  with _reading_errors():
    ready = prepare(model, train, test, val, loss, metrics, score, score_name,
                    higher_is_better, distill_loss, stages, settings, quant_modes,
                    batch_size, allow_unsafe_model)
  task, configs = ready.task, ready.configs
  progress.log(f"task: {len(task.outputs)} output(s): "
               + ", ".join(output.describe for output in task.outputs))
  preflight.check_output_dir(output_dir)
  preflight.make_output_dir(output_dir)
  with preflight.output_dir_lock(output_dir), _reading_errors():
    preflight.remove_half_written(output_dir)
    run = _TaskRun(task, output_dir, quant_modes, calibration_count, num_threads)
    run.teacher = _Teacher(ready.model, ready.teacher_losses, configs["distill"])
    run.seed, run.configs = seed, configs
    keras.utils.set_random_seed(seed)
    run.add("baseline", ready.model, {"source": source_of(model)})
    current = ready.model
    for stage in stages:
      keras.utils.set_random_seed(seed)
      current = ready.hooks[stage].run(run, current, configs[stage])
    run.seconds["total"] = time.perf_counter() - started
    return run.finish()


@dataclasses.dataclass
class Prepared:
  """A task run's inputs, checked: the tf_keras model, the task, each stage's
  config, and the distillation loss per output."""
  model: object
  task: Task
  configs: dict
  teacher_losses: list
  hooks: Dict[str, TaskStage]  # task_stages() when it was prepared


def prepare(model, train, test, val=None, loss=None, metrics=None, score=None,
            score_name=None, higher_is_better=True, distill_loss=None,
            stages: Sequence[str] = ("prune",), settings: Optional[dict] = None,
            quant_modes: Sequence[str] = ("float32", "int8"), batch_size: int = 32,
            allow_unsafe_model: bool = False) -> Prepared:
  """Everything compress checks before it writes or trains (see compress).

  Raises:
    TfoptError: what is wrong, and what to do.
  """
  hooks = task_stages()
  configs = _stage_configs(stages, settings or {}, hooks)
  _check_modes(quant_modes)
  keras_model, original, compiled = loaded(model, allow_unsafe_model)
  convert.check_modes(keras_model, quant_modes)
  names = output_keys(original) if is_keras3(original) else None
  task = make_task(keras_model, train, test, val, loss, metrics, score, score_name,
                   higher_is_better, batch_size, names, compiled)
  if original is not None:  # a rebuild (Keras 3, nested models) on real inputs
    model_io.outputs_match(original, keras_model, next(iter(task.test))[0].numpy())
  for stage in stages:  # what each stage can check before any training
    if hooks[stage].check is not None:
      hooks[stage].check(keras_model, task, configs[stage], tuple(stages))
  return Prepared(keras_model, task, configs, distill_losses(
      task, keras_model, configs["distill"].temperature, distill_loss), hooks)


@contextlib.contextmanager
def _reading_errors():
  """An error the user's tf.data pipeline raises while read: one TaskError."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    yield
  except tf.errors.OpError as error:
    raise TaskError(f"Reading the task's data failed: {error.message.splitlines()[0]} "
                    "Check the pipeline's functions on a few batches "
                    "(for batch in ds.take(2): ...).") from error


def task_stages() -> Dict[str, TaskStage]:
  """{stage: how it runs on a task}: every registered stage with an
  `on_task` (the built-in techniques', and one registered from outside
  tfopt), in the registry's order."""
  found = {name: getattr(registry.get(name), "on_task", None) for name in registry.names()}
  return {name: hook for name, hook in found.items() if hook is not None}


def _stage_configs(stages, settings: dict, hooks: Dict[str, TaskStage]) -> dict:
  """{stage: its config}: each stage's task defaults with the user's settings
  over them."""
  unknown = [stage for stage in stages if stage not in hooks]
  if unknown:
    raise TaskError(f"Stages {unknown} do not take a task yet; a task runs "
                    f"{', '.join(hooks)} (classifiers from tfopt's loaders run "
                    "every stage: tfopt compress --help).")
  if "qat" in stages and list(stages).index("qat") != len(stages) - 1:
    raise TaskError("qat must be the last stage: its model carries fake-quant wrappers "
                    "that the other stages cannot train through.")
  if "search" in stages and list(stages).index("search") != len(stages) - 1:
    raise TaskError("search must be the last stage: it chooses the run's final file "
                    "(and cannot go with qat).")
  if not isinstance(settings, dict) or not all(isinstance(values, dict)
                                               for values in settings.values()):
    raise TaskError(f"settings must be a dict of dicts, {{stage: {{setting: value}}}}, "
                    f"e.g. {{'prune': {{'target_sparsity': 0.6}}}}; got {settings!r:.80}.")
  extra = [name for name in settings if name not in hooks]
  if extra:
    raise TaskError(f"settings names {extra}, which are not task stages "
                    f"({', '.join(hooks)}).")
  configs = {}
  for stage, hook in hooks.items():
    values = dict(hook.defaults, **settings.get(stage, {}))
    try:
      configs[stage] = hook.config_class(**values)
    except TypeError as error:
      raise TaskError(f"settings[{stage!r}]: {error}; see "
                      f"{hook.config_class.__module__}.{hook.config_class.__name__}.") from error
  return configs


def _check_modes(quant_modes):
  modes = [mode for mode in quant_modes if mode not in TASK_MODES]
  if modes or not quant_modes:
    raise TaskError(f"Conversion modes {modes or '(none)'} are not available for a task; "
                    f"choose from {', '.join(TASK_MODES)}.")


@dataclasses.dataclass
class _Teacher:
  """The model fine-tuning distills from (the baseline), with D_o per output."""
  model: object
  losses: list
  config: TaskDistillConfig


class _TaskRun:
  """The models and files of one task run, measured as they are made."""

  def __init__(self, task: Task, output_dir: str, modes, calibration_count: int,
               num_threads: int):
    self.task, self.output_dir, self.modes = task, output_dir, tuple(modes)
    self.num_threads = num_threads
    self.manifest = artifacts.Manifest(output_dir)
    self.calibration = _calibration_inputs(task, calibration_count)
    self.steps_per_epoch = _steps_per_epoch(task.train)  # once: a stream is read to count
    self.rows: List[task_measure.Measured] = []
    self.stages: Dict[str, dict] = {}
    self.seconds: Dict[str, float] = {}
    self.final = None
    self.applied: List[str] = []  # the stages' suffixes so far: slimmed, pruned
    # Whether a stage of the chain so far pruned / clustered its model (run.add
    # sets them), read by the stages after it: cluster keeps a pruned model's
    # zeros, QAT picks PQAT / CQAT / PCQAT.
    self.pruned = self.clustered = False

  def name(self, suffix: str) -> str:
    """A compressed model's name: the stages applied, in order (slimmed_pruned)."""
    self.applied.append(suffix)
    return "_".join(self.applied)

  def control_name(self, suffix: str) -> str:
    """The name of a model made beside the chain (a control), from the same
    model as the stage's own (slimmed_uniform_pruned)."""
    return "_".join(self.applied[:-1] + [suffix])

  def add(self, name: str, model, record: dict, final: bool = True,
          extension: str = ".keras", modes: Optional[Sequence[str]] = None,
          pruned: bool = False, clustered: bool = False):
    """Saves `model`, converts it in every mode (or `modes`), measures it and
    its files; `final`: it is the chain's newest model (not a control beside
    it); `pruned` / `clustered`: the stage pruned or clustered it (typed
    facts, not read from names)."""
    started = time.perf_counter()
    self._save(name, f"{name}{extension}", lambda path: artifacts.save_keras_atomic(model, path))
    files = {}
    for mode in modes or self.modes:
      content = convert.to_tflite(model, mode, self.calibration, len(self.calibration))
      evaluate.check_runs(content, f"the {mode} file of {name}")
      files[f"{name} {mode}"] = self._save(
          name, f"{name}_{mode}.tflite",
          lambda path, content=content: artifacts.write_bytes_atomic(path, content))
    rows = task_measure.measure(model, self.task, files, f"{name} Keras",
                                self.num_threads)
    for row in rows:
      progress.log(f"{name}: {row.name}: " + row_text(row, self.task.score_name))
    self.rows += rows
    self.stages[name] = record
    self.seconds[name] = time.perf_counter() - started
    if final:
      self.final = (name, files)
      self.pruned, self.clustered = self.pruned or pruned, self.clustered or clustered

  def trainer(self, config):
    """train(model, epochs, callbacks=()) for a technique: the task's data and
    loss at the stage's learning rate, distilled from the baseline with use_teacher."""
    def train(model, epochs, callbacks=()):
      return self.fit(model, epochs, config.learning_rate, callbacks,
                       teacher=config.use_teacher)
    return train

  def fit(self, model, epochs: int, learning_rate: float, callbacks=(),
           teacher: bool = False, teacher_model=None):
    """Fits `model` in place on the task's training data: the task's loss, or
    with `teacher`, distillation from the baseline (or `teacher_model`)."""
    steps = self.steps_per_epoch * epochs
    trainer = model
    if teacher:
      trainer = TaskDistiller(model, teacher_model or self.teacher.model,
                              [_keras2_loss(self.task.losses[output.name])
                               for output in self.task.outputs],
                              self.teacher.losses, self.teacher.config.alpha)
      trainer.compile(optimizer=_optimizer(learning_rate, steps))
    else:
      _compile(model, self.task, learning_rate, steps)
    return trainer.fit(_as_keras_targets(self.task.train, self.task), epochs=epochs,
                       validation_data=_as_keras_targets(self.task.val, self.task),
                       callbacks=list(callbacks), verbose=progress.keras_verbose())

  def validation_loss(self, model) -> float:
    """The task's loss on its validation data (on its training data without)."""
    data = self.task.val if self.task.val is not None else self.task.train
    _compile(model, self.task, 1e-4, 1)  # the loss to evaluate; no training follows
    result = model.evaluate(_as_keras_targets(data, self.task), verbose=0)
    return float(result[0] if isinstance(result, list) else result)

  def _save(self, stage: str, filename: str, write) -> str:
    path = write(os.path.join(self.output_dir, filename))
    self.manifest.record(stage, path)
    return path

  def finish(self) -> TaskReport:
    report = TaskReport(self.rows, _outputs_json(self.task), self.task.score_name
                        if self.task.score else None, self.task.higher_is_better,
                        self.stages, self.output_dir, self.seconds)
    self._write_bundle()
    self._save("report", REPORT_FILES[0], lambda path: artifacts.write_text_atomic(
        path, json.dumps(report.to_json(), indent=2)))
    self._save("report", REPORT_FILES[1], lambda path: artifacts.write_text_atomic(
        path, render_markdown(report)))
    return report

  def _write_bundle(self):
    stage, files = self.final
    mode = next(mode for mode in deploy.PREFERRED_MODES if f"{stage} {mode}" in files)
    row = next(row for row in self.rows if row.name == f"{stage} {mode}")
    for path in deploy.write_task_bundle(self.output_dir, files[row.name],
                                         dataclasses.asdict(row), _outputs_json(self.task)):
      self.manifest.record("deploy", path)


def _calibration_inputs(task: Task, count: int) -> np.ndarray:
  """The first `count` training inputs (read from the stream, no more)."""
  taken, total = [], 0
  for batch in task.train:
    taken.append(batch[0].numpy()[:count - total])
    total += len(taken[-1])
    if total >= count:
      break
  if not taken:
    raise TaskError("The train data is empty; give at least one batch.")
  return np.concatenate(taken)


def _steps_per_epoch(dataset) -> int:
  """Batches per epoch: the dataset's cardinality, else counted by one read."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  steps = int(dataset.cardinality())
  if steps == tf.data.INFINITE_CARDINALITY:
    raise TaskError("The train data repeats forever; give one epoch of it (no .repeat()).")
  if steps < 0:
    steps = sum(1 for _ in dataset)
  return steps


def _as_keras_targets(dataset, task: Task):
  """(x, {output: y}[, w]) -> what tf_keras fits on: y in output order."""
  if dataset is None:
    return None
  names = [output.name for output in task.outputs]

  def ordered(x, y, *weight):
    targets = y[names[0]] if len(names) == 1 else tuple(y[name] for name in names)
    return (x, targets) + tuple(weight)
  return dataset.map(ordered)


def _optimizer(learning_rate: float, steps: int):
  """Adam, its rate decaying to zero along a cosine over the fit."""
  return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate,
                                                                       max(1, steps)))


def _compile(model, task: Task, learning_rate: float, steps: int):
  losses = [_keras2_loss(task.losses[output.name]) for output in task.outputs]
  model.compile(optimizer=_optimizer(learning_rate, steps),
                loss=losses[0] if len(losses) == 1 else losses)


def _keras2_loss(loss):
  """The user's loss (Keras 3 or a function) as tf_keras fits with it."""
  def task_loss(y_true, y_pred):
    return loss(y_true, y_pred)
  return task_loss


def _outputs_json(task: Task) -> List[dict]:
  return [{"name": output.name, "keras_name": output.keras_name, "shape": list(output.shape),
           "meaning": "class scores" if task_measure.is_class_scores(task, output.name)
           else "values", "metrics": [make().name for make in task.metrics[output.name]]}
          for output in task.outputs]


