"""Which channels flow where in a Keras model, and their physical removal.

The layer graph of a functional model, the propagation of a conv's kept
output channels to every layer they flow into (BN entries, a DepthwiseConv2D
and the BN after it, the next conv's input channels, the rows of a Dense after
Flatten or global pooling), and `remove_channels`, which rebuilds the model
with fewer filters and every coupled weight sliced to match. Structures that
cannot be sliced consistently are refused with SlimError naming the layer.
Used by tfopt.techniques.slim.algorithm (importance, selection, schedule).
"""

import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfopt.core._keras import get_layer, inbound_layer_names, keras, require_keras2_model
from tfopt.core.errors import TfoptError
from tfopt.keras_io.lowrank_layers import LowRankDense, SpatialSVDConv2D

__all__ = ["SlimError", "layers", "ZERO_PRESERVING", "MERGE", "functional_model",
           "layer_graph", "is_conv", "is_transpose", "is_producer", "is_per_channel", "following_bn",
           "propagate", "remove_channels", "width", "input_shapes",
           "normalizes_channels"]

layers = keras.layers

# Layers that act on each channel on its own: a kept channel stays at its place.
_PER_CHANNEL = (layers.ReLU, layers.LeakyReLU, layers.ELU, layers.ThresholdedReLU,
                layers.Dropout, layers.GaussianNoise, layers.GaussianDropout,
                layers.AlphaDropout, layers.ActivityRegularization,
                layers.MaxPooling2D, layers.AveragePooling2D,
                layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D,
                layers.ZeroPadding2D, layers.Cropping2D, layers.UpSampling2D)
# Layers that map an all-zero channel to an all-zero channel.
ZERO_PRESERVING = (layers.ReLU, layers.Dropout, layers.MaxPooling2D,
                    layers.AveragePooling2D, layers.GlobalAveragePooling2D,
                    layers.GlobalMaxPooling2D, layers.ZeroPadding2D,
                    layers.Flatten)
MERGE = (layers.Add, layers.Subtract, layers.Multiply, layers.Average,
          layers.Maximum, layers.Minimum)


class SlimError(TfoptError, ValueError):
  """A rate, layer or model structure that channel removal cannot handle."""


# --- the layer graph ----------------------------------------------------------

@dataclasses.dataclass
class _Graph:
  """Who feeds whom in a functional model, read from its config."""
  order: List[str]
  inputs: Dict[str, List[str]]
  consumers: Dict[str, List[str]]
  outputs: List[str]


def functional_model(model: keras.Model) -> keras.Model:
  if isinstance(model, keras.Sequential):
    return keras.Model(model.inputs, model.outputs, name=model.name)
  return model


def layer_graph(model: keras.Model) -> _Graph:
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
    # References are [layer, node, tensor, kwargs]; constants (a TFOpLambda's
    # scalar) are not layers.
    inputs[name] = [source for node in nodes for source in inbound_layer_names(node)]
    for source in inputs[name]:
      consumers[source].append(name)
  return _Graph(order, inputs, consumers,
                [output[0] for output in config["output_layers"]])


def is_conv(layer) -> bool:
  return (type(layer) is layers.Conv2D and layer.groups == 1  # pylint: disable=unidiomatic-typecheck
          and layer.data_format == "channels_last")


def _is_separable(layer) -> bool:
  return (type(layer) is layers.SeparableConv2D  # pylint: disable=unidiomatic-typecheck
          and layer.data_format == "channels_last")


def is_transpose(layer) -> bool:
  """A Conv2DTranspose (a U-Net's up stage): its kernel is (h, w, out, in)."""
  return (type(layer) is layers.Conv2DTranspose  # pylint: disable=unidiomatic-typecheck
          and layer.data_format == "channels_last" and getattr(layer, "groups", 1) == 1)


def is_producer(layer) -> bool:
  """A layer whose output channels can be removed: its filters or units."""
  return (is_conv(layer) or _is_separable(layer) or is_transpose(layer)
          or type(layer) is layers.Dense)  # pylint: disable=unidiomatic-typecheck


def _elementwise_activation(layer) -> bool:
  name = keras.activations.serialize(layer.activation)
  return isinstance(name, str) and name not in ("softmax", "log_softmax")


