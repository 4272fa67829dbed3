"""What a stage is, what it gets and what it returns.

A stage is one step of a run (train the teacher, prune, convert, ...). It
subclasses `Stage`, lives in its own module (tfopt/techniques/<name>/stage.py for a
technique, tfopt/stages/ for the run's own), and is listed
once in `tfopt.config.registry`. The runner (tfopt.run.runner) calls, in order:

  check_chain(config, before)   when the config is made: can it follow `before`?
  preflight(config, dataset, architecture)  before training: its layers exist?
  run(context) -> StageOutput   the work: the models it made, what it measured
  summarize(record, context)    after the run: its numbers for the report
  report_section(report)        its Markdown section of report.md

A stage that also compresses a user's task model (tfopt.run.task_run) says
how in `on_task`, a TaskStage: the settings it takes there, their defaults
for a trained model, its check before any training and its run.

A stage never changes shared state: it reads the Context (config, data, the
models made so far, earlier records) and returns a StageOutput; the runner
saves the models, lists every file in the manifest and keeps the record, so
that a rerun replays the stage from its record instead of running it.
"""

import dataclasses
import io
import os
import types
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from tfopt.config import PipelineConfig
from tfopt.core import artifacts, progress
from tfopt.core._keras import keras
from tfopt.data.datasets import Dataset
from tfopt.keras_io import models
from tfopt.keras_io.predict import predict_top1
from tfopt.litert import evaluate
from tfopt.stages.report import ModelRow, Report
from tfopt.techniques.distill.algorithm import Teacher
from tfopt.training.train import FitContext

__all__ = ["log", "ModelEntry", "NewModel", "StageOutput", "Context", "Stage", "TaskStage",
           "TEACHER_LOGITS_FILE"]

# The teacher's logits for the training images (see Context.teacher).
TEACHER_LOGITS_FILE = "teacher_logits.npy"


def log(message: str, **fields):
  """One progress line (see tfopt.core.progress: text or JSON)."""
  progress.log(message, **fields)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  """A Keras model a stage made: its name, its report label, its file stem.

  family: "teacher" or "student"; steps: the (name suffix, report adjective)
  of each compressing stage applied so far, in order; modes: the conversion
  modes it gets (None: the run's --quant_modes); clusters: {layer: [shared
  values, distinct kernel values in Keras]} of a clustered model; sparsity:
  the share of its prunable weights a pruning stage (prune, sensitivity, a
  search that pruned) set to zero, carried by the models made from it (None:
  never pruned). What was applied is read from these fields, not from names.
  """
  name: str
  label: str
  stem: str
  family: str = "teacher"
  steps: Tuple[Tuple[str, str], ...] = ()
  modes: Optional[Tuple[str, ...]] = None
  clusters: Optional[Dict[str, Tuple[int, int]]] = None
  sparsity: Optional[float] = None

  def then(self, suffix: str, adjective: str, **changes) -> "ModelEntry":
    """The entry of a model a compressing stage makes from this one (its
    sparsity carried over unless `changes` sets it)."""
    changes.setdefault("sparsity", self.sparsity)
    steps = self.steps + ((suffix, adjective),)
    name = "_".join([self.family] + [step[0] for step in steps])
    label = f"{', '.join(step[1] for step in steps)} {self.family}"
    return ModelEntry(name, label, name, self.family, steps, **changes)

  @property
  def pruned(self) -> bool:
    return self.sparsity is not None

  def row_name(self, mode: str) -> str:
    """The report row of its .tflite file in `mode` ("pruned student int8")."""
    return f"{self.label} {mode}"

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, value: dict) -> "ModelEntry":
    return cls(**dict(
        value, steps=tuple(tuple(step) for step in value["steps"]),
        modes=tuple(value["modes"]) if value["modes"] else None,
        clusters=({layer: tuple(pair) for layer, pair in value["clusters"].items()}
                  if value.get("clusters") else None)))


@dataclasses.dataclass
class NewModel:
  """A model a stage made. current: the next stage compresses it."""
  entry: ModelEntry
  model: keras.Model
  current: bool = True
  extension: str = ".keras"  # quantization-aware models go to .h5


