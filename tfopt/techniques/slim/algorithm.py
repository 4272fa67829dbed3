"""Network slimming and filter pruning: remove whole conv channels.

Unstructured pruning leaves every multiply in the .tflite; this module builds
a genuinely smaller Keras model instead (Liu et al. 2017, "Learning Efficient
Convolutional Networks through Network Slimming"; Li et al. 2017, "Pruning
Filters for Efficient ConvNets"):

1. Sparsity training (optional): an L1 penalty on BatchNorm gamma pushes the
   scale of unimportant channels towards zero.
2. Channels are grouped by dependency (tfopt.techniques.slim.channel_groups): convs coupled
   through a residual Add, a squeeze-excite Multiply or a depthwise conv
   form one group and lose the same channels. Importance of each channel of
   a group: the mean |gamma| of every BN acting on it, or the mean L1 / L2
   norm of its producers' filters.
3. Selection: the same rate in every group (local) or one threshold across
   groups (global), with a floor so that no group is emptied.
4. Physical removal (channels.py): the model is rebuilt from its config with fewer filters,
   and every layer the removed channels flow into is sliced to match: the
   BN entries, a DepthwiseConv2D's channels (and the BN after it, so a
   MobileNet-v1 pointwise channel takes the next depthwise channel with it),
   the next Conv2D's input channels, and the rows of a Dense after Flatten or
   global pooling. Groups whose channels cannot be sliced (a channel-mixing
   Reshape, a channel reaching the model output) are skipped with the reason.

`slim()` runs 1-4 as an iterative schedule with fine-tuning after each step.
"""

import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from tfopt.core._keras import get_layer, keras, kernel_of, require_keras2_model
from tfopt.data.datasets import Dataset
from tfopt.keras_io.macs import total_macs
from tfopt.keras_io.predict import predict_top1
from tfopt.techniques.distill.algorithm import Teacher, trainer_for
from tfopt.techniques.slim.channel_groups import ChannelGroup, channel_groups
from tfopt.techniques.slim.channels import (SlimError, ZERO_PRESERVING, following_bn,
                                            functional_model, is_conv, is_transpose, layer_graph,
                                            layers, remove_channels, width)
from tfopt.techniques.slim.settings import SlimConfig
from tfopt.training.train import FitContext

__all__ = ["SlimError", "SlimStep", "SlimResult", "slimmable_groups", "prunable_convs",
           "group_importance", "channel_importance", "select_channels", "remove_channels",
           "dead_channels", "with_bn_l1", "without_bn_l1", "slim", "slim_with"]


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
  """What `slim` did: the final model, each step, and the skipped groups.

  channels_before and each step's channels are per layer that lost filters;
  groups maps each slimmed group's name to its coupled layers.
  """
  model: keras.Model
  channels_before: Dict[str, int]
  steps: List[SlimStep]
  skipped: Dict[str, str]
  groups: Dict[str, List[str]] = dataclasses.field(default_factory=dict)

  @property
  def removed_fraction(self) -> float:
    before = sum(self.channels_before.values())
    after = sum(self.steps[-1].channels.values()) if self.steps else before
    return 1 - after / before


# --- candidates and importance ----------------------------------------------

def slimmable_groups(model: keras.Model, criterion: str = "bn_gamma",
                     names: Optional[Sequence[str]] = None):
  """(groups that can be slimmed, {group label: why not}) of a Keras 2 model.

  Channels are removed by group (tfopt.techniques.slim.channel_groups): the convs coupled
  through a residual Add or a squeeze-excite Multiply lose the same filters.
  A group can be slimmed when it is not frozen and, for bn_gamma, a scaled
  BatchNorm acts on its channels. `names` keeps only the groups that hold
  one of those convs; a named conv whose group cannot be slimmed is an error.

  Raises:
    SlimError: a layer in `names` does not exist or cannot be slimmed.
  """
  model = functional_model(require_keras2_model(model))
  groups = channel_groups(model)
  for group in groups:
    if group.frozen is None and criterion == "bn_gamma" and not group.norms:
      group.frozen = ("no BatchNormalization acts on its channels (use criterion "
                      "l1 or l2).")
  if names is not None:
    groups = _named_groups(model, groups, names)
  # A Dense-only group that cannot be slimmed (the classifier) is not news.
  return ([group for group in groups if group.frozen is None],
          {group.label: group.frozen for group in groups if group.frozen
           and (names or any(is_conv(model.get_layer(name)) for name in group.producers))})


