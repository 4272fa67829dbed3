"""Keras -> .tflite in every post-training mode LiteRT runs on a CPU.

    float32        no quantization
    float16        weights stored as float16, dequantized at load
    dynamic_range  int8 weights, float activations (quantized on the fly)
    int8           full integer: int8 weights and activations, int8 input and
                   output, activation ranges calibrated on training images
    int16x8        int8 weights, int16 activations (more accurate than int8
                   where activations have a wide range; input/output float32)
    int4           int4 weights, int8 activations (LiteRT's quantizer, see
    dynamic_int4   tfopt.litert.int4), float activations quantized on the fly

A model trained with quantization-aware training (tfopt.techniques.qat.algorithm) carries its own
ranges; the converter reads them from its fake-quant nodes, and `int8` is the
only mode that makes sense for it.
"""

import contextlib
import os
import re
import sys
import tempfile
import warnings
from typing import Optional

import numpy as np
import tensorflow as tf

from tfopt.config import QUANT_MODES as MODES
from tfopt.core._keras import keras, require_keras2_model
from tfopt.core.errors import TfoptError
from tfopt.keras_io.model_io import recurrent_layers
from tfopt.litert import int4

__all__ = ["ConversionError", "MODES", "CALIBRATED_MODES", "to_tflite", "to_int4",
           "representative_dataset", "is_quantization_aware", "converter_for",
           "without_converter_noise", "calibration_images", "check_modes"]

# Modes that need representative images to calibrate activation ranges.
CALIBRATED_MODES = ("int8", "int16x8")
# Recurrent layers that become a WHILE loop: the converter's integer
# calibration crashes the process on them (TF 2.21), so no integer file.
_LOOPED_LAYERS = ("GRU", "SimpleRNN")


class ConversionError(TfoptError, ValueError):
  """A model cannot be converted as asked."""


def representative_dataset(images: np.ndarray, count: int, seed: int = 0,
                           dtype=np.float32):
  """A generator function yielding `count` single images (or other inputs,
  of `dtype`: token ids are int32) for calibration."""
  chosen = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)),
                                              replace=False)

  def generate():
    for index in chosen:
      yield [images[index:index + 1].astype(dtype)]
  return generate


_QAT_LAYERS = ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2")


def is_quantization_aware(model: keras.Model) -> bool:
  """True for a tfmot QAT model: its fake-quant wrappers carry the ranges."""
  return any(type(layer).__name__ in _QAT_LAYERS for layer in model.layers)


def _needs_calibration(model: keras.Model) -> bool:
  """False only for a QAT model whose every layer carries its ranges.

  A QAT model that kept float layers (e.g. Rescaling at its input, see
  qat.FLOAT_LAYERS) needs representative images for those.
  """
  return not is_quantization_aware(model) or any(
      type(layer).__name__ not in _QAT_LAYERS + ("InputLayer",)
      for layer in model.layers)


def to_tflite(model: keras.Model, mode: str = "float32",
              representative_images: Optional[np.ndarray] = None,
              representative_count: int = 500, int4_layers: str = ".*") -> bytes:
  """Converts a Keras 2 model to a .tflite flatbuffer (see converter_for); the
  int4 modes quantize its float32 file with LiteRT's quantizer (tfopt.litert.int4)."""
  if mode in int4.MODES:
    return to_int4(model, mode, representative_images, representative_count,
                   int4_layers)[1]
  converter = converter_for(model, mode, representative_images, representative_count)
  with without_converter_noise():
    return converter.convert()


def to_int4(model: keras.Model, mode: str, representative_images=None,
            representative_count: int = 500, int4_layers: str = ".*"):
  """(the float32 file, its int4 / dynamic_int4 version): both, for validation."""
  require_keras2_model(model)
  if is_quantization_aware(model):
    raise ConversionError(f"A quantization-aware model converts to int8 only, not {mode}.")
  float_file = to_tflite(model, "float32")
  return float_file, int4.quantize(float_file, mode, calibration_images(
      representative_images, representative_count, model.inputs[0].dtype.as_numpy_dtype),
      representative_count, int4_layers)


def calibration_images(images, count: int, dtype=np.float32) -> Optional[np.ndarray]:
  """The same `count` images (or inputs of `dtype`) the converter's
  calibration would take."""
  if images is None or not len(images):
    return None
  return np.concatenate([batch[0] for batch in
                         representative_dataset(images, count, dtype=dtype)()])


