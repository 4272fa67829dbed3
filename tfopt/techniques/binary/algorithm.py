"""Binary weights: BinaryConnect and BWN, trained with the straight-through estimator.

    BinaryConnect (Courbariaux et al. 2015):  w_b = sign(w)
    BWN (Rastegari et al. 2016, XNOR-Net):    w_b = alpha * sign(w),
                                              alpha = mean |w| per output channel

The layers keep real-valued weights and use w_b in the forward pass; the
straight-through estimator passes the gradient of w_b to w unchanged, and
the real weights are clipped to [-1, 1] after each update (beyond that the
sign cannot change back). `export_binary` turns a trained model into plain
Conv2D / Dense layers holding w_b, which the converter stores as int8 with
two codes per output channel; `effective_size` counts 1 bit per binary weight.

tfmot and LiteRT have no binary layers, so these are written here; they are
ordinary Keras layers, serializable, that need no custom op to deploy.
"""

import dataclasses
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfopt.core._keras import keras, require_keras2_model, require_layers
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset
from tfopt.techniques.binary.settings import BINARY_MODES, BinaryConfig
from tfopt.techniques.distill.algorithm import Teacher, trainer_for
from tfopt.training.train import FitContext

__all__ = ["BinaryError", "MODES", "WeightClip", "BinaryConv2D", "BinaryDense",
           "binarize_kernel", "binarizable_layers", "binarize", "export_binary",
           "BinaryLayerSize", "effective_size", "CUSTOM_OBJECTS", "BinaryResult",
           "binary"]

MODES = BINARY_MODES


class BinaryError(TfoptError, ValueError):
  """Binarization cannot run as asked."""


def binarize_kernel(kernel, mode: str):
  """w_b for a kernel whose last axis is the output channels (numpy or tf).

  sign(0) is taken as +1, so every weight is one of two values per channel.
  """
  ops = np if isinstance(kernel, np.ndarray) else tf
  sign = ops.where(kernel >= 0, ops.ones_like(kernel), -ops.ones_like(kernel))
  if mode == "binaryconnect":
    return sign
  axes = tuple(range(len(kernel.shape) - 1))
  alpha = (np.mean(np.abs(kernel), axis=axes, keepdims=True) if ops is np
           else tf.reduce_mean(tf.abs(kernel), axis=axes, keepdims=True))
  return alpha * sign


def _straight_through(kernel, mode: str):
  """w_b forward; d w_b / d w = identity backward."""
  return kernel + tf.stop_gradient(binarize_kernel(kernel, mode) - kernel)


@keras.utils.register_keras_serializable(package="tfopt")
class WeightClip(keras.constraints.Constraint):
  """Clips weights to [-limit, limit] after each update."""

  def __init__(self, limit: float = 1.0):
    self.limit = float(limit)

  def __call__(self, weights):
    return tf.clip_by_value(weights, -self.limit, self.limit)

  def get_config(self):
    return {"limit": self.limit}


def _check_mode(mode: str):
  if mode not in MODES:
    raise BinaryError(f"Unknown binarization {mode!r}; choose one of "
                      f"{', '.join(MODES)}.")


class _BinaryKernel:
  """What both binary layers share: the mode, the clip constraint, the config."""

  def __init__(self, *args, binarization: str = "bwn", **kwargs):
    _check_mode(binarization)
    kwargs.setdefault("kernel_constraint", WeightClip())
    super().__init__(*args, **kwargs)
    self.binarization = binarization

  def binary_kernel(self, kernel):
    return _straight_through(kernel, self.binarization)

  def get_config(self):
    return dict(super().get_config(), binarization=self.binarization)


@keras.utils.register_keras_serializable(package="tfopt")
class BinaryConv2D(_BinaryKernel, keras.layers.Conv2D):
  """Conv2D whose forward pass uses binarize_kernel(kernel, binarization)."""

  def convolution_op(self, inputs, kernel):
    return super().convolution_op(inputs, self.binary_kernel(kernel))


@keras.utils.register_keras_serializable(package="tfopt")
class BinaryDense(_BinaryKernel, keras.layers.Dense):
  """Dense whose forward pass uses binarize_kernel(kernel, binarization)."""

  def call(self, inputs):
    outputs = tf.tensordot(inputs, self.binary_kernel(self.kernel),
                           axes=[[inputs.shape.rank - 1], [0]])
    if self.use_bias:
      outputs = tf.nn.bias_add(outputs, self.bias)
    return self.activation(outputs) if self.activation is not None else outputs


CUSTOM_OBJECTS = {"tfopt>BinaryConv2D": BinaryConv2D,
                  "tfopt>BinaryDense": BinaryDense, "tfopt>WeightClip": WeightClip}


def _binarizable(layer) -> bool:
  return (type(layer) in (keras.layers.Conv2D, keras.layers.Dense)
          and getattr(layer, "groups", 1) == 1)