@dataclasses.dataclass
class StageOutput:
  """What a stage returns; the runner saves and keeps it.

  record: JSON-able numbers the stage measured (its report section's input).
  tflite_files: report row -> (.tflite file in the output dir, Keras model).
  rows: measured report rows.
  """
  models: List[NewModel] = dataclasses.field(default_factory=list)
  record: dict = dataclasses.field(default_factory=dict)
  tflite_files: Dict[str, Tuple[str, str]] = dataclasses.field(default_factory=dict)
  rows: List[ModelRow] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Context:
  """A read-only view of the run for one stage.

  The models, entries, records, files and rows are those of the stages before
  it. Files go through `write_bytes` / `save_model`: atomic, and listed in
  the manifest under this stage.
  """
  stage: str
  config: PipelineConfig
  dataset: Dataset
  output_dir: str
  distribution: object  # tfopt.training.distribute.Distribution
  user_model: object  # tfopt.keras_io.model_io.LoadedModel, or None
  entries: Tuple[ModelEntry, ...]
  current: Optional[ModelEntry]
  records: Mapping[str, dict]
  tflite_files: Mapping[str, Tuple[str, str]]
  rows: Tuple[ModelRow, ...]
  models: Mapping[str, keras.Model]
  manifest: artifacts.Manifest
  cache: dict  # the runner's per-run cache: Keras top-1, .tflite contents
  # What the stage's fits report to (epoch checkpoints, the run's clock): pass
  # it on as `fits=` to every technique that trains (tfopt.training.train.fit).
  fits: Optional[FitContext] = None

  log = staticmethod(log)

  def path(self, filename: str) -> str:
    return os.path.join(self.output_dir, filename)

  def current_model(self) -> keras.Model:
    return self.models[self.current.name]

  def teacher(self, use_teacher: bool = True) -> Optional[Teacher]:
    """The run's teacher with distill's alpha and temperature, if `use_teacher`,
    carrying its logits for the training images (none for augmented data)."""
    if not use_teacher:
      return None
    distill = self.config.distill
    teacher = Teacher(self.models["teacher"], distill.alpha, distill.temperature)
    if "teacher_logits" not in self.cache:
      self.cache["teacher_logits"] = self._teacher_logits(teacher)
    return dataclasses.replace(teacher, train_logits=self.cache["teacher_logits"])

  def _teacher_logits(self, teacher: Teacher) -> Optional[np.ndarray]:
    """Computed once and kept in TEACHER_LOGITS_FILE, listed under the stage
    that needed them first: a rerun that keeps that stage reads them back (it
    was made from the same teacher and data, or resume would redo it)."""
    path = self.path(TEACHER_LOGITS_FILE)
    if self.manifest.owns(TEACHER_LOGITS_FILE) and not self.manifest.changed_files(
        {"files": [TEACHER_LOGITS_FILE]}):
      logits = np.load(path)
      if logits.shape == (len(self.dataset.x_train), self.dataset.num_classes):
        log(f"{self.stage}: the teacher's logits read back from {TEACHER_LOGITS_FILE}")
        return logits
    logits = teacher.with_train_logits(self.dataset,
                                       self.config.evaluate.batch_size).train_logits
    if logits is not None:
      buffer = io.BytesIO()
      np.save(buffer, logits)
      self.write_bytes(TEACHER_LOGITS_FILE, buffer.getvalue())
      log(f"{self.stage}: the teacher's logits for {len(logits):,} training images "
          f"computed once, for every distilled epoch ({TEACHER_LOGITS_FILE})")
    else:
      log(f"{self.stage}: the teacher runs on each augmented batch, as the student sees it")
    return logits

  def build(self, builder: str) -> keras.Model:
    """A fresh model from `builder`, shaped for this run's data."""
    return models.build_model(builder, self.dataset.input_shape,
                              self.dataset.num_classes)

  def per_replica(self, config):
    """`config` with the global batch: its batch_size on each replica."""
    return dataclasses.replace(
        config, batch_size=self.distribution.global_batch(config.batch_size))

  def write_bytes(self, filename: str, content: bytes) -> str:
    """Writes output_dir/filename atomically (its subfolder made) and lists it."""
    if os.path.dirname(filename):
      os.makedirs(os.path.dirname(self.path(filename)), exist_ok=True)
    path = artifacts.write_bytes_atomic(self.path(filename), content)
    self.manifest.record(self.stage, path)
    return path

  def write_arrays(self, filename: str, arrays: List[np.ndarray]) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return self.write_bytes(filename, buffer.getvalue())

  def save_model(self, filename: str, model: keras.Model) -> str:
    path = artifacts.save_keras_atomic(model, self.path(filename))
    self.manifest.record(self.stage, path)
    return path

  def entry(self, model_name: str) -> ModelEntry:
    return next(entry for entry in self.entries if entry.name == model_name)

  def row_of(self, model_name: str, mode: str = "int8") -> Optional[ModelRow]:
    """The measured row of `model_name`'s file in `mode`, or None."""
    name = self.entry(model_name).row_name(mode)
    return next((row for row in self.rows if row.name == name), None)

  def keras_top1(self, model_name: str) -> np.ndarray:
    """Test-set predictions of a Keras model, computed once per run."""
    key = ("top1", model_name)
    if key not in self.cache:
      self.cache[key] = predict_top1(self.models[model_name], self.dataset.x_test,
                                     self.config.evaluate.batch_size)
    return self.cache[key]

  def contents(self, row_name: str) -> evaluate.TFLiteContents:
    """What is inside a row's .tflite file, read once per run."""
    key = ("contents", row_name)
    if key not in self.cache:
      self.cache[key] = evaluate.inspect_tflite(self.path(self.tflite_files[row_name][0]))
    return self.cache[key]


