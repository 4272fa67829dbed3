"""The main job: train a teacher, distill a student, prune it, convert, measure.

    python -m tfopt.pipeline --dataset mnist [--data_dir DIR] [--quick]

`run(config)` is the library entry point; the CLI below only turns flags into
a PipelineConfig. Stages run in order and share one RunState; each writes its
artifacts atomically into the output directory and lists them in manifest.json,
and a finished stage is recorded there too, so that running the same command
again keeps it (tfopt.resume). Teacher, distill and prune train under the
run's tf.distribute strategy (tfopt.distribute).
"""

import dataclasses
import io
import os
import shutil
import tempfile
import time

if __name__ == "__main__":
  # The CLI keeps TensorFlow's C++ info/warning lines out of the user's
  # terminal (errors still show); library users keep their own setting.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfopt import (artifacts, binary, bitwidth, breakdown, cluster, convert, deploy,
                   distribute, evaluate, lowrank, model_io, models, qat, report, resume, slim,
                   sweep, train)
from tfopt._keras import keras
from tfopt.config import DataConfig, PipelineConfig, TrainConfig
from tfopt.data import Dataset, load_dataset
from tfopt.distill import distill, fine_tune
from tfopt.errors import TfoptError
from tfopt.macs import count_macs
from tfopt.prune import prune

__all__ = ["OutputDirError", "RunState", "run", "stages_for"]


class OutputDirError(TfoptError, ValueError):
  """The output directory cannot be used without risking a user's files."""


def log(message: str):
  print(f"[tfopt] {message}", flush=True)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  """A Keras model a stage made: its name, its report label, its file stem.

  family: "teacher" or "student"; steps: the (name suffix, report adjective)
  of each compressing stage applied so far, in order; modes: the conversion
  modes it gets (None: the run's --quant_modes).
  """
  name: str
  label: str
  stem: str
  family: str = "teacher"
  steps: Tuple[Tuple[str, str], ...] = ()
  modes: Optional[Tuple[str, ...]] = None


@dataclasses.dataclass
class RunState:
  """What the stages hand each other during one run."""
  config: PipelineConfig
  dataset: Dataset
  output_dir: str
  manifest: artifacts.Manifest
  user_model: Optional[model_io.LoadedModel] = None
  distribution: Optional[distribute.Distribution] = None
  keras_models: Dict[str, keras.Model] = dataclasses.field(default_factory=dict)
  # Model name -> its file in the output dir (how a resumed run reloads it).
  model_files: Dict[str, str] = dataclasses.field(default_factory=dict)
  # Report row -> (.tflite file name in the output dir, Keras model name).
  tflite_files: Dict[str, tuple] = dataclasses.field(default_factory=dict)
  entries: List[ModelEntry] = dataclasses.field(default_factory=list)
  current: Optional[ModelEntry] = None
  prune_layers: List[dict] = dataclasses.field(default_factory=list)
  slim_steps: List[dict] = dataclasses.field(default_factory=list)
  slim_channels: List[dict] = dataclasses.field(default_factory=list)
  lowrank_layers: List[dict] = dataclasses.field(default_factory=list)
  # Model name -> {layer: (clusters, distinct kernel values in Keras)}.
  clustered: Dict[str, tuple] = dataclasses.field(default_factory=dict)
  weight_sharing: Dict[str, List[dict]] = dataclasses.field(default_factory=dict)
  # Row name -> what evaluate read from its file (kernels, dtypes, ops).
  contents: Dict[str, evaluate.TFLiteContents] = dataclasses.field(default_factory=dict)
  qat_runs: List[dict] = dataclasses.field(default_factory=list)
  binary: Dict[str, dict] = dataclasses.field(default_factory=dict)
  bitwidth: List[dict] = dataclasses.field(default_factory=list)
  sweep: List[dict] = dataclasses.field(default_factory=list)
  sensitivity: dict = dataclasses.field(default_factory=dict)
  latency_breakdown: Dict[str, List[dict]] = dataclasses.field(default_factory=dict)
  keras_top1: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  student_initial_weights: Optional[list] = None
  rows: List[report.ModelRow] = dataclasses.field(default_factory=list)
  stage_seconds: Dict[str, float] = dataclasses.field(default_factory=dict)
  resumed: List[str] = dataclasses.field(default_factory=list)

  def path(self, filename: str) -> str:
    return os.path.join(self.output_dir, filename)

  def build(self, builder: str) -> keras.Model:
    """A fresh model from `builder`, shaped for this run's data."""
    return models.build_model(builder, self.dataset.input_shape,
                              self.dataset.num_classes)

  def current_model(self) -> keras.Model:
    return self.keras_models[self.current.name]

  def add_model(self, stage: str, entry: ModelEntry, model: keras.Model,
                current: bool = True, extension: str = ".keras"):
    """Saves a stage's model; by default the next stage compresses it."""
    self.keras_models[entry.name] = model
    self.entries.append(entry)
    if current:
      self.current = entry
    filename = f"{entry.name}{extension}"
    self.model_files[entry.name] = filename
    self.manifest.record(stage, artifacts.save_keras_atomic(model, self.path(filename)))


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
  foreign = sorted(name for name in _files_below(output_dir)
                   if name != artifacts.Manifest.FILENAME and not manifest.owns(name)
                   and not os.path.basename(name).startswith(artifacts.TEMPORARY_PREFIX))
  if foreign:
    shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
    raise OutputDirError(
        f"Output directory {output_dir!r} holds files tfopt did not write "
        f"({shown}); tfopt never overwrites them. Choose a new --output_dir "
        "or move those files away.")


def _files_below(directory: str) -> List[str]:
  """Every file below `directory`, as "/"-separated relative paths."""
  found = []
  for root, _, files in os.walk(directory):
    relative = os.path.relpath(root, directory)
    found += [name if relative == "." else f"{relative}/{name}".replace(os.sep, "/")
              for name in files]
  return found


