"""The main job: train a teacher, distill a student, prune it, convert, measure.

    python -m tfopt.pipeline --dataset mnist [--data_dir DIR] [--quick]

`run(config)` is the library entry point; the CLI below only turns flags into
a PipelineConfig. Stages run in order and share one RunState; each writes its
artifacts atomically into the output directory and lists them in manifest.json.
"""

import dataclasses
import os
import time

if __name__ == "__main__":
  # The CLI keeps TensorFlow's C++ info/warning lines out of the user's
  # terminal (errors still show); library users keep their own setting.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from typing import Dict, List, Optional

import numpy as np

from tfopt import artifacts, convert, evaluate, models, report, train
from tfopt._keras import keras
from tfopt.config import PipelineConfig, TrainConfig
from tfopt.data import Dataset, load_dataset
from tfopt.distill import distill
from tfopt.errors import TfoptError
from tfopt.macs import count_macs
from tfopt.prune import PruneResult, prune

__all__ = ["OutputDirError", "RunState", "run", "stages_for"]


class OutputDirError(TfoptError, ValueError):
  """The output directory cannot be used without risking a user's files."""


def log(message: str):
  print(f"[tfopt] {message}", flush=True)


@dataclasses.dataclass
class RunState:
  """What the stages hand each other during one run."""
  config: PipelineConfig
  dataset: Dataset
  output_dir: str
  manifest: artifacts.Manifest
  keras_models: Dict[str, keras.Model] = dataclasses.field(default_factory=dict)
  tflite_files: Dict[str, tuple] = dataclasses.field(default_factory=dict)
  prune_result: Optional[PruneResult] = None
  keras_top1: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  student_initial_weights: Optional[list] = None
  rows: List[report.ModelRow] = dataclasses.field(default_factory=list)
  stage_seconds: Dict[str, float] = dataclasses.field(default_factory=dict)

  def path(self, filename: str) -> str:
    return os.path.join(self.output_dir, filename)

  def build(self, builder: str) -> keras.Model:
    """A fresh model from `builder`, shaped for this run's data."""
    return models.build_model(builder, self.dataset.input_shape,
                              self.dataset.num_classes)

  def save_keras(self, stage: str, name: str, model: keras.Model):
    self.keras_models[name] = model
    path = artifacts.save_keras_atomic(model, self.path(f"{name}.keras"))
    self.manifest.record(stage, path)


def check_output_dir(output_dir: str):
  """Refuses a directory holding files that an earlier tfopt run did not write.

  Raises:
    OutputDirError: the path is a file, or the directory has foreign files.
  """
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise OutputDirError(f"--output_dir {output_dir!r} is a file; give a "
                         "directory path.")
  if not os.path.isdir(output_dir):
    return
  if not os.access(output_dir, os.W_OK | os.X_OK):
    raise OutputDirError(f"Output directory {output_dir!r} is not writable; "
                         "choose another --output_dir.")
  manifest = artifacts.Manifest(output_dir)
  foreign = sorted(name for name in os.listdir(output_dir)
                   if name != artifacts.Manifest.FILENAME
                   and not manifest.owns(name))
  if foreign:
    shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
    raise OutputDirError(
        f"Output directory {output_dir!r} holds files tfopt did not write "
        f"({shown}); tfopt never overwrites them. Choose a new --output_dir "
        "or move those files away.")


# --- stages -----------------------------------------------------------------

def train_teacher(state: RunState):
  config = state.config.teacher
  log(f"teacher: training {config.builder!r} for {config.epochs} epoch(s) on "
      f"{len(state.dataset.x_train)} images")
  model = state.build(config.builder)
  train.train_classifier(model, state.dataset, config)
  state.save_keras("teacher", "teacher", model)


