"""Quantization-aware training with tfmot, and its collaborative variants.

    qat    plain 8-bit QAT: fake-quant weights and activations while
           fine-tuning, so the int8 file loses less than post-training int8
    pqat   prune-preserving QAT: the zeros of a pruned model stay zero
    cqat   cluster-preserving QAT: the shared values of a clustered model stay
           shared (tfmot trains the centroids, not the weights)
    pcqat  both: a pruned, then clustered model keeps its zeros and clusters

`choose_scheme` picks the variant from what the model went through, since
plain QAT would undo both (tfmot's PCQAT guide shows it). The result keeps
its quantize wrappers: the converter reads the learned ranges from them.
"""

import dataclasses
from typing import Optional

import numpy as np
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
    cluster_utils)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry)

from tfopt.core._keras import clone_model, keras, require_keras2_model
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset
from tfopt.techniques.distill.algorithm import Teacher, trainer_for
from tfopt.techniques.qat.settings import QAT_SCHEMES, QatConfig
from tfopt.training.train import FitContext

__all__ = ["QatError", "SCHEMES", "QatResult", "choose_scheme", "apply_qat", "qat", "kernel_distinct",
           "quantize_scope", "annotated_copy"]

# The schemes a model can be trained with ("auto" in the config picks one).
SCHEMES = tuple(scheme for scheme in QAT_SCHEMES if scheme != "auto")
# The abbreviations in the report's row names.
SCHEME_LABELS = {"qat": "QAT", "pqat": "PQAT", "cqat": "CQAT", "pcqat": "PCQAT"}


class QatError(TfoptError, ValueError):
  """Quantization-aware training cannot run as asked."""


@dataclasses.dataclass
class QatResult:
  """A quantization-aware model (wrappers kept for conversion), its scheme."""
  model: keras.Model
  scheme: str


def choose_scheme(pruned: bool, clustered: bool) -> str:
  """The QAT variant that keeps what earlier stages made."""
  return {(False, False): "qat", (True, False): "pqat", (False, True): "cqat",
          (True, True): "pcqat"}[(pruned, clustered)]


def _quantize_scheme(scheme: str):
  combine = tfmot.experimental.combine
  if scheme == "qat":
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()
  if scheme == "pqat":
    return combine.Default8BitPrunePreserveQuantizeScheme()
  return combine.Default8BitClusterPreserveQuantizeScheme(
      preserve_sparsity=scheme == "pcqat")


class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
  """Fake-quantizes a weightless layer's output only (tfmot has no config
  for Rescaling; its collaborative schemes fail on it)."""

  def get_weights_and_quantizers(self, layer):
    return []

  def get_activations_and_quantizers(self, layer):
    return []

  def set_quantize_weights(self, layer, quantize_weights):
    pass

  def set_quantize_activations(self, layer, quantize_activations):
    pass

  def get_output_quantizers(self, layer):
    return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

  def get_config(self):
    return {}


# Input preprocessing layers that get OutputQuantizeConfig.
OUTPUT_ONLY_LAYERS = (keras.layers.Rescaling,)
_REGISTRY = default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def _output_only(layer) -> bool:
  """Input preprocessing, and weightless layers tfmot has no config for
  (squeeze-excite Multiply, Normalization, swish Activation): their output
  is fake-quantized, as the int8 file quantizes it."""
  if isinstance(layer, OUTPUT_ONLY_LAYERS):
    return True
  return (not isinstance(layer, keras.layers.InputLayer) and not layer.trainable_weights
          and not _REGISTRY.supports(layer))


def _annotated(model: keras.Model) -> keras.Model:
  """A copy of `model` with every layer marked for QAT."""
  if not any(_output_only(layer) for layer in model.layers):
    return tfmot.quantization.keras.quantize_annotate_model(clone_model(model))
  return annotated_copy(model, lambda layer: OutputQuantizeConfig() if _output_only(layer)
                        else None)


