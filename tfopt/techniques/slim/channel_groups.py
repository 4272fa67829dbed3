"""Channel groups: which filters must be removed together (a dependency graph).

A residual Add sums two tensors channel by channel, so every conv feeding it
must keep the same channels; a squeeze-excite Multiply ties the excitation
conv to the block it scales; a depthwise conv and the BatchNorms after a conv
act on that conv's channels. Following Torch-Pruning's dependency graph (Fang
et al. 2023, "DepGraph: Towards Any Structural Pruning"), every tensor's
channels are traced back to the *channel space* that made them (the output
channels of one Conv2D or Dense). Layers that combine tensors channel-wise
(Add, Multiply, ...) merge the spaces they combine into one group. A group is
removed as one: each of its producers loses the same filters, every layer the
channels flow into is sliced (tfopt.techniques.slim.channels), and its importance is scored
over all its members (tfopt.techniques.slim.algorithm).

A group cannot be slimmed ("frozen") when its channels reach a model output,
come from the model input, flow into a layer channel removal cannot slice, or
are combined out of step (an Add of a Concatenate with one conv); the reason
is kept so the report can say why.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfopt.core._keras import keras, require_keras2_model
from tfopt.keras_io.lowrank_layers import LowRankDense, SpatialSVDConv2D
from tfopt.techniques.slim.channels import (MERGE, SlimError, functional_model, input_shapes,
                                            is_per_channel, is_producer, layer_graph,
                                            normalizes_channels, propagate)

__all__ = ["ChannelGroup", "channel_groups"]

layers = keras.layers
# (BatchNorm name, its channel positions, the group channel at each position)
Norm = Tuple[str, np.ndarray, np.ndarray]


@dataclasses.dataclass
class ChannelGroup:
  """Output channels of one or more convs / Dense that are removed together.

  name: the first producer in graph order, which names the group.
  producers: every Conv2D / Dense whose output channels are the group's.
  width: channels in the group (each producer's filters).
  norms: (BatchNorm name, its channel positions, the group channel at each)
    for every scaled BatchNorm that acts on the group's channels.
  frozen: why the group cannot be slimmed, or None.
  """
  name: str
  producers: List[str]
  width: int
  norms: List[Norm]
  frozen: Optional[str] = None

  @property
  def label(self) -> str:
    extra = len(self.producers) - 1
    return self.name + (f" (+{extra} coupled)" if extra else "")


class _Spaces:
  """Union-find over channel spaces, with producers and freeze reasons."""

  def __init__(self):
    self.parent: List[int] = []
    self.producers: Dict[int, List[str]] = {}
    self.frozen: Dict[int, str] = {}

  def new(self, width: int, producer: Optional[str] = None,
          frozen: Optional[str] = None) -> np.ndarray:
    """A fresh space; returns its signature: (space, channel) per channel."""
    space = len(self.parent)
    self.parent.append(space)
    self.producers[space] = [producer] if producer else []
    if frozen:
      self.frozen[space] = frozen
    return np.stack([np.full(width, space), np.arange(width)], axis=1)

  def root(self, space: int) -> int:
    while self.parent[space] != space:
      self.parent[space] = self.parent[self.parent[space]]
      space = self.parent[space]
    return space

  def union(self, first: int, second: int):
    first, second = self.root(first), self.root(second)
    if first == second:
      return
    low, high = sorted((first, second))  # the earlier space names the group
    self.parent[high] = low
    self.producers[low] += self.producers.pop(high)
    if high in self.frozen:
      self.frozen.setdefault(low, self.frozen.pop(high))

  def freeze(self, signature: np.ndarray, reason: str):
    for space in np.unique(signature[:, 0]):
      self.frozen.setdefault(self.root(int(space)), reason)


def _width(shape) -> int:
  return int(shape[-1]) if shape and shape[-1] is not None else 0


class _Tracer:
  """Walks the graph once, giving every layer output a channel signature."""

  def __init__(self, model):
    self.model = model
    self.graph = layer_graph(model)
    self.spaces = _Spaces()
    self.signatures: Dict[str, np.ndarray] = {}
    self.norms: List[Tuple[str, np.ndarray]] = []

  def run(self):
    for name in self.graph.order:
      layer = self.model.get_layer(name)
      inputs = self._inputs(layer)
      self.signatures[name] = self._trace(layer, inputs)
      if name in self.graph.outputs:
        self.spaces.freeze(self.signatures[name],
                           f"its channels reach the model output {name!r}.")
    return self

  def _inputs(self, layer) -> List[np.ndarray]:
    """The inputs' signatures; a width that does not match gets a frozen space."""
    sources = [self.signatures[source] for source in self.graph.inputs[layer.name]]
    if not sources:
      return []
    shapes = input_shapes(layer)
    if len(shapes) != len(sources):
      return [self.spaces.new(_width(shape), frozen=f"{layer.name!r} has inputs "
                              "channel removal cannot follow.") for shape in shapes]
    return [signature if len(signature) == _width(shape) else self.spaces.new(
        _width(shape), frozen=f"{layer.name!r} has inputs channel removal cannot follow.")
            for signature, shape in zip(sources, shapes)]

  def _trace(self, layer, inputs: List[np.ndarray]) -> np.ndarray:
    name, width = layer.name, _width(layer.output_shape if not isinstance(
        layer.output_shape, list) else layer.output_shape[0])
    if isinstance(layer, layers.InputLayer):
      return self.spaces.new(width, frozen="its channels come from the model input.")
    if is_producer(layer):
      return self.spaces.new(width, producer=name)
    if isinstance(layer, (LowRankDense, SpatialSVDConv2D)):
      return self.spaces.new(width, frozen=f"{type(layer).__name__} {name!r} makes "
                             "them, whose filters are not removed.")
    if isinstance(layer, layers.DepthwiseConv2D) and layer.data_format == "channels_last":
      return np.repeat(inputs[0], layer.depth_multiplier, axis=0)
    if isinstance(layer, layers.BatchNormalization) and normalizes_channels(layer):
      if layer.scale:
        self.norms.append((name, inputs[0]))
      return inputs[0]
    if is_per_channel(layer):
      return inputs[0]
    if isinstance(layer, MERGE):
      return self._merge(layer, inputs)
    if isinstance(layer, layers.Concatenate) and layer.axis in (-1, len(
        input_shapes(layer)[0]) - 1):
      return np.concatenate(inputs, axis=0)
    if isinstance(layer, layers.Flatten) and layer.data_format == "channels_last":
      return np.tile(inputs[0], (width // max(1, len(inputs[0])), 1))
    return self._unknown(layer, inputs, width)

  def _merge(self, layer, inputs):
    kind = f"{type(layer).__name__} {layer.name!r}"
    if any(len(other) != len(inputs[0]) for other in inputs[1:]):
      for signature in inputs:
        self.spaces.freeze(signature, f"{kind} broadcasts inputs of different widths.")
      return inputs[0]
    for other in inputs[1:]:
      if not np.array_equal(other[:, 1], inputs[0][:, 1]):
        for signature in inputs:
          self.spaces.freeze(signature, f"{kind} adds channels out of step (e.g. a "
                             "Concatenate and a single conv).")
      for first, second in zip(inputs[0][:, 0], other[:, 0]):
        self.spaces.union(int(first), int(second))
    return inputs[0]

  def _unknown(self, layer, inputs, width):
    kind = f"{type(layer).__name__} {layer.name!r}"
    for signature in inputs:
      self.spaces.freeze(signature, f"they flow into {kind}, which channel "
                         "removal cannot slice.")
    return self.spaces.new(width, frozen=f"{kind} makes them, whose channels are "
                           "not removed.")

  def groups(self) -> List[ChannelGroup]:
    spaces = self.spaces
    found: Dict[int, ChannelGroup] = {}
    for space, producers in spaces.producers.items():
      if producers and spaces.root(space) == space:
        width = _width(self.model.get_layer(producers[0]).output_shape)
        found[space] = ChannelGroup(producers[0], list(producers), width, [],
                                    spaces.frozen.get(space))
    for name, signature in self.norms:
      roots = np.array([spaces.root(int(space)) for space in signature[:, 0]])
      for root in np.unique(roots):
        if int(root) in found:
          positions = np.flatnonzero(roots == root)
          found[int(root)].norms.append((name, positions, signature[positions, 1]))
    return sorted(found.values(), key=lambda group: self.graph.order.index(group.name))


def channel_groups(model: keras.Model) -> List[ChannelGroup]:
  """Every group of coupled output channels in a Keras 2 model, in graph order.

  Each group not frozen by the tracing is also checked by tfopt.techniques.slim.channels'
  propagation (removing its last channel must go through the whole graph);
  a group that fails is frozen with that error.
  """
  model = functional_model(require_keras2_model(model))
  tracer = _Tracer(model).run()
  groups = tracer.groups()
  for group in groups:
    if group.frozen is None and group.width >= 2:
      keep = {name: np.arange(group.width - 1) for name in group.producers}
      try:
        propagate(model, tracer.graph, keep)
      except SlimError as error:
        group.frozen = str(error)
    elif group.frozen is None:
      group.frozen = "it has a single channel."
  return groups