# What the converter prints on every int8 conversion, however it went: a
# Python warning and a line its C++ calibrator writes straight to stderr.
_NOISE_WARNING = "Statistics for quantized inputs were expected"
_NOISE_LINE = re.compile(rb"^fully_quantize: \d+, inference_type: ")


@contextlib.contextmanager
def without_converter_noise():
  """Drops those two from stderr; every other line is written back after."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=_NOISE_WARNING)
    try:
      sys.stderr.flush()
      saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded): leave it alone
      yield
      return
    with tempfile.TemporaryFile() as captured:
      os.dup2(captured.fileno(), 2)
      try:
        yield
      finally:
        os.dup2(saved, 2)
        os.close(saved)
        captured.seek(0)
        kept = [line for line in captured.read().splitlines(keepends=True)
                if not _NOISE_LINE.match(line)]
        if kept:
          os.write(2, b"".join(kept))


def converter_for(model: keras.Model, mode: str = "float32",
                  representative_images: Optional[np.ndarray] = None,
                  representative_count: int = 500) -> tf.lite.TFLiteConverter:
  """The TFLite converter set up for `mode`, as to_tflite uses it.

  Args:
    model: the model to convert (pruning / clustering wrappers stripped).
    mode: one of MODES.
    representative_images: float32 images as the model takes them; required
      for the CALIBRATED_MODES, except for a quantization-aware model.
    representative_count: how many of them to use.

  Returns:
    The converter, ready for .convert() (or for TF Lite's QuantizationDebugger).

  Raises:
    ConversionError: unknown mode, or a calibrated mode without images.
  """
  require_keras2_model(model)
  if mode in int4.MODES:
    raise ConversionError(f"{mode} files are written by LiteRT's quantizer, not by the "
                          "TFLite converter: use to_tflite.")
  if mode not in MODES:
    raise ConversionError(f"Unknown conversion mode {mode!r}; choose one of "
                          f"{', '.join(MODES)}.")
  converter = _converter(model)
  if mode != "float32":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == "float16":
    converter.target_spec.supported_types = [tf.float16]
  if mode in CALIBRATED_MODES and _needs_calibration(model):
    if representative_images is None or not len(representative_images):
      raise ConversionError(f"{mode} conversion needs representative images "
                            "to calibrate activation ranges.")
    converter.representative_dataset = representative_dataset(
        representative_images, representative_count,
        dtype=model.inputs[0].dtype.as_numpy_dtype)
  if mode != "int8" and is_quantization_aware(model):
    raise ConversionError(f"A quantization-aware model converts to int8 only, "
                          f"not {mode}.")
  if mode == "int8":
    if _needs_calibration(model):
      # A QAT model is integer-only already; this flag would demand a
      # representative data set it does not need.
      converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  if mode == "int16x8":
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
  return converter


def check_modes(model: keras.Model, modes) -> None:
  """Refuses, before any work, integer modes the converter cannot make of
  this model's layers."""
  looped = recurrent_layers(model, _LOOPED_LAYERS)
  integer = [mode for mode in modes if mode in CALIBRATED_MODES + int4.MODES]
  if looped and integer:
    raise ConversionError(
        f"Layers {', '.join(looped)} (GRU / SimpleRNN) run as a loop in LiteRT, which "
        f"the converter cannot quantize to {', '.join(integer)} files (it crashes). Ask "
        "for float32, float16 or dynamic_range files (quant_modes / --quant_modes), or use "
        "LSTM layers, which LiteRT runs as one fused integer op.")


def _converter(model: keras.Model) -> tf.lite.TFLiteConverter:
  """From the Keras model; for recurrent layers, from its function at batch 1
  (LiteRT's recurrent kernels take a fixed batch; the file's signature keeps
  the Keras output names)."""
  if not recurrent_layers(model):
    return tf.lite.TFLiteConverter.from_keras_model(model)
  names = list(model.output_names)
  specs = [tf.TensorSpec((1,) + tuple(tensor.shape[1:]), tensor.dtype)
           for tensor in model.inputs]

  def serve(*inputs):
    outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    return dict(zip(names, tf.nest.flatten(outputs)))
  function = tf.function(serve).get_concrete_function(*specs)
  return tf.lite.TFLiteConverter.from_concrete_functions([function], model)
