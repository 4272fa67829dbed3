"""Low-rank approximation of Dense layers by truncated SVD.

A Dense kernel W (n x m) is replaced by two factors from its SVD,
W ~ A @ B with A = U_r sqrt(S_r) (n x r) and B = sqrt(S_r) V_r^T (r x m), so the
layer costs r (n + m) multiplies instead of n m. The rank is chosen by retained
energy (sum of the r largest squared singular values over the total), by a
target parameter ratio, or given per layer; a layer is factorized only where
that saves parameters. `LowRankDense` holds the two factors as one Keras layer,
so the model keeps its graph and still converts to standard TFLite (two
FULLY_CONNECTED ops).

Conv2D kernels get spatial SVD: W (kh, kw, c_in, c_out), regrouped as a
(kh * c_in) x (kw * c_out) matrix, is split into a kh x 1 convolution with r
filters followed by a 1 x kw convolution (`SpatialSVDConv2D`).
"""

import dataclasses
from typing import Dict, List, Optional

import numpy as np

from tfopt.core._keras import keras, require_keras2_model, require_layers
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset
from tfopt.keras_io.lowrank_layers import LowRankDense, SpatialSVDConv2D
from tfopt.techniques.distill.algorithm import Teacher, trainer_for
from tfopt.techniques.lowrank.settings import LowRankConfig
from tfopt.training import train as training
from tfopt.training.train import FitContext

__all__ = ["LowRankError", "LowRankDense", "SpatialSVDConv2D", "factorize",
           "LayerFactorization", "choose_rank", "factorize_kernel",
           "factorize_conv_kernel", "check_layers", "resolve_layers", "apply_lowrank",
           "LowRankResult", "lowrank"]


class LowRankError(TfoptError, ValueError):
  """An invalid rank, energy or ratio, or a layer that cannot be factorized."""


@dataclasses.dataclass(frozen=True)
class LayerFactorization:
  """What happened to one Dense layer."""
  layer: str
  shape: tuple
  rank: int
  retained_energy: float
  params_before: int
  params_after: int