def _scalar_rescaling(layer) -> bool:
  return isinstance(layer, layers.Rescaling) and all(
      np.size(value) == 1 for value in (layer.scale, layer.offset))


def _channels_kept_in_place(layer) -> bool:
  """A Reshape that keeps the last axis: channel c stays channel c."""
  if not isinstance(layer, layers.Reshape):
    return False
  before, after = input_shapes(layer)[0], layer.output_shape
  return before[-1] is not None and before[-1] == after[-1]


def is_per_channel(layer) -> bool:
  """Whether `layer` acts on each channel on its own, leaving it in place."""
  if getattr(layer, "data_format", "channels_last") != "channels_last":
    return False
  return (isinstance(layer, _PER_CHANNEL) or _scalar_rescaling(layer)
          or _channels_kept_in_place(layer)
          or (isinstance(layer, layers.Activation) and _elementwise_activation(layer)))


# --- which channels survive where ----------------------------------------------

def _expand_depthwise(keep: np.ndarray, multiplier: int) -> np.ndarray:
  return (keep[:, None] * multiplier + np.arange(multiplier)).reshape(-1)


def propagate(model: keras.Model, graph: _Graph,
               keep: Dict[str, np.ndarray]) -> Dict[str, tuple]:
  """{layer: (kept input channels or None, kept output channels or None)}.

  None means "all channels". Raises SlimError where the kept channels cannot
  be carried through a layer.
  """
  kept_out: Dict[str, Optional[np.ndarray]] = {}
  plan = {}
  by_name = {layer.name: layer for layer in model.layers}
  for name in graph.order:
    layer = by_name[name]
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
    if not is_producer(layer):
      raise SlimError(f"Layer {name!r} ({type(layer).__name__}) is not a "
                      "channels-last, ungrouped Conv2D or a Dense; only those "
                      "have their filters removed.")
    return np.asarray(own_keep)
  if isinstance(layer, MERGE):
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
    widths = [int(shape[-1]) for shape in input_shapes(layer)]
    offsets = np.cumsum([0] + widths[:-1])
    return np.concatenate([
        (np.arange(width) if kept is None else kept) + offset
        for kept, width, offset in zip(sources, widths, offsets)])
  if incoming is None:
    return None
  if is_producer(layer) or isinstance(layer, (LowRankDense,
                                           SpatialSVDConv2D)):
    return None  # consumes the channels; its own outputs are all kept
  if isinstance(layer, layers.DepthwiseConv2D):
    return _expand_depthwise(incoming, layer.depth_multiplier)
  if isinstance(layer, layers.BatchNormalization):
    if not normalizes_channels(layer):
      raise SlimError(f"BatchNormalization {name!r} normalizes axis "
                      f"{layer.axis}, not the channels.")
    return incoming
  if isinstance(layer, layers.Flatten):
    shape = [int(size) for size in input_shapes(layer)[0][1:]]
    positions = np.arange(int(np.prod(shape[:-1])))[:, None] * shape[-1]
    return (positions + incoming[None, :]).reshape(-1)
  if is_per_channel(layer):
    return incoming
  raise SlimError(f"Removed channels flow into {type(layer).__name__} {name!r}, "
                  "which channel removal cannot slice; exclude the conv that "
                  "feeds it (SlimConfig.layers).")


def _same(first, second) -> bool:
  if first is None or second is None:
    return first is None and second is None
  return np.array_equal(first, second)


def input_shapes(layer) -> list:
  """The shapes of a layer's inputs, always as a list."""
  shape = layer.input_shape
  return shape if isinstance(shape, list) else [shape]


def normalizes_channels(layer) -> bool:
  """A BatchNormalization over the last (channel) axis only."""
  rank = len(input_shapes(layer)[0])
  axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
  return [axis % rank for axis in axes] == [rank - 1]


def following_bn(model, graph, name):
  """The BatchNormalization that alone consumes conv `name`, or None."""
  consumers = graph.consumers[name]
  if len(consumers) == 1:
    layer = model.get_layer(consumers[0])
    if isinstance(layer, layers.BatchNormalization) and layer.scale:
      return layer
  return None


# --- physical removal -----------------------------------------------------------

