"""Which layers lose precision in int8: TensorFlow Lite's QuantizationDebugger.

The debugger converts the model with numeric-verify ops after every
quantized op: each op runs in int8 and, beside it, in float on the same
(dequantized) input, so the error it reports is the op's own, not what it
inherited. Per tensor, RMSE / scale says how many quantization steps the
error spans: ~0.29 (1/sqrt(12)) is plain rounding; much more means the
op's range or weights do not quantize well (see the TF Lite "Inspecting
quantization errors" guide). Used by the evaluate stage for int8 files that
disagree with their Keras model.
"""

import csv
import dataclasses
import io
import math
from typing import List

import numpy as np
import tensorflow as tf

from tfopt.core._keras import keras
from tfopt.litert.convert import converter_for, representative_dataset

__all__ = ["LayerError", "int8_layer_errors", "ROUNDING_ONLY"]

ROUNDING_ONLY = 1 / math.sqrt(12)  # RMSE / scale of uniform rounding noise


@dataclasses.dataclass(frozen=True)
class LayerError:
  """One quantized tensor's error against float, in quantization steps."""
  layer: str
  tensor: str
  op: str
  rmse_over_scale: float
  max_abs_error: float
  scale: float


def int8_layer_errors(model: keras.Model, images: np.ndarray, calibration_count: int = 100,
                      debug_count: int = 32, top: int = 8) -> List[LayerError]:
  """The `top` tensors of `model`'s int8 conversion with the largest RMSE / scale.

  Args:
    model: a float Keras 2 model (no quantize wrappers).
    images: float32 images as the model takes them; the first are used to
      calibrate, a seeded sample of `debug_count` to measure.
  """
  converter = converter_for(model, "int8", images, calibration_count)
  # The debugger compares float tensors at the file's edges.
  converter.inference_input_type = converter.inference_output_type = tf.float32
  debugger = tf.lite.experimental.QuantizationDebugger(
      converter=converter, debug_dataset=representative_dataset(images, debug_count, seed=1))
  debugger.run()
  dump = io.StringIO()
  debugger.layer_statistics_dump(dump)
  errors = []
  for row in csv.DictReader(io.StringIO(dump.getvalue())):
    scale = float(row["scale"])
    if scale > 0:
      tensor = row["tensor_name"].split(";")[-1]
      parts = tensor.split("/")  # model/layer/op, or an output's own name
      errors.append(LayerError(
          layer=parts[1] if len(parts) > 2 else tensor, tensor=tensor, op=row["op_name"],
          rmse_over_scale=math.sqrt(float(row["mean_squared_error"])) / scale,
          max_abs_error=float(row["max_abs_error"]), scale=scale))
  return sorted(errors, key=lambda error: -error.rmse_over_scale)[:top]