# --- stages -----------------------------------------------------------------

def _next_entry(state: RunState, suffix: str, adjective: str,
                modes: Optional[Tuple[str, ...]] = None) -> ModelEntry:
  """The entry of the model a compressing stage makes from the current one."""
  family, steps = state.current.family, state.current.steps + ((suffix, adjective),)
  name = "_".join([family] + [step[0] for step in steps])
  label = f"{', '.join(step[1] for step in steps)} {family}"
  return ModelEntry(name, label, name, family, steps, modes)


def _per_step(state: RunState, config):
  """`config` with the global batch: its batch_size on each replica."""
  return dataclasses.replace(
      config, batch_size=state.distribution.global_batch(config.batch_size))


def _was_pruned(entry: ModelEntry) -> bool:
  return any(suffix.endswith("pruned") for suffix, _ in entry.steps)


def _fine_tuning_teacher(state: RunState, use_teacher: bool):
  return state.keras_models["teacher"] if use_teacher else None


def train_teacher(state: RunState):
  if state.user_model is not None:
    return take_user_model(state)
  config = state.config.teacher
  log(f"teacher: training {config.builder!r} for {config.epochs} epoch(s) on "
      f"{len(state.dataset.x_train)} images")
  distribution = state.distribution
  with distribution.scope():
    model = state.build(config.builder)
    train.train_classifier(model, state.dataset, _per_step(state, config))
  state.add_model("teacher", ModelEntry("teacher", "baseline", "baseline"),
                  distribution.plain(model))


def take_user_model(state: RunState):
  """The teacher stage with --model: the user's model is the baseline."""
  loaded = state.user_model
  model, removed = model_io.logits_model(loaded.model)
  log(f"teacher: your model {state.config.model} ({loaded.source}) is the "
      "baseline, not trained" + ("; its final softmax is dropped (same "
                                 "predictions, logits out)" if removed else ""))
  state.add_model("teacher", ModelEntry("teacher", "baseline", "baseline"), model)


def distill_student(state: RunState):
  config = state.config.distill
  log(f"distill: student {config.builder!r}, {config.epochs} epoch(s), "
      f"temperature {config.temperature}, alpha {config.alpha}")
  distribution = state.distribution
  with distribution.scope():
    student = state.build(config.builder)
    state.student_initial_weights = student.get_weights()
    _save_initial_weights(state)
    distill(distribution.in_scope(state.keras_models["teacher"]), student,
            state.dataset, _per_step(state, config))
  state.add_model("distill", ModelEntry("student_distilled", "distilled student",
                                        "student_distilled", "student"),
                  distribution.plain(student))


INITIAL_WEIGHTS_FILE = "student_initial_weights.npz"


def _save_initial_weights(state: RunState):
  """The distilled student's initial weights, for the scratch control (also on resume)."""
  buffer = io.BytesIO()
  np.savez(buffer, *state.student_initial_weights)
  state.manifest.record("distill", artifacts.write_bytes_atomic(
      state.path(INITIAL_WEIGHTS_FILE), buffer.getvalue()))


def _load_initial_weights(state: RunState) -> list:
  with np.load(state.path(INITIAL_WEIGHTS_FILE), allow_pickle=False) as archive:
    return [archive[f"arr_{index}"] for index in range(len(archive.files))]


def train_scratch_student(state: RunState):
  config = state.config.distill
  log(f"scratch: the same student, same initial weights, trained from labels "
      f"only for {config.epochs} epoch(s) (control for distillation)")
  student = state.build(config.builder)
  student.set_weights(state.student_initial_weights or _load_initial_weights(state))
  train.train_classifier(student, state.dataset, TrainConfig(
      config.builder, config.epochs, config.batch_size, config.learning_rate))
  # A control, not a step of the chain: the next stage still takes the
  # distilled student.
  state.add_model("scratch", ModelEntry("student_scratch", "scratch student",
                                        "student_scratch", "student"), student,
                  current=False)


def prune_student(state: RunState):
  config = state.config.prune
  log(f"prune: magnitude pruning of {state.current.name} to "
      f"{config.target_sparsity:.0%} sparsity, {config.epochs} fine-tuning "
      "epoch(s)" + (" distilled from the teacher" if config.use_teacher else ""))
  distribution, teacher = state.distribution, _fine_tuning_teacher(state, config.use_teacher)
  with distribution.scope():
    result = prune(distribution.in_scope(state.current_model()), state.dataset,
                   _per_step(state, config),
                   teacher=teacher and distribution.in_scope(teacher),
                   alpha=state.config.distill.alpha,
                   temperature=state.config.distill.temperature)
  for entry in result.layers:
    log(f"  {entry.layer}/{entry.weight} {entry.shape}: {entry.sparsity:.1%} zeros")
  state.prune_layers = [dict(dataclasses.asdict(entry), sparsity=entry.sparsity)
                        for entry in result.layers]
  state.add_model("prune", _next_entry(state, "pruned", "pruned"),
                  distribution.plain(result.model))


def slim_model(state: RunState):
  config = state.config.slim
  log(f"slim: removing {config.rate:.0%} of the conv channels of "
      f"{state.current.name} in {config.prune_count} step(s) "
      f"({config.criterion}, {config.scope}), {config.sparsity_epochs} "
      f"sparsity epoch(s) with L1 {config.l1_strength} on BN gamma, "
      f"{config.finetune_epochs} fine-tuning epoch(s) per step")
  result = slim.slim(state.current_model(), state.dataset, config,
                     teacher=_fine_tuning_teacher(state, config.use_teacher),
                     alpha=state.config.distill.alpha,
                     temperature=state.config.distill.temperature)
  for name, reason in result.skipped.items():
    log(f"  skipped {name}: {reason}")
  entry = _next_entry(state, "slimmed", "slimmed")
  for step in result.steps:
    state.slim_steps.append(_measure_slim_step(state, entry, step))
  state.slim_channels = [
      {"layer": name, "before": before, "after": result.steps[-1].channels[name]}
      for name, before in result.channels_before.items()]
  state.add_model("slim", entry, result.model)


