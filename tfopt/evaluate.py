"""Measuring .tflite files in LiteRT: accuracy, latency, agreement, contents.

Accuracy runs the file itself on the whole test set (inputs batched, and
quantized with the file's own scale and zero-point when it takes int8), never
the Keras model it came from. Latency is batch 1 with a fixed thread count:
warm-up invokes, then the median of timed invokes.
"""

import dataclasses
import os
import time
from typing import Dict

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfopt.errors import TfoptError

__all__ = ["TFLiteError", "TFLiteClassifier", "TFLiteContents", "top1", "accuracy",
           "latency_us", "agreement", "inspect_tflite"]

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


class TFLiteError(TfoptError, ValueError):
  """A file is not a usable .tflite classifier."""


def _open_interpreter(path: str, num_threads: int, with_delegates: bool = True):
  if not os.path.isfile(path):
    raise TFLiteError(f"{path} does not exist.")
  resolver = (OpResolverType.AUTO if with_delegates
              else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  try:
    return Interpreter(model_path=path, num_threads=num_threads,
                       experimental_op_resolver_type=resolver)
  except (ValueError, RuntimeError) as error:
    raise TFLiteError(f"{path} is not a valid .tflite model ({error}); "
                      "convert the model again.") from error


class TFLiteClassifier:
  """Runs a one-input, one-output .tflite classifier on float images.

  Args:
    path: the .tflite file.
    num_threads: LiteRT CPU threads.
  """

  def __init__(self, path: str, num_threads: int = 1):
    self.path = path
    self.interpreter = _open_interpreter(path, num_threads)
    inputs = self.interpreter.get_input_details()
    outputs = self.interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
      raise TFLiteError(f"{path} has {len(inputs)} inputs and {len(outputs)} "
                        "outputs; tfopt evaluates one-input, one-output classifiers.")
    self.input, self.output = inputs[0], outputs[0]
    self._batch = None

  @property
  def input_dtype(self):
    return self.input["dtype"]

  def _resize(self, batch: int):
    if self._batch != batch:
      shape = [batch] + list(self.input["shape"][1:])
      self.interpreter.resize_tensor_input(self.input["index"], shape)
      self.interpreter.allocate_tensors()
      self._batch = batch

  def quantize_input(self, images: np.ndarray) -> np.ndarray:
    """Float images -> the input tensor's dtype, with its scale/zero-point."""
    dtype = self.input["dtype"]
    if not np.issubdtype(dtype, np.integer):
      return images.astype(dtype)
    scale, zero_point = self.input["quantization"]
    info = np.iinfo(dtype)
    quantized = np.round(images / scale + zero_point)
    return np.clip(quantized, info.min, info.max).astype(dtype)

  def dequantize_output(self, values: np.ndarray) -> np.ndarray:
    if not np.issubdtype(self.output["dtype"], np.integer):
      return values.astype(np.float32)
    scale, zero_point = self.output["quantization"]
    return (values.astype(np.float32) - zero_point) * scale

  def run(self, images: np.ndarray) -> np.ndarray:
    """Output (dequantized logits) for one batch of float images."""
    self._resize(len(images))
    self.interpreter.set_tensor(self.input["index"], self.quantize_input(images))
    self.interpreter.invoke()
    return self.dequantize_output(self.interpreter.get_tensor(self.output["index"]))

  def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Dequantized outputs for all `images`, run in batches."""
    expected = tuple(self.input["shape"][1:])
    if tuple(images.shape[1:]) != expected:
      raise TFLiteError(f"{self.path} takes images of shape {expected}, got "
                        f"{tuple(images.shape[1:])}.")
    return np.concatenate([self.run(images[start:start + batch_size])
                           for start in range(0, len(images), batch_size)])


def top1(path: str, images: np.ndarray, num_threads: int = 1,
         batch_size: int = 1000) -> np.ndarray:
  """The class the .tflite file at `path` predicts for each image."""
  predictions = TFLiteClassifier(path, num_threads).predict(images, batch_size)
  return np.argmax(predictions, axis=-1)


def accuracy(path: str, images: np.ndarray, labels: np.ndarray,
             num_threads: int = 1, batch_size: int = 1000) -> float:
  """Top-1 accuracy of the .tflite file at `path` on (images, labels)."""
  return float(np.mean(top1(path, images, num_threads, batch_size) == labels))


def latency_us(path: str, image: np.ndarray, num_threads: int = 1,
               warmup: int = 20, runs: int = 200) -> float:
  """Median wall time of one invoke at batch 1, in microseconds."""
  classifier = TFLiteClassifier(path, num_threads)
  classifier._resize(1)  # pylint: disable=protected-access
  interpreter = classifier.interpreter
  interpreter.set_tensor(classifier.input["index"],
                         classifier.quantize_input(image[np.newaxis]))
  for _ in range(warmup):
    interpreter.invoke()
  timings = np.empty(runs)
  for run in range(runs):
    start = time.perf_counter_ns()
    interpreter.invoke()
    timings[run] = time.perf_counter_ns() - start
  return float(np.median(timings) / 1000.0)


def agreement(path: str, keras_model, images: np.ndarray,
              num_threads: int = 1, batch_size: int = 1000) -> float:
  """Share of `images` on which the .tflite and the Keras model agree (top-1)."""
  keras_top1 = np.argmax(keras_model.predict(images, batch_size=batch_size,
                                             verbose=0), axis=-1)
  return float(np.mean(top1(path, images, num_threads, batch_size) == keras_top1))


@dataclasses.dataclass(frozen=True)
class TFLiteContents:
  """What is inside a .tflite: I/O types, op counts, weight sparsity."""
  input_dtype: str
  output_dtype: str
  ops: Dict[str, int]
  weight_dtypes: Dict[str, int]
  weight_params: int
  weight_zeros: int

  @property
  def weight_sparsity(self) -> float:
    return self.weight_zeros / max(1, self.weight_params)


def inspect_tflite(path: str) -> TFLiteContents:
  """Reads the ops and the conv / fully-connected weight tensors of a file.

  A weight counts as zero when its stored value equals its zero-point (for
  quantized tensors) or is exactly 0.0 (for float tensors).
  """
  interpreter = _open_interpreter(path, 1, with_delegates=False)
  interpreter.allocate_tensors()
  tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
  ops, weight_dtypes, params, zeros = {}, {}, 0, 0
  for op in interpreter._get_ops_details():  # pylint: disable=protected-access
    ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    if op["op_name"] not in WEIGHT_OPS or len(op["inputs"]) < 2:
      continue
    detail = tensors[op["inputs"][1]]
    values = interpreter.get_tensor(detail["index"])
    zero_points = detail["quantization_parameters"]["zero_points"]
    zero_value = _zero_point_array(zero_points, values, detail)
    dtype = np.dtype(detail["dtype"]).name
    weight_dtypes[dtype] = weight_dtypes.get(dtype, 0) + 1
    params += values.size
    zeros += int(np.sum(values == zero_value))
  return TFLiteContents(
      input_dtype=np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
      output_dtype=np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
      ops=ops, weight_dtypes=weight_dtypes, weight_params=int(params),
      weight_zeros=zeros)


def _zero_point_array(zero_points: np.ndarray, values: np.ndarray,
                      detail: dict) -> np.ndarray:
  """The zero-point broadcast along the tensor's quantized dimension."""
  if zero_points is None or zero_points.size == 0:
    return np.zeros((), values.dtype)
  if zero_points.size == 1:
    return zero_points.reshape(()).astype(values.dtype)
  axis = detail["quantization_parameters"]["quantized_dimension"]
  shape = [1] * values.ndim
  shape[axis] = zero_points.size
  return zero_points.reshape(shape).astype(values.dtype)