def distill_student(state: RunState):
  config = state.config.distill
  log(f"distill: student {config.builder!r}, {config.epochs} epoch(s), "
      f"temperature {config.temperature}, alpha {config.alpha}")
  student = state.build(config.builder)
  state.student_initial_weights = student.get_weights()
  distill(state.keras_models["teacher"], student, state.dataset, config)
  state.save_keras("distill", "student_distilled", student)


def train_scratch_student(state: RunState):
  config = state.config.distill
  log(f"scratch: the same student, same initial weights, trained from labels "
      f"only for {config.epochs} epoch(s) (control for distillation)")
  student = state.build(config.builder)
  student.set_weights(state.student_initial_weights)
  train.train_classifier(student, state.dataset, TrainConfig(
      config.builder, config.epochs, config.batch_size, config.learning_rate))
  state.save_keras("scratch", "student_scratch", student)


def prune_student(state: RunState):
  config = state.config.prune
  log(f"prune: magnitude pruning to {config.target_sparsity:.0%} sparsity, "
      f"{config.epochs} fine-tuning epoch(s)"
      + (" distilled from the teacher" if config.use_teacher else ""))
  teacher = state.keras_models["teacher"] if config.use_teacher else None
  result = prune(state.keras_models["student_distilled"], state.dataset, config,
                 teacher=teacher, alpha=state.config.distill.alpha,
                 temperature=state.config.distill.temperature)
  for entry in result.layers:
    log(f"  {entry.layer}/{entry.weight} {entry.shape}: {entry.sparsity:.1%} zeros")
  state.prune_result = result
  state.save_keras("prune", "student_pruned", result.model)


def tflite_plan(config: PipelineConfig) -> List[tuple]:
  """(row name, file stem, Keras model name, conversion mode) to convert."""
  plan = [("baseline float32", "baseline_float32", "teacher", "float32")]
  sources = [("baseline", "baseline", "teacher"),
             ("distilled student", "student_distilled", "student_distilled"),
             ("pruned student", "student_pruned", "student_pruned")]
  if config.compare_scratch:
    sources.insert(1, ("scratch student", "student_scratch", "student_scratch"))
  modes = (["dynamic_range"] if config.convert.dynamic_range else []) + (
      ["int8"] if config.convert.int8 else [])
  for mode in modes:
    plan += [(f"{label} {mode}", f"{stem}_{mode}", model, mode)
             for label, stem, model in sources]
  return plan


def convert_models(state: RunState):
  config = state.config.convert
  for row_name, stem, model_name, mode in tflite_plan(state.config):
    log(f"convert: {model_name} -> {stem}.tflite ({mode})")
    content = convert.to_tflite(state.keras_models[model_name], mode,
                                state.dataset.x_train, config.representative_examples)
    path = artifacts.write_bytes_atomic(state.path(f"{stem}.tflite"), content)
    state.manifest.record("convert", path)
    state.tflite_files[row_name] = (path, model_name)


def _nonzero_params(model: keras.Model) -> int:
  return int(sum(np.count_nonzero(weight) for weight in model.get_weights()))


def keras_top1(state: RunState, model_name: str) -> np.ndarray:
  """Test-set predictions of a Keras model, computed once per run."""
  if model_name not in state.keras_top1:
    logits = state.keras_models[model_name].predict(
        state.dataset.x_test, batch_size=state.config.evaluate.batch_size, verbose=0)
    state.keras_top1[model_name] = np.argmax(logits, axis=-1)
  return state.keras_top1[model_name]


