"""Network slimming and filter pruning: remove whole conv channels.

Unstructured pruning leaves every multiply in the .tflite; this module builds
a genuinely smaller Keras model instead (Liu et al. 2017, "Learning Efficient
Convolutional Networks through Network Slimming"; Li et al. 2017, "Pruning
Filters for Efficient ConvNets"):

1. Sparsity training (optional): an L1 penalty on BatchNorm gamma pushes the
   scale of unimportant channels towards zero.
2. Importance of each output channel of a Conv2D: |gamma| of the BN that
   follows it, or the L1 / L2 norm of its filter.
3. Selection: the same rate in every layer (local) or one threshold across
   layers (global), with a floor so that no layer is emptied.
4. Physical removal (tfopt.channels): the model is rebuilt from its config with fewer filters,
   and every layer the removed channels flow into is sliced to match: the
   BN entries, a DepthwiseConv2D's channels (and the BN after it, so a
   MobileNet-v1 pointwise channel takes the next depthwise channel with it),
   the next Conv2D's input channels, and the rows of a Dense after Flatten or
   global pooling. What cannot be sliced consistently (a channel-mixing
   Reshape, a residual Add whose inputs would keep different channels, a
   channel reaching the model output) is refused with the layer named.

`slim()` runs 1-4 as an iterative schedule with fine-tuning after each step.
"""

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfopt._keras import get_layer, keras, require_keras2_model
from tfopt.config import SlimConfig
from tfopt.data import Dataset
from tfopt.distill import Teacher, fine_tune
from tfopt.channels import (ZERO_PRESERVING, SlimError, following_bn, functional_model,
                            is_conv, layer_graph, layers, propagate, remove_channels)
from tfopt.macs import count_macs

__all__ = ["SlimError", "SlimStep", "SlimResult", "prunable_convs",
           "channel_importance", "select_channels", "remove_channels",
           "dead_channels", "with_bn_l1", "without_bn_l1", "slim"]


@dataclasses.dataclass
class SlimStep:
  """The model after one prune-and-fine-tune step."""
  step: int
  rate: float
  channels: Dict[str, int]
  params: int
  macs: int
  val_accuracy: float
  model: keras.Model


@dataclasses.dataclass
class SlimResult:
  """What `slim` did: the final model, each step, and the skipped convs."""
  model: keras.Model
  channels_before: Dict[str, int]
  steps: List[SlimStep]
  skipped: Dict[str, str]

  @property
  def removed_fraction(self) -> float:
    before = sum(self.channels_before.values())
    after = sum(self.steps[-1].channels.values()) if self.steps else before
    return 1 - after / before


# --- candidates and importance ----------------------------------------------

def prunable_convs(model: keras.Model, criterion: str = "bn_gamma",
                   names: Optional[Sequence[str]] = None):
  """(prunable conv names, {skipped conv: why}) of a Keras 2 model.

  A conv is prunable when removing one of its filters can be carried through
  the rest of the graph, it has at least two filters, and (for bn_gamma) a BN
  follows it.

  Raises:
    SlimError: a layer in `names` does not exist or cannot be slimmed.
  """
  model = functional_model(require_keras2_model(model))
  graph = layer_graph(model)
  candidates = names if names is not None else [
      name for name in graph.order if is_conv(model.get_layer(name))]
  prunable, skipped = [], {}
  for name in candidates:
    layer = get_layer(model, name, SlimError)
    reason = _why_not_prunable(model, graph, layer, criterion)
    if reason and names is not None:
      raise SlimError(f"Layer {name!r} cannot be slimmed: {reason}")
    if reason:
      skipped[name] = reason
    else:
      prunable.append(name)
  return prunable, skipped


def _why_not_prunable(model, graph, layer, criterion) -> Optional[str]:
  if not is_conv(layer):
    return f"it is a {type(layer).__name__}, not a channels-last ungrouped Conv2D."
  if layer.filters < 2:
    return "it has a single filter."
  if criterion == "bn_gamma" and following_bn(model, graph, layer.name) is None:
    return "no BatchNormalization follows it (use criterion l1 or l2)."
  try:
    propagate(model, graph, {layer.name: np.arange(layer.filters - 1)})
  except SlimError as error:
    return str(error)
  return None


