"""4-bit weight QAT: fine-tuning for an int4 file (tfmot quantizers, 4 bits).

LiteRT's quantizer (tfopt.litert.int4) gives each output channel of a kernel one
scale, max|w| / 7, and rounds the kernel to the integers -7..7. Fine-tuning
with that same rounding in the forward pass (tfmot's LastValueQuantizer: 4
bits, per output channel, symmetric, narrow range; the gradient passes
straight through) lets the other weights make up for what the rounding
loses. The kernels are then set to their rounded values (`on_grid`), so the
quantizer writes them with no further error. The converter folds BatchNorm
into the kernel before quantizing: that scales each output channel by one
number, and the per-channel grid scales with it.

Only Conv2D and Dense kernels whose layer names match `layers` (the
--int4_layers expression) are trained on the grid: the ones the int4 file
gives 4 bits. Activations stay float while training (the int4 file's int8
activations lose far less than its 4-bit weights). A pruned model keeps its
zeros (the mask is fixed when training starts, as tfmot's PQAT does), since
0 lies on the grid.
"""

import re
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras import (
    quantize_layout_transform)

from tfopt.core._keras import clone_model, keras, require_keras2_model
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset
from tfopt.techniques.distill.algorithm import Teacher, trainer_for
from tfopt.techniques.qat.algorithm import QatResult, annotated_copy
from tfopt.techniques.qat.settings import QatConfig
from tfopt.training.train import FitContext

__all__ = ["QatInt4Error", "LEVELS", "grid_layers", "on_grid", "qat_int4"]

# The int4 kernel's integers are -LEVELS..LEVELS (scale max|w| / LEVELS).
LEVELS = 7


class QatInt4Error(TfoptError, ValueError):
  """4-bit weight QAT cannot run as asked."""


def grid_layers(model: keras.Model, layers: str = ".*", required: bool = False):
  """Names of the Conv2D / Dense layers whose kernels the int4 file makes 4-bit.

  Raises:
    QatInt4Error: `required` and there are none.
  """
  names = [layer.name for layer in model.layers
           if type(layer) in (keras.layers.Conv2D, keras.layers.Dense)
           and re.search(layers, layer.name)]
  if required and not names:
    raise QatInt4Error(f"--qat_bits 4 trains Conv2D and Dense kernels for int4, and "
                       f"int4_layers={layers!r} matches none of {model.name!r}'s.")
  return names


def on_grid(kernel: np.ndarray) -> np.ndarray:
  """`kernel` rounded to LiteRT's int4 grid: per output channel (last axis),
  integers -7..7 times max|w| / 7."""
  bound = np.max(np.abs(kernel), axis=tuple(range(kernel.ndim - 1)), keepdims=True)
  scale = np.where(bound > 0, bound / LEVELS, 1.0)
  return (np.clip(np.round(kernel / scale), -LEVELS, LEVELS) * scale).astype(kernel.dtype)


class _Int4KernelQuantizer(tfmot.quantization.keras.quantizers.LastValueQuantizer):
  """4-bit per-channel symmetric fake quantization; keeps zeros if asked."""

  def __init__(self, keep_zeros: bool = False):
    super().__init__(num_bits=4, per_axis=True, symmetric=True, narrow_range=True)
    self.keep_zeros = keep_zeros

  def build(self, tensor_shape, name, layer):
    weights = super().build(tensor_shape, name, layer)
    if self.keep_zeros:  # the kernel's zeros when training starts
      kernel = getattr(layer.layer, name)
      weights["mask"] = tf.cast(tf.not_equal(kernel, 0.0), kernel.dtype)
    return weights

  def __call__(self, inputs, training, weights, **kwargs):
    if "mask" in weights:
      inputs = inputs * weights["mask"]
    return super().__call__(inputs, training, weights, **kwargs)

  def get_config(self):
    return {"keep_zeros": self.keep_zeros}