def binarizable_layers(model: keras.Model,
                       names: Optional[Sequence[str]] = None) -> List[str]:
  """The layers to binarize: `names` (checked), or every Conv2D and Dense.

  Raises:
    BinaryError: a named layer is missing or is not a plain Conv2D / Dense.
  """
  if names is None:
    return [layer.name for layer in model.layers if _binarizable(layer)]
  require_layers(model, names, _binarizable, BinaryError,
                 "Conv2D (not depthwise or grouped) and Dense layers can be binarized")
  return list(names)


def binarize(model: keras.Model, mode: str = "bwn",
             layers: Optional[Sequence[str]] = None) -> keras.Model:
  """A copy of `model` with the chosen layers binary, from its real weights.

  The real-valued weights are copied and clipped to [-1, 1]; train the copy
  (e.g. tfopt.techniques.distill.algorithm.fine_tune) to adapt it to binary weights.
  """
  require_keras2_model(model)
  _check_mode(mode)
  chosen = set(binarizable_layers(model, layers))

  def clone_layer(layer):
    config = layer.get_config()
    if layer.name not in chosen:
      return layer.__class__.from_config(config)
    config.pop("kernel_constraint", None)
    binary_class = BinaryConv2D if isinstance(layer, keras.layers.Conv2D) else BinaryDense
    return binary_class.from_config(dict(config, binarization=mode))

  clone = keras.models.clone_model(model, clone_function=clone_layer)
  for original, copy in zip(model.layers, clone.layers):
    weights = original.get_weights()
    if original.name in chosen:
      weights[0] = np.clip(weights[0], -1.0, 1.0)
    copy.set_weights(weights)
  return clone


def _binary_layers(model: keras.Model) -> list:
  return [layer for layer in model.layers
          if isinstance(layer, (BinaryConv2D, BinaryDense))]


def export_binary(model: keras.Model) -> keras.Model:
  """Plain Conv2D / Dense layers holding w_b: standard TFLite, no custom ops."""
  binary = {layer.name for layer in _binary_layers(model)}

  def clone_layer(layer):
    config = layer.get_config()
    if layer.name not in binary:
      return layer.__class__.from_config(config)
    config.pop("binarization")
    config.pop("kernel_constraint", None)
    plain_class = (keras.layers.Conv2D if isinstance(layer, BinaryConv2D)
                   else keras.layers.Dense)
    return plain_class.from_config(config)

  plain = keras.models.clone_model(model, clone_function=clone_layer)
  for original, copy in zip(model.layers, plain.layers):
    weights = original.get_weights()
    if original.name in binary:
      weights[0] = binarize_kernel(weights[0], original.binarization)
    copy.set_weights(weights)
  return plain


@dataclasses.dataclass(frozen=True)
class BinaryLayerSize:
  """One binary layer: its 1-bit weights and its 32-bit scales."""
  layer: str
  shape: tuple
  binary_weights: int
  scales: int


def effective_size(model: keras.Model) -> dict:
  """Bytes at 1 bit per binary weight, 32 bits per scale and per other parameter.

  BWN has one scale (alpha) per output channel; BinaryConnect has none. Every
  parameter that is not a binary weight (BatchNorm, biases, layers left real)
  counts at 32 bits.
  """
  layers = [BinaryLayerSize(
      layer.name, tuple(layer.kernel.shape), int(np.prod(layer.kernel.shape)),
      int(layer.kernel.shape[-1]) if layer.binarization == "bwn" else 0)
      for layer in _binary_layers(model)]
  binary = sum(entry.binary_weights for entry in layers)
  scales = sum(entry.scales for entry in layers)
  other = int(model.count_params()) - binary
  return dict(layers=[dataclasses.asdict(entry) for entry in layers],
              binary_weights=binary, scales=scales, other_params=other,
              effective_bytes=int(np.ceil(binary / 8)) + 4 * (scales + other),
              float32_bytes=4 * int(model.count_params()))


@dataclasses.dataclass
class BinaryResult:
  """trainable: the binary-layer model (real weights kept); model: its export
  to plain layers holding w_b; size: effective_size of the trainable one."""
  trainable: keras.Model
  model: keras.Model
  size: dict


def binary(model: keras.Model, dataset: Optional[Dataset], config: BinaryConfig,
           teacher: Optional[Teacher] = None, verbose: int = 2, train=None,
           fits: Optional[FitContext] = None) -> BinaryResult:
  """Binarizes a copy of `model`, trains it with the straight-through estimator.

  Args:
    model: a trained Keras 2 model that outputs logits; not modified.
    dataset: training data, validation data for monitoring.
    config: mode, layers and training settings.
    teacher: if given (a tfopt.techniques.distill.algorithm.Teacher or a Keras model), train by
      distillation from it.
    train: train with train(model, epochs, callbacks) instead of on `dataset`
      (a task's data and loss).
    fits: a pipeline stage's epoch checkpoints and clock (see train.fit).
  """
  trainable = binarize(model, config.mode, config.layers)
  train = train or trainer_for(dataset, config.batch_size, config.learning_rate, teacher,
                               verbose, fits=fits)
  train(trainable, config.epochs)
  return BinaryResult(trainable, export_binary(trainable), effective_size(trainable))