def _measure_slim_step(state: RunState, entry: ModelEntry, step) -> dict:
  """Converts one step's model to int8 and measures it in LiteRT."""
  config, data = state.config.evaluate, state.dataset
  path = artifacts.write_bytes_atomic(
      state.path(f"{entry.stem}_step{step.step}_int8.tflite"),
      convert.to_tflite(step.model, "int8", data.x_train,
                        state.config.convert.representative_examples))
  state.manifest.record("slim", path)
  measured = dict(
      step=step.step, rate=step.rate, channels=sum(step.channels.values()),
      params=step.params, macs=step.macs, val_accuracy=step.val_accuracy,
      accuracy=evaluate.accuracy(path, data.x_test, data.y_test,
                                 config.num_threads, config.batch_size),
      tflite_bytes=os.path.getsize(path),
      latency_us=evaluate.latency_us(path, data.x_test[0], config.num_threads,
                                     config.latency_warmup, config.latency_runs))
  log(f"  step {step.step}: {measured['channels']} channels, {step.params:,} "
      f"params, {step.macs:,} MACs, int8 accuracy {measured['accuracy']:.2%}, "
      f"{measured['tflite_bytes']:,} B, {measured['latency_us']:,.0f} µs")
  return measured


def lowrank_model(state: RunState):
  config = state.config.lowrank
  model = state.current_model()
  layer_names = (list(config.ranks) if config.ranks
                 else _lowrank_layers(model, config.layers))
  log(f"lowrank: truncated SVD of {', '.join(layer_names or ['every layer'])} "
      f"in {state.current.name}, then {config.finetune_epochs} fine-tuning "
      "epoch(s)")
  factorized, table = lowrank.apply_lowrank(
      model, energy=config.energy, param_ratio=config.param_ratio,
      ranks=config.ranks, layers=layer_names)
  if not table:
    raise lowrank.LowRankError(
        "No layer was factorized: at the chosen rank none would have fewer "
        "parameters. Lower the energy or param_ratio, or give smaller ranks.")
  before = train.accuracy(factorized, state.dataset.x_val, state.dataset.y_val)
  if config.finetune_epochs:
    fine_tune(factorized, state.dataset, config.finetune_epochs,
              config.batch_size, config.learning_rate,
              teacher=_fine_tuning_teacher(state, config.use_teacher),
              alpha=state.config.distill.alpha,
              temperature=state.config.distill.temperature)
  after = train.accuracy(factorized, state.dataset.x_val, state.dataset.y_val)
  for entry in table:
    log(f"  {entry.layer} {entry.shape}: rank {entry.rank}, "
        f"{entry.params_before:,} -> {entry.params_after:,} params "
        f"({entry.params_before / entry.params_after:.1f}x fewer), "
        f"{entry.retained_energy:.1%} energy kept")
  log(f"  validation accuracy {before:.2%} before fine-tuning, {after:.2%} after")
  state.lowrank_layers = [dict(dataclasses.asdict(entry),
                               val_accuracy_before_finetune=before,
                               val_accuracy_after_finetune=after)
                          for entry in table]
  state.add_model("lowrank", _next_entry(state, "lowrank", "low-rank"), factorized)


def cluster_model(state: RunState):
  config = state.config.cluster
  pruned = _was_pruned(state.current)
  preserve = pruned if config.preserve_sparsity is None else config.preserve_sparsity
  log(f"cluster: {config.number_of_clusters} shared values per kernel"
      + (f" ({', '.join(f'{name} {count}' for name, count in config.layer_clusters.items())})"
         if config.layer_clusters else "") + " of "
      f"{state.current.name} ({config.centroid_init} init"
      + (", zeros of the pruned model kept" if preserve else "")
      + f"), {config.epochs} fine-tuning epoch(s) of the centroids")
  result = cluster.cluster(state.current_model(), state.dataset, config,
                           preserve_sparsity=preserve,
                           teacher=_fine_tuning_teacher(state, config.use_teacher),
                           alpha=state.config.distill.alpha,
                           temperature=state.config.distill.temperature)
  for entry in result.kernels:
    log(f"  {entry.layer} {entry.shape}: {entry.distinct} distinct values, "
        f"{entry.sparsity:.1%} zeros")
  counts = sorted({kernel.clusters for kernel in result.kernels})
  entry = _next_entry(state, "clustered", f"clustered ({', '.join(map(str, counts))})")
  state.clustered[entry.name] = {kernel.layer: (kernel.clusters, kernel.distinct)
                                 for kernel in result.kernels}
  state.add_model("cluster", entry, result.model)


def qat_model(state: RunState):
  config = state.config.qat
  pruned = _was_pruned(state.current)
  clustered = state.current.name in state.clustered
  scheme = (qat.choose_scheme(pruned, clustered) if config.scheme == "auto"
            else config.scheme)
  log(f"qat: {qat.SCHEME_LABELS[scheme]} of {state.current.name}, "
      f"{config.epochs} epoch(s) at learning rate {config.learning_rate}")
  result = qat.qat(state.current_model(), state.dataset, config, scheme,
                   teacher=_fine_tuning_teacher(state, config.use_teacher),
                   alpha=state.config.distill.alpha,
                   temperature=state.config.distill.temperature)
  entry = _next_entry(state, scheme, qat.SCHEME_LABELS[scheme], modes=("int8",))
  if clustered and scheme in ("cqat", "pcqat"):
    layers = state.clustered[state.current.name]
    distinct = qat.kernel_distinct(result.model, layers)
    state.clustered[entry.name] = {layer: (clusters, distinct[layer])
                                   for layer, (clusters, _) in layers.items()}
  state.qat_runs.append(dict(
      model=entry.name, base=state.current.name, scheme=scheme,
      target_sparsity=state.config.prune.target_sparsity if pruned else None,
      clusters=(max(count for count, _ in state.clustered[state.current.name].values())
                if clustered else None)))
  state.add_model("qat", entry, result.model, extension=".h5")


