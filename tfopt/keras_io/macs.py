"""Multiply-accumulates per image of a Keras model, layer by layer; its parameters.

Counts the layers that do the arithmetic: Conv2D, DepthwiseConv2D, Dense and
tfopt's low-rank layers. BatchNorm (folded into the convolution by the TFLite
converter), activations, pooling and reshapes are not counted.
"""

import dataclasses
from typing import List, Optional

import numpy as np

from tfopt.core._keras import keras
from tfopt.keras_io.lowrank_layers import LowRankDense, SpatialSVDConv2D

__all__ = ["LayerMacs", "layer_macs", "count_macs", "total_macs", "macs_if_known",
           "parameter_counts"]

# Variables of tfmot's quantize wrappers that are ranges and counters, not
# parameters of the network.
_QUANTIZER_VARIABLES = ("_min:0", "_max:0", "optimizer_step:0")


@dataclasses.dataclass(frozen=True)
class LayerMacs:
  layer: str
  kind: str
  macs: int


def _spatial(shape) -> int:
  """Positions per image: the product of all dimensions but batch and channels."""
  return int(np.prod([int(size) for size in shape[1:-1]], dtype=np.int64))


_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
          keras.layers.DepthwiseConv2D, keras.layers.SeparableConv1D,
          keras.layers.SeparableConv2D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)


def _conv_macs(layer, input_shape, output_shape) -> int:
  """A convolution's MACs for one example: 1-, 2- or 3-D, depthwise, separable
  (depthwise then pointwise) or transposed (each input position scatters)."""
  window = int(np.prod(layer.kernel_size))
  channels_in = int(input_shape[-1])
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    return _spatial(output_shape) * int(output_shape[-1]) * window
  if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
    depthwise = channels_in * layer.depth_multiplier
    return _spatial(output_shape) * depthwise * (window + int(output_shape[-1]))
  if isinstance(layer, _TRANSPOSED):
    return _spatial(input_shape) * channels_in * window * int(output_shape[-1])
  per_output = window * channels_in // getattr(layer, "groups", 1)
  return _spatial(output_shape) * int(output_shape[-1]) * per_output


def layer_macs(layer, input_shape, output_shape) -> int:
  """MACs of one layer for one image (0 for layers that are not counted)."""
  while isinstance(layer, keras.layers.Wrapper):  # e.g. tfmot's quantize wrapper
    layer = layer.layer
  if isinstance(layer, SpatialSVDConv2D):
    middle = layer.vertical.compute_output_shape(input_shape)
    return (_conv_macs(layer.vertical, input_shape, middle)
            + _conv_macs(layer.horizontal, middle, output_shape))
  if isinstance(layer, _CONVS):
    return _conv_macs(layer, input_shape, output_shape)
  positions = max(1, _spatial(output_shape))
  if isinstance(layer, LowRankDense):
    return positions * layer.rank * (int(input_shape[-1]) + layer.units)
  if isinstance(layer, keras.layers.Dense):
    return positions * int(input_shape[-1]) * layer.units
  return 0


def count_macs(model: keras.Model) -> List[LayerMacs]:
  """Per-layer MACs of a built Sequential or functional model (one image)."""
  table = []
  for layer in model.layers:
    if isinstance(layer, keras.layers.InputLayer):
      continue
    macs = layer_macs(layer, layer.input_shape, layer.output_shape)
    if macs:
      table.append(LayerMacs(layer.name, type(layer).__name__, int(macs)))
  return table


def total_macs(model: keras.Model) -> int:
  """MACs of the whole model for one image (the sum of count_macs)."""
  return sum(entry.macs for entry in count_macs(model))


def macs_if_known(model: keras.Model) -> Optional[int]:
  """total_macs, or None for a model with a layer whose shapes are not static."""
  try:
    return int(total_macs(model))
  except (AttributeError, TypeError, ValueError):
    return None


def parameter_counts(model: keras.Model):
  """(parameters, nonzero parameters) of `model`, quantizer ranges left out."""
  values = [weight.numpy() for weight in model.weights
            if not weight.name.endswith(_QUANTIZER_VARIABLES)]
  return (int(sum(value.size for value in values)),
          int(sum(np.count_nonzero(value) for value in values)))