class _Int4KernelConfig(tfmot.quantization.keras.QuantizeConfig):
  """A Conv2D / Dense layer whose kernel alone is fake-quantized to 4 bits."""

  def __init__(self, keep_zeros: bool = False):
    self.keep_zeros = keep_zeros

  def get_weights_and_quantizers(self, layer):
    return [(layer.kernel, _Int4KernelQuantizer(self.keep_zeros))]

  def get_activations_and_quantizers(self, layer):
    return []

  def set_quantize_weights(self, layer, quantize_weights):
    layer.kernel = quantize_weights[0]

  def set_quantize_activations(self, layer, quantize_activations):
    pass

  def get_output_quantizers(self, layer):
    return []

  def get_config(self):
    return {"keep_zeros": self.keep_zeros}


class _AsItIs(quantize_layout_transform.QuantizeLayoutTransform):
  """No layout change: the model keeps its BatchNorm layers (the converter folds them)."""

  def apply(self, model, layer_quantize_map):
    return model, layer_quantize_map


class _KernelsOnlyScheme(tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme):

  def get_layout_transformer(self):
    return _AsItIs()


def _fake_quantized(model: keras.Model, names, keep_zeros: bool) -> keras.Model:
  """A copy of `model` whose named layers' kernels are 4-bit fake-quantized."""

  annotated = annotated_copy(model, lambda layer: _Int4KernelConfig(keep_zeros)
                             if layer.name in names else False)
  with tfmot.quantization.keras.quantize_scope(
      {"_Int4KernelConfig": _Int4KernelConfig, "_Int4KernelQuantizer": _Int4KernelQuantizer}):
    return tfmot.quantization.keras.quantize_apply(annotated, scheme=_KernelsOnlyScheme())


def _baked(model: keras.Model, trained: keras.Model, names) -> keras.Model:
  """A plain copy of `model` with `trained`'s weights, the named kernels on the grid."""
  plain = clone_model(model)
  for layer in plain.layers:
    if layer.name in names:
      wrapper = trained.get_layer(f"quant_{layer.name}")
      values = {_short(weight): weight.numpy() for weight in wrapper.weights}
      layer.set_weights([on_grid(values["kernel"]) if weight is layer.kernel
                         else values[_short(weight)] for weight in layer.weights])
    elif layer.weights:
      layer.set_weights(trained.get_layer(layer.name).get_weights())
  return plain


def _short(weight) -> str:
  """A variable's own name: "kernel" for "quant_fc/kernel:0"."""
  return weight.name.split("/")[-1].split(":")[0]


def qat_int4(model: keras.Model, dataset: Optional[Dataset], config: QatConfig,
             layers: str = ".*", keep_zeros: bool = False, teacher: Teacher = None,
             verbose: int = 2, train=None,
             fits: Optional[FitContext] = None) -> QatResult:
  """Fine-tunes `model` with its int4 kernels on LiteRT's grid.

  Args:
    model: a trained Keras 2 model that outputs logits; not modified.
    dataset: training data for fine-tuning, validation data for monitoring.
    config: epochs, batch size, learning rate (its bits and scheme are the
      caller's business).
    layers: a regular expression over layer names: the int4 file's 4-bit ones.
    keep_zeros: keep a pruned model's zeros (PQAT4).
    teacher: if given, fine-tune by distillation from it.
    train: fine-tune with train(model, epochs, callbacks) instead of on
      `dataset` (a task's data and loss).
    fits: a pipeline stage's epoch checkpoints and clock (see train.fit).

  Returns:
    A QatResult with a plain Keras model whose kernels are on the grid
    (scheme "pqat4" or "qat4"); convert it with mode "int4".

  Raises:
    QatInt4Error: no Conv2D / Dense layer matches `layers`.
  """
  require_keras2_model(model)
  names = grid_layers(model, layers, required=True)
  trained = _fake_quantized(model, set(names), keep_zeros)
  train = train or trainer_for(dataset, config.batch_size, config.learning_rate, teacher,
                               verbose, fits=fits)
  train(trained, config.epochs)
  return QatResult(_baked(model, trained, set(names)), "pqat4" if keep_zeros else "qat4")