def binary_model(state: RunState):
  config = state.config.binary
  label = {"bwn": "BWN", "binaryconnect": "BinaryConnect"}[config.mode]
  log(f"binary: {label} weights for "
      f"{', '.join(config.layers) if config.layers else 'every Conv2D and Dense'} "
      f"of {state.current.name}, {config.epochs} epoch(s) with the "
      "straight-through estimator")
  trainable = binary.binarize(state.current_model(), config.mode, config.layers)
  fine_tune(trainable, state.dataset, config.epochs, config.batch_size,
            config.learning_rate,
            teacher=_fine_tuning_teacher(state, config.use_teacher),
            alpha=state.config.distill.alpha,
            temperature=state.config.distill.temperature)
  entry = _next_entry(state, "binary", label)
  size = binary.effective_size(trainable)
  log(f"  {size['binary_weights']:,} binary weights, {size['scales']} scales, "
      f"{size['other_params']:,} other parameters: {size['effective_bytes']:,} B "
      "at 1 bit per binary weight")
  state.binary[entry.name] = dict(size, mode=config.mode)
  path = artifacts.save_keras_atomic(trainable, state.path(f"{entry.name}_trainable.keras"))
  state.manifest.record("binary", path)
  # What is converted and deployed: plain layers holding the binary weights.
  state.add_model("binary", entry, binary.export_binary(trainable))


def bitwidth_study(state: RunState):
  config, data = state.config.analysis, state.dataset
  log(f"bitwidth: {state.current.name}'s kernels min-max quantized to "
      f"{', '.join(map(str, config.bits))} bits ({', '.join(config.granularities)}), "
      "accuracy on the test set in Keras")
  results = bitwidth.bitwidth_study(state.current_model(), data.x_test, data.y_test,
                                    config.bits, config.granularities,
                                    state.config.evaluate.batch_size)
  for result in results:
    log(f"  {result.bits} bits {result.granularity}: {result.accuracy:.2%} "
        f"({-100 * result.accuracy_drop:+.2f} pp), weight SQNR "
        f"{result.weight_sqnr_db:.1f} dB")
  state.bitwidth = [dict(dataclasses.asdict(result), model=state.current.name)
                    for result in results]


def pruning_sweep(state: RunState):
  config, data = state.config.analysis, state.dataset
  log(f"sweep: {state.current.name} pruned at |w| < q * std(w) for "
      f"{len(config.sweep_qualities)} values of q, no fine-tuning, accuracy on "
      "the test set")
  points = sweep.threshold_sweep(state.current_model(), data.x_test, data.y_test,
                                 config.sweep_qualities,
                                 state.config.evaluate.batch_size)
  for point in points:
    log(f"  q {point.quality:.2f}: sparsity {point.sparsity:.1%}, accuracy "
        f"{point.accuracy:.2%}")
  state.sweep = [dict(dataclasses.asdict(point), model=state.current.name)
                 for point in points]


def sensitivity_prune(state: RunState):
  """Per-layer sparsities from a sensitivity scan, against uniform sparsity."""
  config, prune_config, data = state.config.analysis, state.config.prune, state.dataset
  model = state.current_model()
  log(f"sensitivity: each layer of {state.current.name} pruned alone to "
      f"{', '.join(f'{value:.0%}' for value in config.sensitivity_sparsities)}, "
      "validation accuracy; " + (
          f"budget {config.max_accuracy_drop} pp per layer"
          if config.sensitivity_target_sparsity is None else
          f"{config.sensitivity_target_sparsity:.0%} overall where it costs least"))
  points = sweep.layer_sensitivity(model, data.x_val, data.y_val,
                                   config.sensitivity_sparsities,
                                   state.config.evaluate.batch_size)
  sizes = sweep.prunable_kernels(model)
  if config.sensitivity_target_sparsity is None:
    chosen = sweep.choose_sparsities(points, config.max_accuracy_drop / 100)
  else:
    chosen = sweep.allocate_sparsity(points, sizes, config.sensitivity_target_sparsity)
  total = sweep.overall_sparsity(chosen, sizes)
  if total == 0:
    raise sweep.SweepError(
        f"No layer of {state.current.name} stays within {config.max_accuracy_drop} "
        f"pp at {min(config.sensitivity_sparsities):.0%} sparsity; raise "
        "--max_accuracy_drop or add lower --sensitivity_sparsities.")
  log("  chosen: " + ", ".join(f"{name} {value:.0%}" for name, value in chosen.items())
      + f" -> {total:.1%} of the prunable weights; uniform control at {total:.1%}")
  teacher = _fine_tuning_teacher(state, prune_config.use_teacher)
  options = dict(teacher=teacher, alpha=state.config.distill.alpha,
                 temperature=state.config.distill.temperature)
  uniform = prune(model, data, dataclasses.replace(
      prune_config, target_sparsity=total, initial_sparsity=0.0), **options)
  keras.utils.set_random_seed(state.config.seed)  # same shuffles for both
  chosen_result = prune(model, data, prune_config, layer_targets=chosen, **options)
  state.sensitivity = dict(
      model=state.current.name, budget_pp=config.max_accuracy_drop,
      target_sparsity=config.sensitivity_target_sparsity,
      points=[dataclasses.asdict(point) for point in points], chosen=chosen,
      overall_sparsity=total, layer_sizes=sizes,
      sensitivity_layers=[dataclasses.asdict(entry) for entry in chosen_result.layers],
      uniform_layers=[dataclasses.asdict(entry) for entry in uniform.layers])
  uniform_entry = _next_entry(state, "uniform_pruned", "uniformly pruned")
  chosen_entry = _next_entry(state, "sensitivity_pruned", "sensitivity-pruned")
  state.sensitivity["models"] = {"uniform_pruned": uniform_entry.name,
                                 "sensitivity_pruned": chosen_entry.name}
  state.add_model("sensitivity", uniform_entry, uniform.model, current=False)
  state.add_model("sensitivity", chosen_entry, chosen_result.model)