def channel_importance(model: keras.Model, name: str,
                       criterion: str = "bn_gamma") -> np.ndarray:
  """One score per output channel of conv `name`; larger is more important.

  bn_gamma: |gamma| of the BN after it. l1 / l2: mean |w| / RMS of each
  filter (normalized by the filter size so scores compare across layers).
  """
  model = functional_model(model)
  layer = model.get_layer(name)
  if criterion == "bn_gamma":
    batch_norm = following_bn(model, layer_graph(model), name)
    if batch_norm is None:
      raise SlimError(f"No BatchNormalization follows conv {name!r}; use "
                      "criterion l1 or l2.")
    return np.abs(batch_norm.gamma.numpy())
  filters = layer.kernel.numpy().reshape(-1, layer.filters)
  if criterion == "l1":
    return np.mean(np.abs(filters), axis=0)
  if criterion == "l2":
    return np.sqrt(np.mean(filters ** 2, axis=0))
  raise SlimError(f"criterion={criterion!r} is invalid: it must be bn_gamma, "
                  "l1 or l2.")


def _floor(channels: int, min_channels: float) -> int:
  return max(1, math.ceil(min_channels * channels - 1e-9))


def select_channels(scores: Dict[str, np.ndarray], rate: float, scope: str = "global",
                    min_channels: float = 0.1,
                    original: Optional[Dict[str, int]] = None) -> Dict[str, np.ndarray]:
  """{conv: sorted channel indices to keep} from importance scores.

  local: each layer keeps the ceil((1 - rate) * original) best channels.
  global: the best channels across all layers are kept, `round((1 - rate) *
  sum(original))` in all, after every layer has kept its floor
  (min_channels of its original channels, at least one).

  Args:
    scores: {conv name: score per current channel}.
    rate: share of the original channels to remove, in [0, 1).
    original: channel counts the rate and the floor refer to (default: the
      current counts).

  Raises:
    SlimError: a rate outside [0, 1) or an unknown scope.
  """
  if not 0 <= rate < 1:
    raise SlimError(f"rate={rate!r} is invalid: it must be in [0, 1), the "
                    "share of channels to remove.")
  original = original or {name: len(score) for name, score in scores.items()}
  floors = {name: min(len(scores[name]), _floor(original[name], min_channels))
            for name in scores}
  if scope == "local":
    counts = {name: max(floors[name], min(len(scores[name]),
                                          math.ceil((1 - rate) * original[name] - 1e-9)))
              for name in scores}
  elif scope == "global":
    counts = _global_counts(scores, floors,
                            round((1 - rate) * sum(original.values())))
  else:
    raise SlimError(f"scope={scope!r} is invalid: it must be local or global.")
  return {name: np.sort(np.argsort(-scores[name], kind="stable")[:counts[name]])
          for name in scores}


def _global_counts(scores, floors, keep_total) -> Dict[str, int]:
  """Per-layer counts: each layer's floor, then the best remaining scores."""
  counts = dict(floors)
  rest = [(-score, name) for name in scores
          for score in np.sort(scores[name])[::-1][floors[name]:]]
  for _, name in sorted(rest)[:max(0, keep_total - sum(floors.values()))]:
    counts[name] += 1
  return counts


# --- dead channels -------------------------------------------------------------

def dead_channels(model: keras.Model) -> Dict[str, np.ndarray]:
  """{conv: channels whose output is exactly zero wherever it is used}.

  A channel is dead when the BN after its conv has gamma == 0 and beta <= 0
  (its output is then the constant beta), a ReLU follows, and the path to
  every consumer maps zero to zero; removing it leaves the model's outputs
  unchanged.
  """
  model = functional_model(require_keras2_model(model))
  graph = layer_graph(model)
  dead = {}
  for name in prunable_convs(model)[0]:
    batch_norm = following_bn(model, graph, name)
    beta = (batch_norm.beta.numpy() if batch_norm.center
            else np.zeros(batch_norm.gamma.shape))
    channels = np.flatnonzero((batch_norm.gamma.numpy() == 0) & (beta <= 0))
    if channels.size and _zeros_reach_consumers(model, graph, batch_norm.name):
      dead[name] = channels
  return dead


def _zeros_reach_consumers(model, graph, bn_name) -> bool:
  """Whether a zero after the BN's ReLU stays zero until the next conv/Dense."""
  consumers = graph.consumers[bn_name]
  if len(consumers) != 1 or not _zero_to_zero_relu(model.get_layer(consumers[0])):
    return False
  pending = list(consumers)
  while pending:
    layer = model.get_layer(pending.pop())
    if is_conv(layer) or isinstance(layer, layers.Dense):
      continue
    if isinstance(layer, (layers.ReLU, layers.Activation)):
      if not _zero_to_zero_relu(layer):
        return False
    elif not isinstance(layer, ZERO_PRESERVING):
      return False
    pending.extend(graph.consumers[layer.name])
  return True


