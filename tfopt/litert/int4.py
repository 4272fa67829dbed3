"""Real 4-bit weights, written by LiteRT's own quantizer (litert-quantizer).

The TFLite converter writes int8 at the least; LiteRT's post-training
quantizer rewrites a float32 .tflite with int4 weights (packed two to a byte,
one scale per output channel), which LiteRT's CPU kernels run:

    int4          int4 weights, int8 activations calibrated on training
                  images (static), float32 input and output
    dynamic_int4  int4 weights, float activations quantized on the fly

`layers` (a regular expression over the weight tensor names, which hold the
Keras layer names, as `tfopt inspect` lists them, e.g. "block[23]|logits")
picks the ops that get 4 bits; every other op, and any op the quantizer
cannot take in 4 bits, is quantized as int8 (int4) or left float
(dynamic_int4). LiteRT's quantizer matches its regexes against each op's
output tensor name instead, which for the last layer is the model's output
("StatefulPartitionedCall:0"); tfopt turns the user's expression into one
over those names. Which kernels came out int4 is read back from the file
(evaluate.inspect_tflite), never assumed.

`validate` runs the float and the quantized file side by side on test images
and gives, per tensor, its signal-to-noise ratio and cosine similarity
against the float one (the quantizer's own validator): where accuracy is lost.
"""

import contextlib
import io
import logging
import re
from typing import Dict, List, Optional

import numpy as np

from tfopt.core.errors import TfoptError

__all__ = ["MODES", "Int4Error", "quantize", "validate"]

MODES = ("int4", "dynamic_int4")
# The int4 mode's int8 recipe: matches every op, under a key of its own.
_INT8_SCOPE = "^"


class Int4Error(TfoptError, ValueError):
  """LiteRT's quantizer cannot write this model in 4 bits."""


def quantize(float_tflite: bytes, mode: str, representative_images=None,
             representative_count: int = 500, layers: str = ".*") -> bytes:
  """The float32 .tflite `float_tflite` with int4 weights (see MODES)."""
  from litert_quantizer import qtyping, quantizer  # pylint: disable=g-import-not-at-top
  every_op = qtyping.TFLOperationName.ALL_SUPPORTED
  scope = ".*" if layers == ".*" else _output_scope(float_tflite, layers)
  tool = quantizer.Quantizer(bytearray(float_tflite))
  if mode == "int4":
    if representative_images is None or not len(representative_images):
      raise Int4Error("int4 conversion needs representative images to calibrate "
                      "activation ranges.")
    # Every op int8 first, then the 4-bit scope: the quantizer takes the last
    # recipe that matches an op and supports it, so ops with no 4-bit kernel
    # (DEPTHWISE_CONV_2D) stay int8. The two keys must differ ("^" and ".*"
    # both match every name): a second recipe under the same key replaces the
    # first, and those ops would then be left float.
    tool.add_static_config(_INT8_SCOPE, every_op, activation_num_bits=8, weight_num_bits=8)
    tool.add_static_config(scope, every_op, activation_num_bits=8, weight_num_bits=4)
  elif mode == "dynamic_int4":
    tool.add_dynamic_config(scope, every_op, num_bits=4)
  else:
    raise Int4Error(f"Unknown int4 mode {mode!r}; choose one of {', '.join(MODES)}.")
  with _quiet():
    try:
      calibration = tool.calibrate(_signature_data(
          float_tflite, representative_images[:representative_count])) if (
              tool.need_calibration) else None
      return bytes(tool.quantize(calibration, enable_progress_report=False)
                   .quantized_model)
    except (ValueError, RuntimeError, KeyError) as error:
      raise Int4Error(f"LiteRT's quantizer could not write this model as {mode}: "
                      f"{error}") from error


def _output_scope(float_tflite: bytes, layers: str) -> str:
  """A regex over the output tensor names of the ops whose weights match `layers`."""
  from ai_edge_litert import schema_py_generated as schema  # pylint: disable=g-import-not-at-top
  subgraph = schema.Model.GetRootAs(float_tflite, 0).Subgraphs(0)
  names = lambda indices: [subgraph.Tensors(i).Name().decode() for i in indices if i >= 0]
  chosen, weights = [], []
  for index in range(subgraph.OperatorsLength()):
    op = subgraph.Operators(index)
    inputs = op.InputsAsNumpy() if op.InputsLength() else []
    kernels = [name for i, name in zip(inputs[1:2], names(inputs[1:2]))
               if subgraph.Tensors(i).ShapeLength() >= 2]
    weights += kernels
    if any(re.search(layers, name) for name in kernels):
      chosen += names(op.OutputsAsNumpy())
  if not chosen:
    raise Int4Error(f"int4_layers={layers!r} matches no weight tensor of this model; "
                    f"its weight tensors are: {', '.join(weights)}.")
  # The quantizer's scope of an op is its output names, each followed by ";".
  return "^(?:" + "|".join(re.escape(name) for name in chosen) + ");"


def validate(float_tflite: bytes, quantized: bytes, images: np.ndarray,
             count: int = 16) -> List[Dict[str, object]]:
  """Per tensor of the quantized file: SNR (dB) and cosine similarity against
  the float file on `count` test images, worst SNR first (tensors it did not
  change left out)."""
  from litert_quantizer import model_validator  # pylint: disable=g-import-not-at-top
  from litert_quantizer.utils import validation_utils  # pylint: disable=g-import-not-at-top
  metrics = [validation_utils.ValidationErrorMetric.SNR,
             validation_utils.ValidationErrorMetric.COSINE_SIMILARITY]
  with _quiet():
    result = model_validator.compare_model(
        bytearray(float_tflite), bytearray(quantized),
        _signature_data(float_tflite, images[:count]), metrics, num_threads=1)
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  inputs = {detail["name"] for detail in
            Interpreter(model_content=float_tflite).get_input_details()}
  rows = [{"tensor": name, "snr_db": _decibels(values.get("snr")),
           "cosine": _finite(values.get("cosine_similarity"))}
          for name, values in result.get_all_tensor_results().items()
          if name not in inputs]  # the same images in both: nothing to compare
  # Tensors the quantization left as they were (shapes, exact constants) read
  # as no noise at all (SNR infinite or > 100 dB): not listed.
  changed = [row for row in rows if row["snr_db"] is not None and row["snr_db"] < 100]
  return sorted(changed, key=lambda row: row["snr_db"])


def _decibels(power_ratio) -> Optional[float]:
  """The validator's SNR (signal power / MSE) in dB."""
  if power_ratio is None or not float(power_ratio) > 0:
    return None
  return _finite(10 * np.log10(float(power_ratio)))


def _finite(value) -> Optional[float]:
  if value is None:
    return None
  value = float(value)
  return round(value, 4) if np.isfinite(value) else None


def _signature_data(float_tflite: bytes, images) -> dict:
  """{signature: [{input name: one image as a batch of 1}, ...]}."""
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  interpreter = Interpreter(model_content=float_tflite)
  key = next(iter(interpreter.get_signature_list()))
  name = interpreter.get_signature_list()[key]["inputs"][0]
  # float32, or the token ids' int32 / int64
  dtype = interpreter.get_signature_runner(key).get_input_details()[name]["dtype"]
  return {key: [{name: np.asarray(image, dtype)[np.newaxis]} for image in images]}


@contextlib.contextmanager
def _quiet():
  """The quantizer logs and prints progress bars; a run's log shows tfopt's lines."""
  logger = logging.getLogger()
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    logger.setLevel(level)