def _lowrank_layers(model: keras.Model, names) -> Optional[List[str]]:
  """The layer names to factorize; "largest_dense" picks the biggest Dense."""
  if names is None:
    return None
  resolved = []
  for name in names:
    if name == "largest_dense":
      dense = [layer for layer in model.layers
               if isinstance(layer, keras.layers.Dense)]
      if not dense:
        raise lowrank.LowRankError(f"Model {model.name!r} has no Dense layer.")
      name = max(dense, key=lambda layer: layer.count_params()).name
    resolved.append(name)
  return resolved


def tflite_plan(state: RunState) -> List[tuple]:
  """(row name, file stem, Keras model name, conversion mode) to convert.

  The baseline float32 file comes first (every ratio is against it); then
  each model in each mode, mode by mode.
  """
  plan = [("baseline float32", "baseline_float32", "teacher", "float32")]
  for mode in convert.MODES:
    plan += [(f"{entry.label} {mode}", f"{entry.stem}_{mode}", entry.name, mode)
             for entry in state.entries
             if mode in (entry.modes or state.config.convert.modes)
             and (entry.name, mode) != ("teacher", "float32")]
  return plan


def convert_models(state: RunState):
  config = state.config.convert
  for row_name, stem, model_name, mode in tflite_plan(state):
    log(f"convert: {model_name} -> {stem}.tflite ({mode})")
    content = convert.to_tflite(state.keras_models[model_name], mode,
                                state.dataset.x_train, config.representative_examples)
    path = artifacts.write_bytes_atomic(state.path(f"{stem}.tflite"), content)
    state.manifest.record("convert", path)
    state.tflite_files[row_name] = (os.path.basename(path), model_name)


# Variables of tfmot's quantize wrappers that are ranges and counters, not
# parameters of the network.
_QUANTIZER_VARIABLES = ("_min:0", "_max:0", "optimizer_step:0")


def _parameters(model: keras.Model) -> List[np.ndarray]:
  return [weight.numpy() for weight in model.weights
          if not weight.name.endswith(_QUANTIZER_VARIABLES)]


def keras_top1(state: RunState, model_name: str) -> np.ndarray:
  """Test-set predictions of a Keras model, computed once per run."""
  if model_name not in state.keras_top1:
    logits = state.keras_models[model_name].predict(
        state.dataset.x_test, batch_size=state.config.evaluate.batch_size, verbose=0)
    state.keras_top1[model_name] = np.argmax(logits, axis=-1)
  return state.keras_top1[model_name]


def evaluate_models(state: RunState):
  config, data = state.config.evaluate, state.dataset
  for row_name, (filename, model_name) in state.tflite_files.items():
    path, model = state.path(filename), state.keras_models[model_name]
    contents = state.contents[row_name] = evaluate.inspect_tflite(path)
    tflite_top1 = evaluate.top1(path, data.x_test, config.num_threads,
                                config.batch_size)
    row = report.ModelRow(
        name=row_name, path=os.path.basename(path),
        accuracy=float(np.mean(tflite_top1 == data.y_test)),
        tflite_bytes=os.path.getsize(path), gzip_bytes=artifacts.gzip_size(path),
        latency_us=evaluate.latency_us(path, data.x_test[0], config.num_threads,
                                       config.latency_warmup, config.latency_runs),
        params=int(sum(weight.size for weight in _parameters(model))),
        nonzero_params=int(sum(np.count_nonzero(weight) for weight in _parameters(model))),
        macs=sum(entry.macs for entry in count_macs(model)),
        agreement=float(np.mean(tflite_top1 == keras_top1(state, model_name))),
        weight_sparsity=contents.weight_sparsity,
        input_dtype=contents.input_dtype, weight_dtypes=contents.weight_dtypes)
    log(f"evaluate: {row_name}: accuracy {row.accuracy:.2%}, {row.tflite_bytes:,} B "
        f"({row.gzip_bytes:,} B gzip), {row.latency_us:,.0f} µs")
    state.rows.append(row)
    if model_name in state.clustered:
      state.weight_sharing[row_name] = _weight_sharing_check(
          state.clustered[model_name], contents)
    wrapped = any(isinstance(layer, keras.layers.Wrapper) for layer in model.layers)
    if config.latency_breakdown and row_name.endswith(" int8") and not wrapped:
      state.latency_breakdown[row_name] = _breakdown(state, model)


def _weight_sharing_check(clustered: Dict[str, tuple], contents) -> List[dict]:
  """Per clustered kernel: distinct values in Keras and read back from the file.

  `clustered` is {layer: (clusters, distinct values in Keras)}; the check in
  the file is per output channel (see evaluate.KernelStats).
  """
  checks = []
  for layer, (clusters, distinct) in clustered.items():
    kernel = _file_kernel(contents, layer)
    checks.append(dict(
        layer=layer, clusters=clusters, keras_distinct=distinct,
        tflite_dtype=kernel.dtype if kernel else None,
        tflite_max_distinct_per_channel=(kernel.max_distinct_per_channel
                                         if kernel else None),
        tflite_distinct=kernel.distinct if kernel else None,
        tflite_sparsity=kernel.sparsity if kernel else None,
        holds=bool(kernel) and kernel.max_distinct_per_channel <= clusters))
  return checks


