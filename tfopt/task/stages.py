"""The stages a task runs, each a technique's own function on the task.

Each stage takes the run (tfopt.run.task_run: its data, loss, trainer and
measurements), the model so far and the stage's config; it adds the
compressed model to the run (saved, converted, measured) and returns it for
the next stage. The sensitivity and search stages are tfopt.task.sensitivity's
and tfopt.task.search's.
"""

import time

from tfopt.config import (BinaryConfig, ClusterConfig, LowRankConfig, PruneConfig, QatConfig,
                          SlimConfig, StridedConfig)
from tfopt.core import progress
from tfopt.core._keras import keras
from tfopt.keras_io.macs import total_macs
from tfopt.task.distill import TaskDistillConfig, student_of
from tfopt.task.search import search_stage
from tfopt.task.sensitivity import sensitivity_stage
from tfopt.techniques.binary import algorithm as binary
from tfopt.techniques.cluster import algorithm as cluster
from tfopt.techniques.lowrank import algorithm as lowrank
from tfopt.techniques.prune import algorithm as prune
from tfopt.techniques.qat import algorithm as qat
from tfopt.techniques.slim import algorithm as slim
from tfopt.techniques.strided import algorithm as strided

__all__ = ["STAGES"]


def prune_stage(run, model, config: PruneConfig):
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
      "sparsity": result.overall_sparsity, "seconds": time.perf_counter() - started})
  return result.model


def slim_stage(run, model, config: SlimConfig):
  """Network slimming: whole channels removed by dependency group (through
  residual adds, concatenated skips, upsampling, transposed convs and every
  head), in prune_count steps, each fine-tuned on the task."""
  started = time.perf_counter()
  progress.log(f"slim: removing {config.rate:.0%} of the channels in "
               f"{config.prune_count} step(s), {config.finetune_epochs} epoch(s) each")
  result = slim.slim_with(model, config, run.trainer(config), run.validation_loss)
  run.add(run.name("slimmed"), result.model, {
      "rate": config.rate, "criterion": config.criterion,
      "removed_channels": result.removed_fraction,
      "params": [int(model.count_params())] + [step.params for step in result.steps],
      "macs": [int(total_macs(model))] + [step.macs for step in result.steps],
      "validation_loss": [step.val_accuracy for step in result.steps],
      "groups": result.groups, "skipped": result.skipped,
      "seconds": time.perf_counter() - started})
  return result.model


def cluster_stage(run, model, config: ClusterConfig):
  """tfmot weight clustering (a pruned model keeps its zeros), fine-tuned."""
  started = time.perf_counter()
  preserve = (run.has("pruned") if config.preserve_sparsity is None
              else config.preserve_sparsity)
  progress.log(f"cluster: {config.number_of_clusters} shared values per kernel, "
               f"{config.epochs} epoch(s)")
  result = cluster.cluster(model, None, config, preserve_sparsity=preserve,
                           train=run.trainer(config))
  run.add(run.name("clustered"), result.model, {
      "clusters": config.number_of_clusters, "preserve_sparsity": preserve,
      "kernels": {entry.layer: [entry.clusters, entry.distinct] for entry in result.kernels},
      "seconds": time.perf_counter() - started})
  return result.model


def qat_stage(run, model, config: QatConfig):
  """Quantization-aware training (PQAT / CQAT / PCQAT after prune and
  cluster, so their zeros and shared values survive); int8 files only."""
  started = time.perf_counter()
  scheme = (qat.choose_scheme(run.has("pruned"), run.has("clustered"))
            if config.scheme == "auto" else config.scheme)
  progress.log(f"qat: {scheme}, {config.epochs} epoch(s)")
  result = qat.qat(model, None, config, scheme, train=run.trainer(config))
  run.add(run.name("qat"), result.model, {
      "scheme": scheme, "epochs": config.epochs, "seconds": time.perf_counter() - started},
      extension=".h5", modes=("int8",))
  return result.model


def lowrank_stage(run, model, config: LowRankConfig):
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


def distill_stage(run, model, config: TaskDistillConfig):
  """A student `config.width` as wide, fresh, distilled from `model`; with
  compare_scratch, the same student from the same weights on labels only."""
  student = student_of(model, config.width, run.seed)
  initial = student.get_weights()
  progress.log(f"distill: a student {config.width:.0%} as wide "
               f"({student.count_params():,} parameters, {model.count_params():,} in "
               f"the teacher) for {config.epochs} epoch(s), per-output distillation")
  started = time.perf_counter()
  history = run.fit(student, config.epochs, config.learning_rate, teacher=True,
                    teacher_model=model)
  record = {"width": config.width, "epochs": config.epochs, "alpha": config.alpha,
            "temperature": config.temperature, "params": int(student.count_params()),
            "teacher_params": int(model.count_params()),
            "train_loss": [float(value) for value in history.history.get("loss", [])],
            "seconds": time.perf_counter() - started}
  name = run.name("distilled")
  if config.compare_scratch:
    scratch = keras.models.clone_model(student)
    scratch.set_weights(initial)
    keras.utils.set_random_seed(run.seed)
    progress.log("distill: the same student from the same weights on the task's "
                 "labels only (control)")
    run.fit(scratch, config.epochs, config.learning_rate)
    run.add(f"{name}_scratch", scratch, {"control_of": name}, final=False)
  run.add(name, student, record)
  return student


def strided_stage(run, model, config: StridedConfig):
  """Each stride-1 conv before a 2 x 2 pool made stride 2 and the pool
  removed (where the shapes after it stay), then fine-tuned on the task."""
  started = time.perf_counter()
  result = strided.strided(model)
  progress.log(f"strided: {len(result.folded)} pool(s) folded into strided convs, "
               f"{config.finetune_epochs} epoch(s) of fine-tuning")
  before = run.validation_loss(result.model)
  run.fit(result.model, config.finetune_epochs, config.learning_rate,
          teacher=config.use_teacher)
  run.add(run.name("strided"), result.model, {
      "folded": [f"{conv} + {pool}" for conv, pool in result.folded], "kept": result.kept,
      "validation_loss_before_finetune": before,
      "validation_loss_after_finetune": run.validation_loss(result.model),
      "macs": [int(total_macs(model)), int(total_macs(result.model))],
      "seconds": time.perf_counter() - started})
  return result.model


def binary_stage(run, model, config: BinaryConfig):
  """Binary weights (BWN or BinaryConnect) trained with the straight-through
  estimator on the task; the file holds them as plain layers, and the record
  their size at 1 bit per weight."""
  started = time.perf_counter()
  progress.log(f"binary: {config.mode} weights, {config.epochs} epoch(s)")
  result = binary.binary(model, None, config, train=run.trainer(config))
  record = {key: value for key, value in result.size.items() if key != "layers"}
  run.add(run.name("binarized"), result.model, dict(
      record, mode=config.mode, layers=[entry["layer"] for entry in result.size["layers"]],
      seconds=time.perf_counter() - started))
  return result.model


STAGES = {"distill": distill_stage, "lowrank": lowrank_stage, "slim": slim_stage,
          "sensitivity": sensitivity_stage, "prune": prune_stage, "cluster": cluster_stage,
          "qat": qat_stage, "search": search_stage, "strided": strided_stage,
          "binary": binary_stage}