def _named_groups(model, groups, names):
  owner = {producer: group for group in groups for producer in group.producers}
  chosen = []
  for name in names:
    layer = get_layer(model, name, SlimError)
    if name not in owner:
      raise SlimError(f"Layer {name!r} cannot be slimmed: it is a "
                      f"{type(layer).__name__}, not a channels-last ungrouped "
                      "Conv2D or a Dense.")
    if owner[name].frozen:
      raise SlimError(f"Layer {name!r} cannot be slimmed: {owner[name].frozen}")
    if owner[name] not in chosen:
      chosen.append(owner[name])
  return chosen


def prunable_convs(model: keras.Model, criterion: str = "bn_gamma",
                   names: Optional[Sequence[str]] = None):
  """(layers that lose filters, {group label: why not}): slimmable_groups' producers."""
  groups, skipped = slimmable_groups(model, criterion, names)
  return [name for group in groups for name in group.producers], skipped


def group_importance(model: keras.Model, group: ChannelGroup,
                     criterion: str = "bn_gamma") -> np.ndarray:
  """One score per channel of `group`; larger is more important.

  bn_gamma: the mean |gamma| over every BatchNorm acting on the channel.
  l1 / l2: the mean over the group's producers of each filter's mean |w| /
  RMS (normalized by the filter size so scores compare across layers).
  """
  model = functional_model(model)
  if criterion == "bn_gamma":
    if not group.norms:
      raise SlimError(f"No BatchNormalization acts on the channels of {group.label}; "
                      "use criterion l1 or l2.")
    total, count = np.zeros(group.width), np.zeros(group.width)
    for name, positions, channels in group.norms:
      np.add.at(total, channels, np.abs(model.get_layer(name).gamma.numpy()[positions]))
      np.add.at(count, channels, 1)
    return total / np.maximum(count, 1)
  if criterion not in ("l1", "l2"):
    raise SlimError(f"criterion={criterion!r} is invalid: it must be bn_gamma, "
                    "l1 or l2.")
  scores = []
  for name in group.producers:
    kernel = kernel_of(model.get_layer(name))
    if is_transpose(model.get_layer(name)):  # (h, w, out, in): filters on axis 2
      kernel = np.moveaxis(kernel, 2, -1)
    filters = kernel.reshape(-1, kernel.shape[-1])
    scores.append(np.mean(np.abs(filters), axis=0) if criterion == "l1"
                  else np.sqrt(np.mean(filters ** 2, axis=0)))
  return np.mean(scores, axis=0)


def channel_importance(model: keras.Model, name: str,
                       criterion: str = "bn_gamma") -> np.ndarray:
  """One score per output channel of conv `name` (scored over its whole group)."""
  model = functional_model(model)
  group = next((group for group in channel_groups(model)
                if name in group.producers), None)
  if group is None:
    raise SlimError(f"Layer {name!r} is not a Conv2D or Dense whose channels "
                    "can be scored.")
  return group_importance(model, group, criterion)


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
  for group in slimmable_groups(model)[0]:
    name = group.name
    batch_norm = following_bn(model, graph, name)
    if len(group.producers) > 1 or batch_norm is None:
      continue  # a channel of a coupled group lives on in its other members
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
  """A copy whose BNs on the channels of `convs` (default: every slimmable
  group) carry L1(strength) on gamma."""
  model = functional_model(require_keras2_model(model))
  groups = slimmable_groups(model)[0]
  if convs is not None:
    groups = [group for group in groups if set(group.producers) & set(convs)]
  names = {name for group in groups for name, _, _ in group.norms}
  return _with_gamma_regularizer(model, keras.regularizers.L1(strength), names)