def _file_kernel(contents, layer: str):
  """The .tflite weight tensor that holds Keras layer `layer`'s kernel."""
  for kernel in contents.kernels:
    parts = set(kernel.name.replace(";", "/").split("/"))
    if layer in parts or f"quant_{layer}" in parts:
      return kernel
  return None


def _breakdown(state: RunState, model: keras.Model) -> List[dict]:
  config = state.config.evaluate
  segments = breakdown.latency_breakdown(
      model, "int8", state.dataset.x_train,
      state.config.convert.representative_examples, config.num_threads,
      config.latency_warmup, config.latency_runs)
  return [dataclasses.asdict(segment) for segment in segments]


def _row_of(state: RunState, model_name: str, mode: str = "int8"):
  """The measured row of `model_name`'s file in `mode`, or None."""
  label = next(entry.label for entry in state.entries if entry.name == model_name)
  return next((row for row in state.rows if row.name == f"{label} {mode}"), None)


def _qat_summary(state: RunState) -> List[dict]:
  """Each QAT model against the float and post-training int8 of its base."""
  data = state.dataset
  summary = []
  for run in state.qat_runs:
    base_int8 = _row_of(state, run["base"])
    qat_row = _row_of(state, run["model"])
    sharing = state.weight_sharing.get(qat_row.name if qat_row else "", [])
    summary.append(dict(
        run, row=qat_row.name if qat_row else None,
        base_keras_accuracy=float(np.mean(keras_top1(state, run["base"]) == data.y_test)),
        base_int8_accuracy=base_int8.accuracy if base_int8 else None,
        qat_int8_accuracy=qat_row.accuracy if qat_row else None,
        file_sparsity=qat_row.weight_sparsity if qat_row else None,
        max_distinct_per_channel=max((kernel["tflite_max_distinct_per_channel"] or 0
                                      for kernel in sharing), default=None)))
  return summary


def _binary_summary(state: RunState) -> List[dict]:
  """Each binary model: effective 1-bit size beside its real files."""
  summary = []
  for name, size in state.binary.items():
    files = [row for row in (_row_of(state, name, mode) for mode in convert.MODES)
             if row is not None]
    summary.append(dict(size, model=name, files=[
        dict(row=row.name, accuracy=row.accuracy, tflite_bytes=row.tflite_bytes,
             gzip_bytes=row.gzip_bytes,
             max_distinct_per_channel=max(
                 kernel.max_distinct_per_channel
                 for kernel in state.contents[row.name].kernels))
        for row in files]))
  return summary


def _sensitivity_summary(state: RunState) -> dict:
  """The sensitivity run with its two int8 files side by side."""
  if not state.sensitivity:
    return {}
  compared = {}
  for kind, model_name in state.sensitivity["models"].items():
    row = _row_of(state, model_name)
    compared[kind] = dataclasses.asdict(row) if row else None
  return dict(state.sensitivity, compared=compared)


def write_deploy_bundle(state: RunState):
  """deploy/: the final model's file in the most deployable mode there is."""
  row = next(row for row in (_row_of(state, state.current.name, mode)
                             for mode in deploy.PREFERRED_MODES) if row is not None)
  paths = deploy.write_bundle(state.output_dir, state.path(row.path),
                              dataclasses.asdict(row), state.dataset.class_names,
                              state.dataset.name, state.dataset.input_range)
  for path in paths:
    state.manifest.record("deploy", path)
  log(f"deploy: {row.name} -> {os.path.join(state.output_dir, deploy.DIRECTORY)}/")


def _baseline_source(state: RunState) -> str:
  if state.user_model is None:
    config = state.config.teacher
    return f"the {config.builder!r} builder, trained here for {config.epochs} epoch(s)"
  return f"your model {state.config.model} ({state.user_model.source}), not retrained"


def write_report(state: RunState) -> report.Report:
  data = state.dataset
  result = report.Report(
      dataset=data.name, test_examples=len(data.x_test),
      baseline="baseline float32", models=state.rows,
      baseline_source=_baseline_source(state),
      data_source=(f"{data.source}, {len(data.x_train)} train / {len(data.x_val)} "
                   f"validation / {len(data.x_test)} test images, "
                   f"{'x'.join(map(str, data.input_shape))}, pixels 0..255 -> "
                   f"{data.input_range[0]:g}..{data.input_range[1]:g}"),
      keras_accuracy={name: float(np.mean(keras_top1(state, name) == data.y_test))
                      for name in state.keras_models},
      layer_sparsity=state.prune_layers,
      slim_steps=state.slim_steps,
      slim_channels=state.slim_channels, lowrank_layers=state.lowrank_layers,
      weight_sharing=state.weight_sharing, qat=_qat_summary(state),
      binary=_binary_summary(state), bitwidth=state.bitwidth, sweep=state.sweep,
      sensitivity=_sensitivity_summary(state),
      latency_breakdown=state.latency_breakdown,
      stages=dict(state.stage_seconds), resumed_stages=list(state.resumed),
      config=state.config.to_dict(),
      machine=report.machine_info(), versions=report.versions())
  for path in result.save(state.output_dir):
    state.manifest.record("report", path)
  return result


_STAGE_FUNCTIONS = {"teacher": train_teacher, "distill": distill_student,
                    "scratch": train_scratch_student, "prune": prune_student,
                    "slim": slim_model, "lowrank": lowrank_model,
                    "cluster": cluster_model, "qat": qat_model,
                    "binary": binary_model, "sensitivity": sensitivity_prune,
                    "bitwidth": bitwidth_study, "sweep": pruning_sweep}


def stages_for(config: PipelineConfig) -> List[tuple]:
  """The (name, function) stages one run executes, in order."""
  return [(name, _STAGE_FUNCTIONS[name]) for name in config.stage_list()] + [
      ("convert", convert_models), ("evaluate", evaluate_models)]


