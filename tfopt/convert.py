"""Keras -> .tflite: float32, dynamic-range int8, full-integer int8.

Full-integer int8 uses TFLITE_BUILTINS_INT8 with int8 input and output and a
representative dataset of training images for calibration, so the file runs
on integer-only accelerators and microcontrollers.
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from tfopt._keras import keras, require_keras2_model
from tfopt.errors import TfoptError

__all__ = ["ConversionError", "MODES", "to_tflite", "representative_dataset"]

MODES = ("float32", "dynamic_range", "int8")


class ConversionError(TfoptError, ValueError):
  """A model cannot be converted as asked."""


def representative_dataset(images: np.ndarray, count: int, seed: int = 0):
  """A generator function yielding `count` single images for calibration."""
  chosen = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)),
                                              replace=False)

  def generate():
    for index in chosen:
      yield [images[index:index + 1].astype(np.float32)]
  return generate


def to_tflite(model: keras.Model, mode: str = "float32",
              representative_images: Optional[np.ndarray] = None,
              representative_count: int = 500) -> bytes:
  """Converts a Keras 2 model to a .tflite flatbuffer.

  Args:
    model: the model to convert (pruning or other wrappers already stripped).
    mode: one of MODES.
    representative_images: float32 images as the model takes them; required
      for "int8" (calibration of activation ranges).
    representative_count: how many of them to use.

  Returns:
    The .tflite file's bytes.

  Raises:
    ConversionError: unknown mode, or int8 without representative images.
  """
  require_keras2_model(model)
  if mode not in MODES:
    raise ConversionError(f"Unknown conversion mode {mode!r}; choose one of "
                          f"{', '.join(MODES)}.")
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  if mode in ("dynamic_range", "int8"):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == "int8":
    if representative_images is None or not len(representative_images):
      raise ConversionError("Full-integer int8 conversion needs representative "
                            "images to calibrate activation ranges.")
    converter.representative_dataset = representative_dataset(
        representative_images, representative_count)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  return converter.convert()