def choose_rank(singular_values: np.ndarray, shape: tuple,
                energy: Optional[float] = None,
                param_ratio: Optional[float] = None) -> int:
  """The rank that keeps `energy` of sum(s**2), or fits `param_ratio`.

  Exactly one of `energy` (in (0, 1]) and `param_ratio` (in (0, 1)) is given.
  With param_ratio, r (n + m) <= param_ratio * n * m (at least rank 1).

  Raises:
    LowRankError: both or neither given, or a value out of range.
  """
  if (energy is None) == (param_ratio is None):
    raise LowRankError("Give exactly one of energy and param_ratio to choose "
                       "a rank.")
  rows, columns = shape
  if energy is not None:
    if not 0 < energy <= 1:
      raise LowRankError(f"energy={energy!r} is invalid: it must be in (0, 1].")
    squared = np.asarray(singular_values, np.float64) ** 2
    cumulative = np.cumsum(squared) / max(squared.sum(), 1e-30)
    return int(min(len(squared), np.searchsorted(cumulative, energy - 1e-12) + 1))
  if not 0 < param_ratio < 1:
    raise LowRankError(f"param_ratio={param_ratio!r} is invalid: it must be in "
                       "(0, 1).")
  return max(1, int(param_ratio * rows * columns // (rows + columns)))


def factorize_kernel(kernel: np.ndarray, rank: int):
  """(A, B, retained energy) with A @ B the best rank-`rank` approximation.

  Raises:
    LowRankError: rank outside [1, min(n, m)].
  """
  rows, columns = kernel.shape
  if not 1 <= rank <= min(rows, columns):
    raise LowRankError(f"rank={rank!r} is invalid for a {rows}x{columns} "
                       f"kernel: it must be in [1, {min(rows, columns)}].")
  left, singular, right = np.linalg.svd(kernel.astype(np.float64),
                                        full_matrices=False)
  root = np.sqrt(singular[:rank])
  energy = float(np.sum(singular[:rank] ** 2) / max(np.sum(singular ** 2), 1e-30))
  first = (left[:, :rank] * root).astype(np.float32)
  second = (root[:, None] * right[:rank]).astype(np.float32)
  return first, second, energy


def _conv_matrix(kernel: np.ndarray) -> np.ndarray:
  """(kh, kw, c_in, c_out) -> the (kh * c_in) x (kw * c_out) matrix to split."""
  height, width, channels_in, channels_out = kernel.shape
  return kernel.transpose(0, 2, 1, 3).reshape(height * channels_in,
                                              width * channels_out)


def factorize_conv_kernel(kernel: np.ndarray, rank: int):
  """(vertical kernel, horizontal kernel, retained energy) of a Conv2D kernel.

  vertical has shape (kh, 1, c_in, rank) and horizontal (1, kw, rank, c_out);
  at full rank min(kh * c_in, kw * c_out) the pair reproduces the convolution.
  """
  height, width, channels_in, channels_out = kernel.shape
  first, second, energy = factorize_kernel(_conv_matrix(kernel), rank)
  vertical = first.reshape(height, channels_in, rank)[:, np.newaxis]
  horizontal = second.reshape(rank, width, channels_out).transpose(1, 0, 2)
  return vertical, horizontal[np.newaxis], energy


def _factorizable(layer) -> bool:
  if isinstance(layer, keras.layers.Dense):
    return True
  return (type(layer) is keras.layers.Conv2D  # not Depthwise/Separable
          and tuple(layer.dilation_rate) == (1, 1) and layer.groups == 1
          and min(layer.kernel_size) > 1)


def _matrix_of(layer) -> np.ndarray:
  kernel = layer.kernel.numpy()
  return kernel if kernel.ndim == 2 else _conv_matrix(kernel)


def check_layers(model: keras.Model, names) -> List:
  """The named layers of `model`, each one that can be factorized.

  Raises:
    LowRankError: a name that is not in the model or not factorizable.
  """
  return require_layers(model, names, _factorizable, LowRankError,
                        "Dense and undilated, ungrouped k x k Conv2D layers "
                        "(k > 1) can be factorized")


def _plan(model, energy, param_ratio, ranks, layers):
  """{layer name: rank} for the Dense layers worth factorizing."""
  plan = {}
  names = layers if layers is not None else [
      layer.name for layer in model.layers if _factorizable(layer)]
  for layer in check_layers(model, names):
    name = layer.name
    kernel = _matrix_of(layer)
    if ranks and name in ranks:
      rank = ranks[name]
      if not isinstance(rank, int) or not 1 <= rank <= min(kernel.shape):
        raise LowRankError(f"rank={rank!r} for layer {name!r} is invalid: it "
                           f"must be an integer in [1, {min(kernel.shape)}].")
    else:
      singular = np.linalg.svd(kernel, compute_uv=False)
      rank = choose_rank(singular, kernel.shape, energy, param_ratio)
    if rank * sum(kernel.shape) < kernel.size:  # only where it saves params
      plan[name] = rank
  return plan


def apply_lowrank(model: keras.Model, energy: Optional[float] = None,
                  param_ratio: Optional[float] = None,
                  ranks: Optional[Dict[str, int]] = None,
                  layers: Optional[List[str]] = None):
  """A copy of `model` with Dense / Conv2D layers replaced by low-rank pairs.

  Dense becomes LowRankDense, Conv2D becomes SpatialSVDConv2D.

  Args:
    model: a Keras 2 Sequential or functional model; not modified.
    energy / param_ratio: how to choose each layer's rank (see choose_rank);
      ignored for layers named in `ranks`.
    ranks: {layer name: rank} chosen by the user.
    layers: the layers to consider (default: every Dense and factorizable
      Conv2D layer).

  Returns:
    (new model, [LayerFactorization]) — layers whose rank would not save
    parameters are left as they are and not listed.

  Raises:
    LowRankError: a bad rank, energy or ratio, or a named layer that cannot
      be factorized.
  """
  require_keras2_model(model)
  if ranks is None and energy is None and param_ratio is None:
    raise LowRankError("Give energy, param_ratio or per-layer ranks.")
  if ranks is not None and energy is None and param_ratio is None:
    layers = list(ranks) if layers is None else layers
  plan = _plan(model, energy, param_ratio, ranks or {}, layers)
  factors, report = {}, []
  for name, rank in plan.items():
    layer = model.get_layer(name)
    kernel = layer.kernel.numpy()
    split = factorize_kernel if kernel.ndim == 2 else factorize_conv_kernel
    first, second, retained = split(kernel, rank)
    factors[name] = [first, second] + ([layer.bias.numpy()] if layer.use_bias else [])
    report.append(LayerFactorization(
        name, kernel.shape, rank, retained, layer.count_params(),
        sum(weight.size for weight in factors[name])))

  def clone_layer(layer):
    if layer.name not in plan:
      return layer.__class__.from_config(layer.get_config())
    if isinstance(layer, keras.layers.Dense):
      return LowRankDense(layer.units, plan[layer.name], layer.activation,
                          layer.use_bias, name=layer.name)
    return SpatialSVDConv2D(layer.filters, layer.kernel_size, plan[layer.name],
                            layer.strides, layer.padding, layer.activation,
                            layer.use_bias, name=layer.name)

  clone = keras.models.clone_model(model, clone_function=clone_layer)
  for original, copy in zip(model.layers, clone.layers):
    copy.set_weights(factors.get(original.name, original.get_weights()))
  return clone, report


def resolve_layers(model: keras.Model, names) -> Optional[List[str]]:
  """The layer names to factorize; "largest_dense" picks the biggest Dense.

  Raises:
    LowRankError: "largest_dense" in a model without a Dense layer.
  """
  if names is None:
    return None
  resolved = []
  for name in names:
    if name == "largest_dense":
      dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
      if not dense:
        raise LowRankError(f"Model {model.name!r} has no Dense layer.")
      name = max(dense, key=lambda layer: layer.count_params()).name
    resolved.append(name)
  return resolved


@dataclasses.dataclass
class LowRankResult:
  """A factorized, fine-tuned model, its layers, and validation accuracy around fine-tuning."""
  model: keras.Model
  layers: List[LayerFactorization]
  val_accuracy_before_finetune: float
  val_accuracy_after_finetune: float


def factorize(model: keras.Model, config: LowRankConfig):
  """apply_lowrank as `config` says: (factorized copy, [LayerFactorization]).

  Raises:
    LowRankError: a bad layer or rank, or no layer would get fewer parameters.
  """
  layers = (list(config.ranks) if config.ranks
            else resolve_layers(model, config.layers))
  factorized, table = apply_lowrank(model, energy=config.energy,
                                    param_ratio=config.param_ratio,
                                    ranks=config.ranks, layers=layers)
  if not table:
    raise LowRankError(
        "No layer was factorized: at the chosen rank none would have fewer "
        "parameters. Lower the energy or param_ratio, or give smaller ranks.")
  return factorized, table


def lowrank(model: keras.Model, dataset: Optional[Dataset], config: LowRankConfig,
            teacher: Optional[Teacher] = None, verbose: int = 2, train=None,
            validate=None, fits: Optional[FitContext] = None) -> LowRankResult:
  """Factorizes a copy of `model` as `config` says, then fine-tunes it.

  Args:
    model: a trained Keras 2 model that outputs logits; not modified.
    dataset: training data for fine-tuning, validation data for the accuracy.
    config: how ranks are chosen, which layers, fine-tuning settings.
    teacher: if given (a tfopt.techniques.distill.algorithm.Teacher or a Keras model), fine-tune
      by distillation from it.
    train, validate: fine-tune with train(model, epochs, callbacks) and
      score with validate(model) instead of on `dataset` (a task's).
    fits: a pipeline stage's epoch checkpoints and clock (see train.fit).

  Raises:
    LowRankError: a bad layer or rank, or no layer would get fewer parameters.
  """
  factorized, table = factorize(model, config)
  validate = validate or (lambda current: training.accuracy(current, dataset.x_val,
                                                            dataset.y_val))
  before = validate(factorized)
  if config.finetune_epochs:
    train = train or trainer_for(dataset, config.batch_size, config.learning_rate, teacher,
                                 verbose, fits=fits)
    train(factorized, config.finetune_epochs)
  after = validate(factorized)
  return LowRankResult(factorized, table, before, after)
