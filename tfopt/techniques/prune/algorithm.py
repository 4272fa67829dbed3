"""Unstructured magnitude pruning with tfmot: apply, fine-tune, strip, verify.

``prune`` clones the model first (tfmot's wrappers share layer objects with
the model they wrap, which would silently prune the caller's model too), ramps
sparsity with a PolynomialDecay schedule whose update frequency is derived
from the run length (tfmot's default of every 100 steps prunes nothing on a
short run), strips the wrappers and checks every pruned weight reached its
target sparsity.
"""

import dataclasses
import math
from typing import Dict, List, Optional

import numpy as np
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from tfopt.core._keras import clone_model, get_layer, keras, require_keras2_model
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset
from tfopt.techniques.distill.algorithm import Teacher, trainer_for
from tfopt.techniques.prune.settings import PruneConfig
from tfopt.training.train import FitContext

__all__ = ["PruningError", "LayerSparsity", "PruneResult", "pruning_schedule", "reached",
           "reachable_zeros", "apply_pruning", "strip_pruning", "measure_sparsity",
           "prune", "clone_model"]

# Rounding leaves small layers a fraction of a weight under the target.
SPARSITY_TOLERANCE = 0.01


def reached(entry: "LayerSparsity", target: float) -> bool:
  """Whether a pruned tensor is at `target`, allowing tfmot's rounding (small
  tensors) and ties at the threshold (a weight or so in large ones)."""
  return (entry.sparsity >= target - SPARSITY_TOLERANCE
          or entry.zeros >= reachable_zeros(entry.size, target))


def reachable_zeros(size: int, target: float) -> int:
  """The zeros tfmot leaves in a `size`-weight tensor at `target` sparsity: it
  keeps max(1, round(size * (1 - target))) weights (pruning_impl._update_mask),
  so a 32-weight kernel at 0.7 keeps 10 and ends at 0.6875."""
  return size - max(1, int(np.round(size * (1 - target))))


class PruningError(TfoptError, RuntimeError):
  """Pruning did not reach its target, or cannot run with these settings."""


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
  """The measured sparsity of one pruned weight tensor."""
  layer: str
  weight: str
  shape: tuple
  size: int
  zeros: int

  @property
  def sparsity(self) -> float:
    return self.zeros / self.size


@dataclasses.dataclass
class PruneResult:
  """A stripped, pruned model and its per-layer sparsity table."""
  model: keras.Model
  layers: List[LayerSparsity]
  target_sparsity: float
  layer_targets: Optional[Dict[str, float]] = None

  @property
  def overall_sparsity(self) -> float:
    return (sum(entry.zeros for entry in self.layers) /
            max(1, sum(entry.size for entry in self.layers)))


def pruning_schedule(config: PruneConfig, total_steps: int):
  """A PolynomialDecay schedule that reaches the target within the run.

  The masks are updated `config.pruning_updates` times (fewer if the run is
  shorter) over the first `config.ramp_fraction` of `total_steps`; the last
  update lands exactly on `end_step`, so the target sparsity is applied.

  Raises:
    PruningError: the run has fewer than two training steps.
  """
  if total_steps < 2:
    raise PruningError(f"Pruning needs at least 2 training steps, got "
                       f"{total_steps}; use more examples or epochs.")
  ramp_steps = max(1, min(total_steps - 1, int(total_steps * config.ramp_fraction)))
  updates = min(config.pruning_updates, ramp_steps)
  frequency = ramp_steps // updates
  return tfmot.sparsity.keras.PolynomialDecay(
      initial_sparsity=config.initial_sparsity,
      final_sparsity=config.target_sparsity,
      begin_step=0, end_step=frequency * updates, frequency=frequency)


def apply_pruning(model: keras.Model, schedule,
                  layer_schedules: Optional[Dict[str, object]] = None) -> keras.Model:
  """Wraps a clone of `model` for pruning; `model` itself is left untouched.

  With `layer_schedules` ({layer name: schedule}), only those layers are
  pruned, each on its own schedule; otherwise every prunable layer follows
  `schedule`.
  """
  require_keras2_model(model)
  if layer_schedules is None:
    unsupported = [layer for layer in model.layers if not _tfmot_wraps(layer)]
    if not unsupported:
      return tfmot.sparsity.keras.prune_low_magnitude(clone_model(model),
                                                      pruning_schedule=schedule)
    # tfmot refuses a whole model holding a layer it does not know (e.g.
    # Rescaling, common in users' models); wrap the layers it knows instead.
    layer_schedules = {layer.name: schedule for layer in model.layers
                       if _tfmot_wraps(layer)}

  def wrap(layer):
    if layer.name not in layer_schedules:
      return layer
    return tfmot.sparsity.keras.prune_low_magnitude(
        layer, pruning_schedule=layer_schedules[layer.name])

  # The wrappers share the private clone's layers, never the caller's.
  return keras.models.clone_model(clone_model(model), clone_function=wrap)


def _tfmot_wraps(layer) -> bool:
  """Whether tfmot's prune_low_magnitude accepts `layer` (weights or not)."""
  return (isinstance(layer, keras.layers.InputLayer)
          or isinstance(layer, tfmot.sparsity.keras.PrunableLayer)
          or PruneRegistry.supports(layer))