@dataclasses.dataclass(frozen=True)
class TaskStage:
  """How a stage runs on a user's task (tfopt.compress with a loss and data).

  config_class: the settings a task run gives it (settings={name: {...}} in
    Python, the task file's `settings`, --name.field=value).
  run: fn(run, model, config) -> the compressed model, after adding it to
    the run with run.add (saved, converted, measured: tfopt.run.task_run).
  defaults: over config_class's own, for a user's trained model (gentle
    fine-tuning: few epochs, a small learning rate, no teacher).
  check: fn(model, task, config, stages) raising tfopt.task.TaskError, on
    the model as given, before any training.
  """
  config_class: type
  run: Callable
  defaults: Mapping[str, object] = dataclasses.field(default_factory=dict)
  check: Optional[Callable] = None


class Stage:
  """One pipeline stage. Subclasses set `name` and `settings` and override run().

  settings: what the stage's result depends on, as PipelineConfig section
    names ("prune") or fields ("analysis.bits"); the resume key digests them,
    so a change there redoes this stage and every later one.
  report_fields: the report.json keys the stage's summary fills, each with a
    function giving its empty value (the key is there when the stage is not).
  config_class: a stage registered from outside tfopt may bring its own
    settings, a frozen dataclass whose fields are documented in its docstring
    (`field: text`): they become the section named after the stage, in
    recipes, as --name.field=value flags and in the option reference; the
    stage reads them with `context.config.section(name)` and lists the
    section in `settings` for resume.
  on_task: how the stage runs on a user's task (a TaskStage); None: it does
    not take a task.
  """
  name: str = ""
  settings: Tuple[str, ...] = ()
  config_class: Optional[type] = None
  on_task: Optional[TaskStage] = None
  report_fields: Mapping[str, Callable[[], object]] = types.MappingProxyType({})

  def check_chain(self, config: PipelineConfig, before: Tuple[str, ...]):
    """Raises ConfigError when this stage cannot follow the stages `before`."""

  def preflight(self, config: PipelineConfig, dataset: Dataset,
                architecture: Callable[[], keras.Model]) -> Callable[[], keras.Model]:
    """Checks settings against the model this stage will see, before training.

    `architecture()` builds (once) an untrained model of the architecture the
    stage receives; returns the same for the next stage.
    """
    return architecture

  def training_epochs(self, config: PipelineConfig) -> int:
    """The epochs this stage trains (the progress estimate counts them)."""
    return 0

  def time_budget(self, config: PipelineConfig) -> Optional[float]:
    """The most seconds this stage spends, when it has a budget (the estimate's cap)."""
    return None

  def run(self, context: Context) -> StageOutput:
    raise NotImplementedError(f"stage {self.name!r} does not implement run()")

  def summarize(self, record: dict, context: Context) -> dict:
    """{report field: value} from this stage's record, once every file is measured."""
    return {}

  def report_section(self, report: Report) -> List[str]:
    """This stage's Markdown lines in report.md (none by default)."""
    return []
