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
4. Physical removal: the model is rebuilt from its config with fewer filters,
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
from tfopt.distill import fine_tune
from tfopt.errors import TfoptError
from tfopt.lowrank import LowRankDense, SpatialSVDConv2D
from tfopt.macs import count_macs

__all__ = ["SlimError", "SlimStep", "SlimResult", "prunable_convs",
           "channel_importance", "select_channels", "remove_channels",
           "dead_channels", "with_bn_l1", "without_bn_l1", "slim"]

layers = keras.layers

# Layers that act on each channel on its own: a kept channel stays at its place.
_PER_CHANNEL = (layers.ReLU, layers.LeakyReLU, layers.ELU, layers.ThresholdedReLU,
                layers.Dropout, layers.GaussianNoise, layers.GaussianDropout,
                layers.AlphaDropout, layers.ActivityRegularization,
                layers.MaxPooling2D, layers.AveragePooling2D,
                layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D,
                layers.ZeroPadding2D, layers.Cropping2D, layers.UpSampling2D)
# Layers that map an all-zero channel to an all-zero channel.
_ZERO_PRESERVING = (layers.ReLU, layers.Dropout, layers.MaxPooling2D,
                    layers.AveragePooling2D, layers.GlobalAveragePooling2D,
                    layers.GlobalMaxPooling2D, layers.ZeroPadding2D,
                    layers.Flatten)
_MERGE = (layers.Add, layers.Subtract, layers.Multiply, layers.Average,
          layers.Maximum, layers.Minimum)


class SlimError(TfoptError, ValueError):
  """A rate, layer or model structure that channel removal cannot handle."""


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


# --- the layer graph ----------------------------------------------------------

@dataclasses.dataclass
class _Graph:
  """Who feeds whom in a functional model, read from its config."""
  order: List[str]
  inputs: Dict[str, List[str]]
  consumers: Dict[str, List[str]]
  outputs: List[str]


def _functional(model: keras.Model) -> keras.Model:
  if isinstance(model, keras.Sequential):
    return keras.Model(model.inputs, model.outputs, name=model.name)
  return model


def _graph(model: keras.Model) -> _Graph:
  config = model.get_config()
  order, inputs = [], {}
  consumers = {entry["name"]: [] for entry in config["layers"]}
  for entry in config["layers"]:
    name, nodes = entry["name"], entry["inbound_nodes"]
    if len(nodes) > 1:
      raise SlimError(f"Layer {name!r} is called {len(nodes)} times (a shared "
                      "layer); channel removal cannot slice it for one call "
                      "only. Exclude the convs that feed it.")
    order.append(name)
    inputs[name] = [inbound[0] for node in nodes for inbound in node]
    for source in inputs[name]:
      consumers[source].append(name)
  return _Graph(order, inputs, consumers,
                [output[0] for output in config["output_layers"]])


def _is_conv(layer) -> bool:
  return (type(layer) is layers.Conv2D and layer.groups == 1  # pylint: disable=unidiomatic-typecheck
          and layer.data_format == "channels_last")


def _elementwise_activation(layer) -> bool:
  name = keras.activations.serialize(layer.activation)
  return isinstance(name, str) and name not in ("softmax", "log_softmax")


# --- which channels survive where ----------------------------------------------

def _expand_depthwise(keep: np.ndarray, multiplier: int) -> np.ndarray:
  return (keep[:, None] * multiplier + np.arange(multiplier)).reshape(-1)


def _propagate(model: keras.Model, graph: _Graph,
               keep: Dict[str, np.ndarray]) -> Dict[str, tuple]:
  """{layer: (kept input channels or None, kept output channels or None)}.

  None means "all channels". Raises SlimError where the kept channels cannot
  be carried through a layer.
  """
  kept_out: Dict[str, Optional[np.ndarray]] = {}
  plan = {}
  for name in graph.order:
    layer = model.get_layer(name)
    sources = [kept_out[source] for source in graph.inputs[name]]
    incoming = sources[0] if sources else None
    outgoing = _carry(layer, sources, incoming, keep.get(name))
    if name in graph.outputs and outgoing is not None:
      raise SlimError(f"Removing channels would change the shape of the model "
                      f"output {name!r}; exclude the conv that feeds it.")
    plan[name] = (incoming, outgoing)
    kept_out[name] = outgoing
  return plan