def strip_pruning(pruned_model: keras.Model) -> keras.Model:
  """Removes the pruning wrappers, keeping the masked (zeroed) weights."""
  return tfmot.sparsity.keras.strip_pruning(pruned_model)


def _pruned_weight_names(pruned_model: keras.Model) -> dict:
  """{layer name: [(label, position among the layer's weights)]} of the
  weights its wrapper prunes (a kernel, an LSTM cell's recurrent_kernel,
  an attention layer's query/kernel)."""
  names = {}
  for layer in pruned_model.layers:
    if isinstance(layer, PruneLowMagnitude):
      positions = {id(weight): number for number, weight in enumerate(layer.layer.weights)}
      names[layer.layer.name] = [
          (_weight_label(weight.name, layer.layer.name), positions[id(weight)])
          for weight, _, _ in layer.pruning_vars]
  return names


def _weight_label(name: str, layer_name: str) -> str:
  """"kernel" of "conv/kernel:0"; "query/kernel" of "attention/query/kernel:0"."""
  parts = name.split(":")[0].split("/")
  return "/".join(parts[1:] if len(parts) > 1 and parts[0] == layer_name else parts[-1:])


def measure_sparsity(model: keras.Model, weight_names: dict) -> List[LayerSparsity]:
  """Counts the zeros of the named weights of a (stripped) model."""
  table = []
  for layer_name, weights in weight_names.items():
    layer = model.get_layer(layer_name)
    for label, position in weights:
      values = layer.weights[position].numpy()
      table.append(LayerSparsity(layer_name, label, tuple(values.shape),
                                 int(values.size), int(np.sum(values == 0))))
  return table


def _layer_schedules(model: keras.Model, config: PruneConfig,
                     layer_targets: Optional[Dict[str, float]], total_steps: int):
  """{layer: its own schedule to its target}, or None (one target for all)."""
  if layer_targets is None:
    return None
  for name in layer_targets:
    get_layer(model, name, PruningError)
  schedules = {name: pruning_schedule(dataclasses.replace(
      config, target_sparsity=target, initial_sparsity=0.0), total_steps)
               for name, target in layer_targets.items() if target > 0}
  if not schedules:
    raise PruningError("Every layer target is 0: nothing to prune.")
  return schedules


def prune(model: keras.Model, dataset: Optional[Dataset], config: PruneConfig,
          teacher: Optional[Teacher] = None, verbose: int = 2,
          layer_targets: Optional[Dict[str, float]] = None,
          train=None, steps_per_epoch: Optional[int] = None,
          fits: Optional[FitContext] = None) -> PruneResult:
  """Prunes a copy of `model` to `config.target_sparsity` while fine-tuning.

  Args:
    model: a trained Keras 2 model that outputs logits; not modified.
    dataset: training data for fine-tuning, validation data for monitoring.
    config: target sparsity, schedule and fine-tuning settings.
    teacher: if given (a tfopt.techniques.distill.algorithm.Teacher or a Keras model),
      fine-tuning is distillation from it instead of plain cross-entropy,
      which recovers more accuracy at high sparsity.
    verbose: Keras fit verbosity.
    layer_targets: {layer name: sparsity} to prune each named layer to its
      own target instead of config.target_sparsity everywhere (e.g. from
      tfopt.techniques.sweep.algorithm.choose_sparsities); layers at 0 or absent stay dense.
    train, steps_per_epoch: fine-tune with train(model, epochs, callbacks)
      instead of on `dataset` (a task's data and loss; see distill.trainer_for),
      steps_per_epoch batches an epoch.
    fits: a pipeline stage's epoch checkpoints and clock (see train.fit).

  Returns:
    A PruneResult with the stripped model and its per-layer sparsity.

  Raises:
    PruningError: the model is frozen, or a pruned weight ended below its
      target sparsity.
  """
  require_keras2_model(model)
  if not model.trainable_weights:
    raise PruningError(
        f"Model {model.name!r} has no trainable weights (trainable=False), so "
        "pruning could not fine-tune it and accuracy would collapse; set "
        "model.trainable = True first.")
  total_steps = config.epochs * (steps_per_epoch or math.ceil(len(dataset.x_train)
                                                              / config.batch_size))
  schedules = _layer_schedules(model, config, layer_targets, total_steps)
  pruned = apply_pruning(model, pruning_schedule(config, total_steps), schedules)
  train = train or trainer_for(dataset, config.batch_size, config.learning_rate, teacher,
                               verbose, fits=fits)
  train(pruned, config.epochs, [tfmot.sparsity.keras.UpdatePruningStep()])
  weight_names = _pruned_weight_names(pruned)
  stripped = strip_pruning(pruned)
  table = measure_sparsity(stripped, weight_names)
  targets = layer_targets or {}
  short = [entry for entry in table
           if not reached(entry, targets.get(entry.layer, config.target_sparsity))]
  if short:
    details = ", ".join(
        f"{entry.layer}/{entry.weight} {entry.sparsity:.3f} < "
        f"{targets.get(entry.layer, config.target_sparsity)}" for entry in short)
    raise PruningError(f"Target sparsity not reached: {details}.")
  return PruneResult(stripped, table, config.target_sparsity, layer_targets)