def check_stage_layers(config: PipelineConfig, dataset: Dataset,
                       user_model: Optional[keras.Model] = None):
  """Checks layer names given to slim / lowrank before any training.

  Each is checked on the architecture the stage will see (the teacher's, or
  the user's model, or the student's after distill); the stages in between
  keep layer names.

  Raises:
    SlimError / LowRankError: a name that the stage would refuse.
  """
  builder = user_model or config.teacher.builder
  for stage in config.stage_list():
    builder = config.distill.builder if stage == "distill" else builder
    names = {"slim": config.slim.layers, "cluster": config.cluster.layers,
             "binary": config.binary.layers,
             "lowrank": list(config.lowrank.ranks or ()) or [
                 name for name in (config.lowrank.layers or ())
                 if name != "largest_dense"]}.get(stage)
    if not names and stage != "cluster":
      continue
    model = (builder if isinstance(builder, keras.Model) else
             models.build_model(builder, dataset.input_shape, dataset.num_classes))
    if stage == "slim":
      slim.prunable_convs(model, config.slim.criterion, names)
    elif stage == "cluster":
      cluster.check_layers(model, config.cluster.number_of_clusters, names,
                           config.cluster.layer_clusters)
    elif stage == "binary":
      binary.binarizable_layers(model, names)
    else:
      lowrank.check_layers(model, names)


def data_for_model(data: DataConfig, model: keras.Model) -> DataConfig:
  """The data settings a given model asks for, where the user gave none.

  Image size and color mode come from the model's input (they matter for
  image folders; arrays are checked against them after loading); the input
  range is (0, 255) when the model starts with Rescaling, else (0, 1).

  Raises:
    ModelLoadError: the model is not an image classifier tfopt can feed.
  """
  height, width, channels = model_io.image_input_shape(model)
  changes = {}
  if data.dataset == "folder":
    if data.image_size is None and height and width:
      changes["image_size"] = (int(height), int(width))
    if data.color_mode is None:
      changes["color_mode"] = "grayscale" if channels == 1 else "rgb"
  if data.input_range is None:
    detected = model_io.input_range_of(model)
    changes["input_range"] = detected or (0.0, 1.0)
    log("data: the model starts with Rescaling, so it is fed raw pixels 0..255"
        if detected else "data: the model has no Rescaling at its input, so "
        "pixels are scaled to 0..1; give --input_range if it expects another "
        "range (e.g. -1,1)")
  return dataclasses.replace(data, **changes)


def check_model_fits_data(loaded: model_io.LoadedModel, dataset: Dataset):
  """The user's model takes the data's images and has one output per class.

  A Keras 3 rebuild is also checked against the original on test images.

  Raises:
    ModelLoadError: naming the mismatch and what to do.
  """
  model = loaded.model
  expected = tuple(model.inputs[0].shape[1:])
  if any(want not in (None, have) for want, have in zip(expected, dataset.input_shape)):
    raise model_io.ModelLoadError(
        f"The model takes {_shape_text(expected)} images but {dataset.name} "
        f"images are {_shape_text(dataset.input_shape)}; give data of the "
        "model's size" + (" (--image_size, --color_mode)" if dataset.name == "folder"
                          else "") + ", or a model made for this data.")
  classes = model.outputs[0].shape[-1]
  if classes != dataset.num_classes:
    raise model_io.ModelLoadError(
        f"The model has {classes} outputs but the data has {dataset.num_classes} "
        f"classes ({', '.join(dataset.class_names[:5])}"
        f"{' ...' if dataset.num_classes > 5 else ''}); give the labels file "
        "the model was trained with (one class per output, in order).")
  if loaded.original is not None:
    difference = model_io.outputs_match(loaded.original, model, dataset.x_test[:64])
    log(f"teacher: the Keras 2 rebuild matches the Keras 3 model on 64 test "
        f"images (max output difference {difference:.1e})")


def _shape_text(shape) -> str:
  return "x".join("?" if size is None else str(size) for size in shape)


# RunState fields a stage hands on; a finished stage keeps the ones it changed
# in the manifest, and a resumed run replays them.
PERSISTED_FIELDS = ("entries", "current", "model_files", "tflite_files", "prune_layers",
                    "slim_steps", "slim_channels", "lowrank_layers", "clustered",
                    "weight_sharing", "qat_runs", "binary", "bitwidth", "sweep",
                    "sensitivity", "latency_breakdown", "rows")


def _snapshot(state: RunState) -> dict:
  return {name: resume.to_json(getattr(state, name)) for name in PERSISTED_FIELDS}


def _model_entry(value: dict) -> ModelEntry:
  return ModelEntry(**dict(value, steps=tuple(tuple(step) for step in value["steps"]),
                           modes=tuple(value["modes"]) if value["modes"] else None))


_RESTORE = {
    "entries": lambda value: [_model_entry(entry) for entry in value],
    "current": lambda value: _model_entry(value) if value else None,
    "tflite_files": lambda value: {row: tuple(pair) for row, pair in value.items()},
    "rows": lambda value: [report.ModelRow(**row) for row in value],
}


def _resume_stages(state: RunState, names: List[str], keys: List[str],
                   force: bool) -> int:
  """Replays the stages an earlier run finished with the same inputs.

  Deletes tfopt's own files that no kept stage vouches for (see
  Manifest.keep_stages), reloads the kept models, and returns how many
  leading stages were kept.
  """
  manifest = state.manifest
  kept = 0 if force else resume.kept_stage_count(manifest, names, keys, log)
  removed = manifest.keep_stages(kept)
  if removed:
    log(f"resume: removed {len(removed)} file(s) of the earlier run that this "
        "run writes anew: " + ", ".join(removed[:6]) + (" ..." if len(removed) > 6 else ""))
  for record in manifest.stages:
    for name, value in record["state"].items():
      setattr(state, name, _RESTORE.get(name, lambda plain: plain)(value))
    state.stage_seconds[record["stage"]] = record["seconds"]
    state.resumed.append(record["stage"])
  for name, filename in state.model_files.items():
    state.keras_models[name] = _load_run_model(state.path(filename),
                                               state.config.allow_unsafe_model)
  if "evaluate" in state.resumed:  # otherwise evaluate reads them itself
    state.contents = {row: evaluate.inspect_tflite(state.path(filename))
                      for row, (filename, _) in state.tflite_files.items()}
  if kept:
    log(f"resume: kept {', '.join(state.resumed)} from the earlier run in "
        f"{state.output_dir} (settings unchanged, files verified by sha256)"
        + ("" if kept < len(names) else "; nothing left to redo"))
  return kept