def _zero_to_zero_relu(layer) -> bool:
  """A ReLU that maps every value <= 0 to exactly 0."""
  if isinstance(layer, layers.ReLU):
    return float(layer.threshold) == 0 and float(layer.negative_slope) == 0
  return isinstance(layer, layers.Activation) and keras.activations.serialize(
      layer.activation) in ("relu", "relu6")


# --- sparsity training ----------------------------------------------------------

def _with_gamma_regularizer(model: keras.Model, regularizer, names) -> keras.Model:
  def clone_layer(layer):
    config = layer.get_config()
    if layer.name in names:
      config["gamma_regularizer"] = regularizer
    return layer.__class__.from_config(config)

  clone = keras.models.clone_model(model, clone_function=clone_layer)
  clone.set_weights(model.get_weights())
  return clone


def with_bn_l1(model: keras.Model, strength: float,
               convs: Optional[Sequence[str]] = None) -> keras.Model:
  """A copy whose BNs after `convs` (default: all prunable) carry L1(strength) on gamma."""
  model = functional_model(require_keras2_model(model))
  graph = layer_graph(model)
  convs = prunable_convs(model)[0] if convs is None else convs
  names = {following_bn(model, graph, name).name for name in convs
           if following_bn(model, graph, name) is not None}
  return _with_gamma_regularizer(model, keras.regularizers.L1(strength), names)


def without_bn_l1(model: keras.Model) -> keras.Model:
  """A copy with every BN gamma regularizer removed (same weights)."""
  names = {layer.name for layer in model.layers
           if isinstance(layer, layers.BatchNormalization)}
  return _with_gamma_regularizer(model, None, names)


# --- the iterative schedule ------------------------------------------------------

def _channels(model, names) -> Dict[str, int]:
  return {name: int(model.get_layer(name).filters) for name in names}


def _val_accuracy(model, dataset) -> float:
  logits = model.predict(dataset.x_val, batch_size=1000, verbose=0)
  return float(np.mean(np.argmax(logits, axis=-1) == dataset.y_val))


def slim(model: keras.Model, dataset: Dataset, config: SlimConfig,
         teacher: Optional[Teacher] = None, verbose: int = 2) -> SlimResult:
  """Sparsity-trains, then prunes channels in `prune_count` steps, fine-tuning.

  Args:
    model: a trained Keras 2 model that outputs logits; not modified.
    dataset: training data, and validation data for the per-step accuracy.
    config: rate, schedule, criterion, scope and training settings.
    teacher: if given (a tfopt.distill.Teacher or a Keras model) and
      config.use_teacher, fine-tuning distills from it.

  Returns:
    A SlimResult; `result.model` is the final, smaller model.

  Raises:
    SlimError: nothing can be slimmed, or a named layer cannot be.
  """
  model = functional_model(require_keras2_model(model))
  convs, skipped = prunable_convs(model, config.criterion, config.layers)
  if not convs:
    raise SlimError(f"Model {model.name!r} has no conv that can be slimmed: "
                    + "; ".join(f"{name}: {why}" for name, why in skipped.items()))
  teacher = teacher if config.use_teacher else None
  train = dict(batch_size=config.batch_size, learning_rate=config.learning_rate,
               teacher=teacher, verbose=verbose)
  current = model
  if config.sparsity_epochs and config.l1_strength:
    current = with_bn_l1(model, config.l1_strength, convs)
    fine_tune(current, dataset, config.sparsity_epochs, **train)
    current = without_bn_l1(current)
  original = _channels(model, convs)
  steps = []
  for step in range(1, config.prune_count + 1):
    rate = config.rate * step / config.prune_count
    scores = {name: channel_importance(current, name, config.criterion)
              for name in convs}
    keep = select_channels(scores, rate=rate, scope=config.scope,
                           min_channels=config.min_channels, original=original)
    current = remove_channels(current, keep)
    if config.finetune_epochs:
      fine_tune(current, dataset, config.finetune_epochs, **train)
    steps.append(SlimStep(
        step, rate, _channels(current, convs), int(current.count_params()),
        sum(entry.macs for entry in count_macs(current)),
        _val_accuracy(current, dataset), current))
  return SlimResult(current, original, steps, skipped)