def _sliced_weights(layer, incoming, outgoing, own_keep):
  """The layer's weights with removed input / output channels dropped."""
  weights = layer.get_weights()
  if not weights or (incoming is None and own_keep is None):
    return weights
  if is_conv(layer):
    kernel = weights[0]
    if incoming is not None:
      kernel = kernel[:, :, incoming, :]
    if own_keep is not None:
      kernel = kernel[..., own_keep]
      weights = weights[:1] + [bias[own_keep] for bias in weights[1:]]
    return [kernel] + weights[1:]
  if is_transpose(layer):
    kernel = weights[0] if incoming is None else weights[0][..., incoming]
    if own_keep is None:
      return [kernel] + weights[1:]
    return [kernel[:, :, own_keep, :]] + [bias[own_keep] for bias in weights[1:]]
  if isinstance(layer, layers.DepthwiseConv2D):
    return [weights[0][:, :, incoming, :]] + [bias[outgoing] for bias in weights[1:]]
  if _is_separable(layer):
    return _sliced_separable(layer, weights, incoming, own_keep)
  if isinstance(layer, layers.BatchNormalization):
    return [weight[incoming] for weight in weights]
  if isinstance(layer, layers.Dense) and own_keep is not None:
    kernel = weights[0] if incoming is None else weights[0][incoming]
    return [kernel[:, own_keep]] + [bias[own_keep] for bias in weights[1:]]
  if isinstance(layer, (layers.Dense, LowRankDense)):
    return [weights[0][incoming]] + weights[1:]
  if isinstance(layer, SpatialSVDConv2D):
    return [weights[0][:, :, incoming, :]] + weights[1:]
  raise SlimError(f"Cannot slice the weights of {type(layer).__name__} "
                  f"{layer.name!r}.")


def _sliced_separable(layer, weights, incoming, own_keep):
  """SeparableConv2D: input channels leave the depthwise and pointwise kernels,
  output channels the pointwise kernel and bias."""
  depthwise, pointwise = weights[:2]
  if incoming is not None:
    depthwise = depthwise[:, :, incoming, :]
    pointwise = pointwise[:, :, _expand_depthwise(incoming, layer.depth_multiplier), :]
  biases = weights[2:]
  if own_keep is not None:
    pointwise = pointwise[..., own_keep]
    biases = [bias[own_keep] for bias in biases]
  return [depthwise, pointwise] + biases


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
  model = functional_model(require_keras2_model(model))
  graph = layer_graph(model)
  keep = {name: _checked_indices(model, name, indices)
          for name, indices in keep.items()}
  plan = propagate(model, graph, keep)
  config = model.get_config()
  for entry in config["layers"]:
    _resize_config(entry, keep.get(entry["name"]), plan[entry["name"]][1])
  rebuilt = keras.Model.from_config(config)
  for name in graph.order:
    incoming, outgoing = plan[name]
    rebuilt.get_layer(name).set_weights(_sliced_weights(
        model.get_layer(name), incoming, outgoing, keep.get(name)))
  return rebuilt


def _resize_config(entry, own_keep, outgoing):
  """Writes a layer's new channel count into its config entry.

  The entry's build_config (its old input shape) goes: a custom layer such as
  LowRankDense would be built from it, with its old fan-in, before the call.
  """
  entry.pop("build_config", None)
  config = entry["config"]
  if own_keep is not None:
    config["filters" if "filters" in config else "units"] = len(own_keep)
  elif (entry["class_name"] == "Reshape" and outgoing is not None
        and config["target_shape"][-1] != -1):
    config["target_shape"] = list(config["target_shape"][:-1]) + [len(outgoing)]


def width(layer) -> int:
  """Output channels of a Conv2D / SeparableConv2D (filters) or Dense (units)."""
  return int(layer.filters if hasattr(layer, "filters") else layer.units)


def _checked_indices(model, name, indices) -> np.ndarray:
  layer = get_layer(model, name, SlimError)
  if not is_producer(layer):
    raise SlimError(f"Layer {name!r} is a {type(layer).__name__}; only "
                    "channels-last, ungrouped Conv2D and Dense layers lose filters.")
  indices = np.unique(np.asarray(indices, dtype=np.int64))
  if indices.size == 0 or indices[0] < 0 or indices[-1] >= width(layer):
    raise SlimError(f"Channels to keep in {name!r} must be a non-empty set of "
                    f"indices in [0, {width(layer)}); got {indices.tolist()}.")
  return indices