def _carry(layer, sources, incoming, own_keep):
  """Kept output channels of `layer` given its inputs' kept channels."""
  name = layer.name
  if own_keep is not None:
    if not _is_conv(layer):
      raise SlimError(f"Layer {name!r} ({type(layer).__name__}) is not a "
                      "channels-last, ungrouped Conv2D; only those have their "
                      "filters removed.")
    return np.asarray(own_keep)
  if isinstance(layer, _MERGE):
    if any(not _same(sources[0], other) for other in sources[1:]):
      raise SlimError(f"The inputs of {type(layer).__name__} {name!r} would "
                      "keep different channels (a residual branch pruned on "
                      "one side only); prune the convs feeding it together or "
                      "exclude them.")
    return incoming
  if isinstance(layer, layers.Concatenate) and any(s is not None for s in sources):
    if layer.axis not in (-1, 3):
      raise SlimError(f"Concatenate {name!r} joins along axis {layer.axis}, "
                      "not channels; exclude the convs that feed it.")
    widths = [int(shape[-1]) for shape in _input_shapes(layer)]
    offsets = np.cumsum([0] + widths[:-1])
    return np.concatenate([
        (np.arange(width) if kept is None else kept) + offset
        for kept, width, offset in zip(sources, widths, offsets)])
  if incoming is None:
    return None
  if _is_conv(layer) or isinstance(layer, (layers.Dense, LowRankDense,
                                           SpatialSVDConv2D)):
    return None  # consumes the channels; its own outputs are all kept
  if isinstance(layer, layers.DepthwiseConv2D):
    return _expand_depthwise(incoming, layer.depth_multiplier)
  if isinstance(layer, layers.BatchNormalization):
    rank = len(_input_shapes(layer)[0])
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if [axis % rank for axis in axes] != [rank - 1]:
      raise SlimError(f"BatchNormalization {name!r} normalizes axis "
                      f"{layer.axis}, not the channels.")
    return incoming
  if isinstance(layer, layers.Flatten):
    shape = [int(size) for size in _input_shapes(layer)[0][1:]]
    positions = np.arange(int(np.prod(shape[:-1])))[:, None] * shape[-1]
    return (positions + incoming[None, :]).reshape(-1)
  if isinstance(layer, _PER_CHANNEL) or (
      isinstance(layer, layers.Activation) and _elementwise_activation(layer)):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
      raise SlimError(f"Layer {name!r} is channels_first.")
    return incoming
  raise SlimError(f"Removed channels flow into {type(layer).__name__} {name!r}, "
                  "which channel removal cannot slice; exclude the conv that "
                  "feeds it (SlimConfig.layers).")


def _same(first, second) -> bool:
  if first is None or second is None:
    return first is None and second is None
  return np.array_equal(first, second)


def _input_shapes(layer) -> list:
  shape = layer.input_shape
  return shape if isinstance(shape, list) else [shape]


# --- candidates and importance ----------------------------------------------

def _following_bn(model, graph, name):
  """The BatchNormalization that alone consumes conv `name`, or None."""
  consumers = graph.consumers[name]
  if len(consumers) == 1:
    layer = model.get_layer(consumers[0])
    if isinstance(layer, layers.BatchNormalization) and layer.scale:
      return layer
  return None


def prunable_convs(model: keras.Model, criterion: str = "bn_gamma",
                   names: Optional[Sequence[str]] = None):
  """(prunable conv names, {skipped conv: why}) of a Keras 2 model.

  A conv is prunable when removing one of its filters can be carried through
  the rest of the graph, it has at least two filters, and (for bn_gamma) a BN
  follows it.

  Raises:
    SlimError: a layer in `names` does not exist or cannot be slimmed.
  """
  model = _functional(require_keras2_model(model))
  graph = _graph(model)
  candidates = names if names is not None else [
      name for name in graph.order if _is_conv(model.get_layer(name))]
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
  if not _is_conv(layer):
    return f"it is a {type(layer).__name__}, not a channels-last ungrouped Conv2D."
  if layer.filters < 2:
    return "it has a single filter."
  if criterion == "bn_gamma" and _following_bn(model, graph, layer.name) is None:
    return "no BatchNormalization follows it (use criterion l1 or l2)."
  try:
    _propagate(model, graph, {layer.name: np.arange(layer.filters - 1)})
  except SlimError as error:
    return str(error)
  return None


def channel_importance(model: keras.Model, name: str,
                       criterion: str = "bn_gamma") -> np.ndarray:
  """One score per output channel of conv `name`; larger is more important.

  bn_gamma: |gamma| of the BN after it. l1 / l2: mean |w| / RMS of each
  filter (normalized by the filter size so scores compare across layers).
  """
  model = _functional(model)
  layer = model.get_layer(name)
  if criterion == "bn_gamma":
    batch_norm = _following_bn(model, _graph(model), name)
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


# --- physical removal -----------------------------------------------------------