def without_bn_l1(model: keras.Model) -> keras.Model:
  """A copy with every BN gamma regularizer removed (same weights)."""
  names = {layer.name for layer in model.layers
           if isinstance(layer, layers.BatchNormalization)}
  return _with_gamma_regularizer(model, None, names)


# --- the iterative schedule ------------------------------------------------------

def _channels(model, names) -> Dict[str, int]:
  return {name: width(model.get_layer(name)) for name in names}


def _val_accuracy(model, dataset) -> float:
  return float(np.mean(predict_top1(model, dataset.x_val) == dataset.y_val))


def slim(model: keras.Model, dataset: Dataset, config: SlimConfig,
         teacher: Optional[Teacher] = None, verbose: int = 2,
         fits: Optional[FitContext] = None) -> SlimResult:
  """Sparsity-trains, then prunes channels in `prune_count` steps, fine-tuning.

  Args:
    model: a trained Keras 2 model that outputs logits; not modified.
    dataset: training data, and validation data for the per-step accuracy.
    config: rate, schedule, criterion, scope and training settings.
    teacher: if given (a tfopt.techniques.distill.algorithm.Teacher or a Keras model) and
      config.use_teacher, fine-tuning distills from it.
    fits: a pipeline stage's epoch checkpoints and clock (see train.fit).

  Returns:
    A SlimResult; `result.model` is the final, smaller model.

  Raises:
    SlimError: nothing can be slimmed, or a named layer cannot be.
  """
  teacher = teacher if config.use_teacher else None
  return slim_with(model, config, trainer_for(dataset, config.batch_size,
                                              config.learning_rate, teacher, verbose,
                                              fits=fits),
                   lambda current: _val_accuracy(current, dataset))


def slim_with(model: keras.Model, config: SlimConfig,
              train: Callable[..., object],
              validate: Callable[[keras.Model], float]) -> SlimResult:
  """slim's schedule with any training: `train(model, epochs)` fits a model in
  place (sparsity training and each fine-tuning), `validate(model)` gives each
  step's validation figure (accuracy for a classifier, the task's for a task).

  Raises:
    SlimError: nothing can be slimmed, or a named layer cannot be.
  """
  model = functional_model(require_keras2_model(model))
  groups, skipped = slimmable_groups(model, config.criterion, config.layers)
  if not groups:
    raise SlimError(f"Model {model.name!r} has no conv that can be slimmed: "
                    + "; ".join(f"{name}: {why}" for name, why in skipped.items()))
  convs = [name for group in groups for name in group.producers]
  current = model
  if config.sparsity_epochs and config.l1_strength:
    current = with_bn_l1(model, config.l1_strength, convs)
    train(current, config.sparsity_epochs)
    current = without_bn_l1(current)
  original = _channels(model, convs)
  steps = []
  for step in range(1, config.prune_count + 1):
    rate = config.rate * step / config.prune_count
    # Group widths change after each step; the channels each group holds now
    # are scored, against its original width.
    now = {found.name: found for found in channel_groups(current)}
    scores = {group.name: group_importance(current, now[group.name], config.criterion)
              for group in groups}
    keep = select_channels(scores, rate=rate, scope=config.scope,
                           min_channels=config.min_channels,
                           original={group.name: group.width for group in groups})
    current = remove_channels(current, {name: keep[group.name] for group in groups
                                        for name in group.producers})
    if config.finetune_epochs:
      train(current, config.finetune_epochs)
    steps.append(SlimStep(step, rate, _channels(current, convs), int(current.count_params()),
                          total_macs(current), validate(current), current))
  return SlimResult(current, original, steps, skipped,
                    {group.name: group.producers for group in groups})