def _load_run_model(path: str, allow_unsafe: bool) -> keras.Model:
  """A model an earlier run saved: tf_keras .keras, or .h5 for QAT models."""
  if path.endswith(".h5"):
    with qat.quantize_scope():
      return keras.models.load_model(path, compile=False)
  return keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)


def _remove_temporaries(output_dir: str):
  """Half-written files a killed run left (never listed in the manifest)."""
  for name in _files_below(output_dir):
    if os.path.basename(name).startswith(artifacts.TEMPORARY_PREFIX):
      os.remove(os.path.join(output_dir, name))
      log(f"resume: removed {name}, a file a killed run left half-written")


def run(config: PipelineConfig, force: bool = False) -> report.Report:
  """Runs the whole pipeline and writes its artifacts and report.

  Everything that can be checked before training (builder names, the output
  directory, the data) is checked first, so bad input fails fast and leaves
  no files behind. In an output directory of an earlier run, the stages that
  finished there with the same inputs are kept (see tfopt.resume) unless
  `force`; the others are redone.

  Returns:
    The Report (also written as report.json / report.md / report.png).

  Raises:
    TfoptError: bad configuration, data or output directory.
  """
  # First: MultiWorkerMirroredStrategy must be set up before other TF work.
  distribution = distribute.Distribution(config.strategy)
  if distribution.name != "default":
    log(f"strategy: {distribution.describe()}; teacher, distill and prune "
        "train with a global batch of batch_size x "
        f"{distribution.replicas}")
  if distribution.name == "multi_worker":
    force = True  # every worker must run the same steps; see BUILD_NOTES
  if distribution.is_chief:
    return _run(config, force, distribution)
  # Another worker runs the same steps (their collectives must match) and
  # writes into a scratch directory, deleted afterwards.
  scratch = tempfile.mkdtemp(prefix="tfopt-worker-")
  try:
    return _run(dataclasses.replace(config, output_dir=scratch), force, distribution)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _run(config: PipelineConfig, force: bool,
         distribution: distribute.Distribution) -> report.Report:
  started = time.perf_counter()
  config, user_model, dataset = _check_inputs(config)
  _make_output_dir(config.output_dir)
  state = RunState(config, dataset, config.output_dir,
                   artifacts.Manifest(config.output_dir), user_model, distribution)
  plan = stages_for(config)
  names = [name for name, _ in plan]
  keys = resume.stage_keys(
      config, names, resume.data_fingerprint(dataset),
      resume.model_fingerprint(user_model.model) if user_model else None,
      distribution.replicas)
  state.stage_seconds["data"] = time.perf_counter() - started
  kept = _resume_stages(state, names, keys, force)
  for (name, stage), key in zip(plan[kept:], keys[kept:]):
    started = time.perf_counter()
    before = _snapshot(state)
    # Each stage starts from the same seed: the distilled and scratch students
    # see the same shuffles, and a stage's result does not depend on the ones
    # before it (nor on whether they ran or were resumed).
    keras.utils.set_random_seed(config.seed)
    stage(state)
    state.stage_seconds[name] = time.perf_counter() - started
    state.manifest.finish(name, key, resume.changed_fields(before, _snapshot(state)),
                          state.stage_seconds[name])
    log(f"{name}: done in {state.stage_seconds[name]:.1f} s")
  state.stage_seconds["total"] = sum(state.stage_seconds.values())
  result = write_report(state)
  write_deploy_bundle(state)
  log(f"report: {os.path.join(config.output_dir, 'report.md')}")
  return result


def _check_inputs(config: PipelineConfig):
  """Checks names, the output dir, the model and the data before any training.

  Returns:
    (config with the data settings the model asks for, the user's model or
    None, the Dataset).
  """
  if config.model is None:
    models.get_builder(config.teacher.builder)
  if "distill" in config.stages:
    models.get_builder(config.distill.builder)
  check_output_dir(config.output_dir)
  user_model = None
  if config.model is not None:
    user_model = model_io.read_model(config.model, config.allow_unsafe_model)
    config = dataclasses.replace(config, data=data_for_model(config.data,
                                                            user_model.model))
  dataset = load_dataset(config.data, seed=config.seed)
  log(f"data: {dataset.name} from {dataset.source}: {len(dataset.x_train)} train, "
      f"{len(dataset.x_val)} validation, {len(dataset.x_test)} test images, "
      f"{'x'.join(map(str, dataset.input_shape))}, pixels 0..255 -> "
      f"{dataset.input_range[0]:g}..{dataset.input_range[1]:g}")
  if user_model is not None:
    check_model_fits_data(user_model, dataset)
  check_stage_layers(config, dataset, user_model.model if user_model else None)
  return config, user_model, dataset


def _make_output_dir(output_dir: str):
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as error:
    raise OutputDirError(f"Cannot create the output directory "
                         f"{output_dir!r} ({error}); choose a writable "
                         "--output_dir.") from error
  _remove_temporaries(output_dir)


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfopt import cli  # pylint: disable=g-import-not-at-top
  flags.adopt_module_key_flags(cli)  # so that --help lists them
  cli.run_main()