def _sliced_weights(layer, incoming, outgoing, own_keep):
  """The layer's weights with removed input / output channels dropped."""
  weights = layer.get_weights()
  if not weights or (incoming is None and own_keep is None):
    return weights
  if _is_conv(layer):
    kernel = weights[0]
    if incoming is not None:
      kernel = kernel[:, :, incoming, :]
    if own_keep is not None:
      kernel = kernel[..., own_keep]
      weights = weights[:1] + [bias[own_keep] for bias in weights[1:]]
    return [kernel] + weights[1:]
  if isinstance(layer, layers.DepthwiseConv2D):
    return [weights[0][:, :, incoming, :]] + [bias[outgoing] for bias in weights[1:]]
  if isinstance(layer, layers.BatchNormalization):
    return [weight[incoming] for weight in weights]
  if isinstance(layer, (layers.Dense, LowRankDense)):
    return [weights[0][incoming]] + weights[1:]
  if isinstance(layer, SpatialSVDConv2D):
    return [weights[0][:, :, incoming, :]] + weights[1:]
  raise SlimError(f"Cannot slice the weights of {type(layer).__name__} "
                  f"{layer.name!r}.")


def remove_channels(model: keras.Model, keep: Dict[str, Sequence[int]]) -> keras.Model:
  """A new, smaller model with only the `keep` channels of each named conv.

  Args:
    model: a Keras 2 Sequential or functional model; not modified.
    keep: {conv name: indices of the output channels to keep}.

  Returns:
    A functional model with the same inputs and outputs, fewer filters in
    the named convs and every downstream layer sliced to match.

  Raises:
    SlimError: a bad layer or index, or a structure that cannot be sliced.
  """
  model = _functional(require_keras2_model(model))
  graph = _graph(model)
  keep = {name: _checked_indices(model, name, indices)
          for name, indices in keep.items()}
  plan = _propagate(model, graph, keep)
  config = model.get_config()
  for entry in config["layers"]:
    if entry["name"] in keep:
      entry["config"]["filters"] = len(keep[entry["name"]])
  rebuilt = keras.Model.from_config(config)
  for name in graph.order:
    incoming, outgoing = plan[name]
    rebuilt.get_layer(name).set_weights(_sliced_weights(
        model.get_layer(name), incoming, outgoing, keep.get(name)))
  return rebuilt


def _checked_indices(model, name, indices) -> np.ndarray:
  layer = get_layer(model, name, SlimError)
  if not _is_conv(layer):
    raise SlimError(f"Layer {name!r} is a {type(layer).__name__}; only "
                    "channels-last, ungrouped Conv2D layers lose filters.")
  indices = np.unique(np.asarray(indices, dtype=np.int64))
  if indices.size == 0 or indices[0] < 0 or indices[-1] >= layer.filters:
    raise SlimError(f"Channels to keep in {name!r} must be a non-empty set of "
                    f"indices in [0, {layer.filters}); got {indices.tolist()}.")
  return indices


# --- dead channels -------------------------------------------------------------

def dead_channels(model: keras.Model) -> Dict[str, np.ndarray]:
  """{conv: channels whose output is exactly zero wherever it is used}.

  A channel is dead when the BN after its conv has gamma == 0 and beta <= 0
  (its output is then the constant beta), a ReLU follows, and the path to
  every consumer maps zero to zero; removing it leaves the model's outputs
  unchanged.
  """
  model = _functional(require_keras2_model(model))
  graph = _graph(model)
  dead = {}
  for name in prunable_convs(model)[0]:
    batch_norm = _following_bn(model, graph, name)
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
    if _is_conv(layer) or isinstance(layer, layers.Dense):
      continue
    if isinstance(layer, (layers.ReLU, layers.Activation)):
      if not _zero_to_zero_relu(layer):
        return False
    elif not isinstance(layer, _ZERO_PRESERVING):
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
  model = _functional(require_keras2_model(model))
  graph = _graph(model)
  convs = prunable_convs(model)[0] if convs is None else convs
  names = {_following_bn(model, graph, name).name for name in convs
           if _following_bn(model, graph, name) is not None}
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
         teacher: Optional[keras.Model] = None, alpha: float = 0.5,
         temperature: float = 2.0, verbose: int = 2) -> SlimResult:
  """Sparsity-trains, then prunes channels in `prune_count` steps, fine-tuning.

  Args:
    model: a trained Keras 2 model that outputs logits; not modified.
    dataset: training data, and validation data for the per-step accuracy.
    config: rate, schedule, criterion, scope and training settings.
    teacher: if given (and config.use_teacher), fine-tuning distills from it.

  Returns:
    A SlimResult; `result.model` is the final, smaller model.

  Raises:
    SlimError: nothing can be slimmed, or a named layer cannot be.
  """
  model = _functional(require_keras2_model(model))
  convs, skipped = prunable_convs(model, config.criterion, config.layers)
  if not convs:
    raise SlimError(f"Model {model.name!r} has no conv that can be slimmed: "
                    + "; ".join(f"{name}: {why}" for name, why in skipped.items()))
  teacher = teacher if config.use_teacher else None
  train = dict(batch_size=config.batch_size, learning_rate=config.learning_rate,
               teacher=teacher, alpha=alpha, temperature=temperature,
               verbose=verbose)
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
