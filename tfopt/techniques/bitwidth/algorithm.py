"""Bit-width study: min-max weight quantization to N bits, accuracy for each N.

The classic recipe's question: how few bits can the weights take before
accuracy breaks? Each conv / Dense kernel is quantized with an affine min-max
grid of 2**N levels, per tensor (one grid) or per output channel (a grid each),
with 0.0 kept exactly representable (as TFLite does, so pruned zeros stay
zero); biases and BatchNorm stay float. The model then runs in Keras with the
dequantized weights ("fake quantization"), which isolates the weight error:
activations stay float. LiteRT has no sub-8-bit kernels to run it for real.
"""

import dataclasses
from typing import List, Sequence

import numpy as np

from tfopt.config import GRANULARITIES
from tfopt.core._keras import clone_model, keras, kernel_attribute, require_keras2_model
from tfopt.core.errors import TfoptError
from tfopt.training.train import accuracy

__all__ = ["BitwidthError", "GRANULARITIES", "quantize_minmax", "quantize_model",
           "BitwidthResult", "bitwidth_study"]

_KERNEL_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


class BitwidthError(TfoptError, ValueError):
  """A bit width or granularity that the study cannot use."""


def quantize_minmax(values: np.ndarray, bits: int, per_channel: bool = False,
                    channel_axis: int = -1) -> np.ndarray:
  """`values` quantized to 2**bits affine levels and dequantized back.

  The range is [min(values, 0), max(values, 0)], so 0.0 lies on the grid;
  per_channel gives each slice along `channel_axis` its own range.
  """
  if not isinstance(bits, int) or not 1 <= bits <= 16:
    raise BitwidthError(f"bits={bits!r} is invalid: it must be an integer in [1, 16].")
  axes = (tuple(axis for axis in range(values.ndim)
                if axis != channel_axis % values.ndim) if per_channel else None)
  low = np.minimum(np.min(values, axis=axes, keepdims=True), 0.0)
  high = np.maximum(np.max(values, axis=axes, keepdims=True), 0.0)
  levels = 2 ** bits - 1
  scale = np.where(high > low, (high - low) / levels, 1.0)
  zero_point = np.round(-low / scale)
  codes = np.clip(np.round(values / scale) + zero_point, 0, levels)
  return ((codes - zero_point) * scale).astype(values.dtype)


def quantize_model(model: keras.Model, bits: int, granularity: str) -> keras.Model:
  """A copy of `model` whose conv / Dense kernels are min-max quantized."""
  require_keras2_model(model)
  if granularity not in GRANULARITIES:
    raise BitwidthError(f"Unknown granularity {granularity!r}; choose one of "
                        f"{', '.join(GRANULARITIES)}.")
  copy = clone_model(model)
  for layer in copy.layers:
    if not isinstance(layer, _KERNEL_LAYERS):
      continue
    kernel = getattr(layer, kernel_attribute(layer))
    # Depthwise kernels (h, w, in, multiplier): a channel is an input slice.
    axis = -2 if isinstance(layer, keras.layers.DepthwiseConv2D) else -1
    kernel.assign(quantize_minmax(kernel.numpy(), bits,
                                  granularity == "per_channel", axis))
  return copy


@dataclasses.dataclass(frozen=True)
class BitwidthResult:
  """Accuracy of the model with its kernels at `bits` bits."""
  bits: int
  granularity: str
  accuracy: float
  accuracy_drop: float  # float accuracy minus this one, in [0, 1] units
  weight_sqnr_db: float  # signal-to-quantization-noise ratio of all kernels


def _sqnr_db(model: keras.Model, quantized: keras.Model) -> float:
  signal = noise = 0.0
  for original, copy in zip(model.layers, quantized.layers):
    if isinstance(original, _KERNEL_LAYERS):
      weights = getattr(original, kernel_attribute(original)).numpy()
      error = getattr(copy, kernel_attribute(copy)).numpy() - weights
      signal += float(np.sum(weights ** 2))
      noise += float(np.sum(error ** 2))
  return float("inf") if noise == 0 else float(10 * np.log10(signal / noise))


def bitwidth_study(model: keras.Model, images: np.ndarray, labels: np.ndarray,
                   bits: Sequence[int] = (8, 4, 2),
                   granularities: Sequence[str] = GRANULARITIES,
                   batch_size: int = 1000) -> List[BitwidthResult]:
  """Accuracy on (images, labels) for every bit width and granularity."""
  baseline = accuracy(model, images, labels, batch_size)
  results = []
  for width in bits:
    for granularity in granularities:
      quantized = quantize_model(model, width, granularity)
      value = accuracy(quantized, images, labels, batch_size)
      results.append(BitwidthResult(width, granularity, value, baseline - value,
                                    _sqnr_db(model, quantized)))
  return results