def evaluate_models(state: RunState):
  config, data = state.config.evaluate, state.dataset
  for row_name, (path, model_name) in state.tflite_files.items():
    model = state.keras_models[model_name]
    contents = evaluate.inspect_tflite(path)
    tflite_top1 = evaluate.top1(path, data.x_test, config.num_threads,
                                config.batch_size)
    row = report.ModelRow(
        name=row_name, path=os.path.basename(path),
        accuracy=float(np.mean(tflite_top1 == data.y_test)),
        tflite_bytes=os.path.getsize(path), gzip_bytes=artifacts.gzip_size(path),
        latency_us=evaluate.latency_us(path, data.x_test[0], config.num_threads,
                                       config.latency_warmup, config.latency_runs),
        params=int(model.count_params()), nonzero_params=_nonzero_params(model),
        macs=sum(entry.macs for entry in count_macs(model)),
        agreement=float(np.mean(tflite_top1 == keras_top1(state, model_name))),
        weight_sparsity=contents.weight_sparsity,
        input_dtype=contents.input_dtype, weight_dtypes=contents.weight_dtypes)
    log(f"evaluate: {row_name}: accuracy {row.accuracy:.2%}, {row.tflite_bytes:,} B "
        f"({row.gzip_bytes:,} B gzip), {row.latency_us:,.0f} µs")
    state.rows.append(row)


def write_report(state: RunState) -> report.Report:
  data = state.dataset
  result = report.Report(
      dataset=data.name, test_examples=len(data.x_test),
      baseline="baseline float32", models=state.rows,
      keras_accuracy={name: float(np.mean(keras_top1(state, name) == data.y_test))
                      for name in state.keras_models},
      layer_sparsity=[dict(dataclasses.asdict(entry), sparsity=entry.sparsity)
                      for entry in state.prune_result.layers]
      if state.prune_result else [],
      stages=dict(state.stage_seconds), config=state.config.to_dict(),
      machine=report.machine_info(), versions=report.versions())
  for path in result.save(state.output_dir):
    state.manifest.record("report", path)
  return result


def stages_for(config: PipelineConfig) -> List[tuple]:
  """The (name, function) stages one run executes, in order."""
  stages = [("teacher", train_teacher), ("distill", distill_student)]
  if config.compare_scratch:
    stages.append(("scratch", train_scratch_student))
  return stages + [("prune", prune_student), ("convert", convert_models),
                   ("evaluate", evaluate_models)]


def run(config: PipelineConfig) -> report.Report:
  """Runs the whole pipeline and writes its artifacts and report.

  Everything that can be checked before training (builder names, the output
  directory, the data) is checked first, so bad input fails fast and leaves
  no files behind.

  Returns:
    The Report (also written as report.json / report.md / report.png).

  Raises:
    TfoptError: bad configuration, data or output directory.
  """
  models.get_builder(config.teacher.builder)
  models.get_builder(config.distill.builder)
  check_output_dir(config.output_dir)
  started = time.perf_counter()
  dataset = load_dataset(config.data, seed=config.seed)
  log(f"data: {dataset.name} from {dataset.source}: {len(dataset.x_train)} train, "
      f"{len(dataset.x_val)} validation, {len(dataset.x_test)} test images")
  try:
    os.makedirs(config.output_dir, exist_ok=True)
  except OSError as error:
    raise OutputDirError(f"Cannot create the output directory "
                         f"{config.output_dir!r} ({error}); choose a writable "
                         "--output_dir.") from error
  state = RunState(config, dataset, config.output_dir,
                   artifacts.Manifest(config.output_dir))
  state.stage_seconds["data"] = time.perf_counter() - started
  for name, stage in stages_for(config):
    started = time.perf_counter()
    # Each stage starts from the same seed: the distilled and scratch students
    # see the same shuffles, and a stage's result does not depend on the ones
    # before it.
    keras.utils.set_random_seed(config.seed)
    stage(state)
    state.stage_seconds[name] = time.perf_counter() - started
    log(f"{name}: done in {state.stage_seconds[name]:.1f} s")
  state.stage_seconds["total"] = sum(state.stage_seconds.values())
  result = write_report(state)
  log(f"report: {os.path.join(config.output_dir, 'report.md')}")
  return result


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfopt import cli  # pylint: disable=g-import-not-at-top
  flags.adopt_module_key_flags(cli)  # so that --help lists them
  cli.run_main()