def annotated_copy(model: keras.Model, config_of) -> keras.Model:
  """A copy of `model` (same weights) whose layers are marked for tfmot's
  quantize_apply as `config_of(layer)` says: a QuantizeConfig, None (tfmot's
  own for that layer), or False (not marked, left float)."""

  def annotate(layer):
    copy = layer.__class__.from_config(layer.get_config())
    config = config_of(layer)
    return copy if config is False else tfmot.quantization.keras.quantize_annotate_layer(
        copy, config)

  annotated = keras.models.clone_model(model, clone_function=annotate)
  annotated.set_weights(model.get_weights())
  return annotated


def apply_qat(model: keras.Model, scheme: str = "qat") -> keras.Model:
  """A quantization-aware copy of `model` (fake-quant wrappers, BN folded).

  Raises:
    QatError: an unknown scheme, or a layer tfmot cannot quantize.
  """
  require_keras2_model(model)
  if scheme not in SCHEMES:
    raise QatError(f"Unknown QAT scheme {scheme!r}; choose one of "
                   f"{', '.join(SCHEMES)}.")
  annotated = _annotated(model)
  try:
    with quantize_scope():
      return tfmot.quantization.keras.quantize_apply(
          annotated, scheme=_quantize_scheme(scheme))
  except (ValueError, RuntimeError, TypeError, AttributeError, KeyError) as error:
    # tfmot fails in these ways on a layer it has no quantize config for.
    raise QatError(f"tfmot cannot make {model.name!r} quantization-aware "
                   f"({str(error).splitlines()[0]}); leave qat out of --stages for "
                   "this model (its post-training int8 file is still written).") from error


def kernel_distinct(model: keras.Model, layers) -> dict:
  """{layer: distinct kernel values} for the named layers of a QAT model.

  `layers` is any container of layer names.
  """
  found = {}
  for wrapper in model.layers:
    inner = getattr(wrapper, "layer", None)
    if inner is None or inner.name not in layers:
      continue
    # The wrapped layer's `kernel` attribute is a graph tensor after CQAT;
    # the wrapper's kernel variable holds the values.
    kernel = next(weight for weight in wrapper.weights
                  if weight.name.split("/")[-1].startswith("kernel:"))
    found[inner.name] = int(np.unique(kernel.numpy()).size)
  return found


def quantize_scope():
  """The custom-object scope to load a saved quantization-aware model."""
  return tfmot.quantization.keras.quantize_scope(
      {"OutputQuantizeConfig": OutputQuantizeConfig})


def qat(model: keras.Model, dataset: Dataset, config: QatConfig,
        scheme: Optional[str] = None, teacher: Optional[Teacher] = None,
        verbose: int = 2, train=None,
        fits: Optional[FitContext] = None) -> QatResult:
  """Fine-tunes a quantization-aware copy of `model` with `scheme`.

  Args:
    model: a trained Keras 2 model that outputs logits (pruning / clustering
      wrappers stripped); not modified.
    dataset: training data for fine-tuning, validation data for monitoring.
    config: epochs, batch size, learning rate.
    scheme: one of SCHEMES (see choose_scheme); None: config.scheme, where
      "auto" means plain qat (the pipeline picks from the run's history).
    teacher: if given (a tfopt.techniques.distill.algorithm.Teacher or a Keras model), fine-tune
      by distillation from it.
    train: fine-tune with train(model, epochs, callbacks) instead of on
      `dataset` (see distill.trainer_for).
    fits: a pipeline stage's epoch checkpoints and clock (see train.fit).

  Returns:
    A QatResult whose model converts to an int8 .tflite with its learned
    ranges (tfopt.litert.convert, mode "int8").
  """
  if scheme is None:
    scheme = "qat" if config.scheme == "auto" else config.scheme
  quantized = apply_qat(model, scheme)
  train = train or trainer_for(dataset, config.batch_size, config.learning_rate, teacher,
                               verbose, fits=fits)
  train(quantized, config.epochs)
  if scheme in ("cqat", "pcqat"):
    # Drops tfmot's centroid / index variables, keeping the clustered kernels
    # and the quantize wrappers whose ranges the converter needs.
    quantized = cluster_utils.strip_clustering_cqat(quantized)
  return QatResult(quantized, scheme)
