"""Where an int8 file parts from its float model, op by op along the graph.

Both files run end to end on the same images in LiteRT, every intermediate
tensor kept; each op output of the quantized file is dequantized and
compared with the same tensor of the float file:

    snr_db   10 log10(sum f^2 / sum (f - q)^2): signal over the error
             *accumulated from the input on* (the op's own rounding plus all
             it inherited), in decibels; 40 dB is an error of 1 % of the
             signal, 20 dB of 10 %
    cosine   the angle between the two (1.0: the same direction)
    drop_db  the SNR of the op's worst activation input minus its own:
             what this op lost itself
    added_noise  the noise-to-signal power this op added:
             10^(-snr/10) - 10^(-input snr/10). The ops that add the most are
             where the file loses its fidelity, whatever quantization steps
             say (an op can round to a fine grid and still lose the signal,
             when its range is spent on a few outliers). A first op drops
             from an exact input by ~100 dB and still adds little.

Tensors are matched by name; the TFLite converter names an op's output
after the Keras layers fused into it ("m/re_lu/Relu;m/bn/...;m/conv/Conv2D"),
so `layer` is the last Keras layer named there. Ops the quantized file added
(QUANTIZE, DEQUANTIZE) have no float twin and are left out.

`output_agreement` and `output_snr_db` compare two files' final outputs:
the whole-file fidelity a repair is judged by (see tfopt.litert.int8_repair).
"""

import dataclasses
import math
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfopt.core.errors import TfoptError

__all__ = ["FidelityError", "OpFidelity", "FileRunner", "op_fidelity", "output_snr_db",
           "output_agreement", "layer_of", "comparable_ops", "worst_first", "dequantize",
           "to_dtype", "float_ops", "Sums"]

# Ops that only move between number formats: nothing to compare them with.
_FORMAT_OPS = ("QUANTIZE", "DEQUANTIZE")


class FidelityError(TfoptError, ValueError):
  """Two files cannot be compared (different inputs, nothing in common)."""


@dataclasses.dataclass(frozen=True)
class OpFidelity:
  """One op output of a quantized file against the float file's same tensor."""
  index: int  # the op's place in the quantized file's execution order
  op: str
  tensor: str
  layer: str
  dtype: str
  snr_db: Optional[float]
  cosine: Optional[float]
  drop_db: Optional[float]
  added_noise: Optional[float] = None


def layer_of(tensor: str) -> str:
  """The Keras layer a converter tensor name ends with ('m/a/Relu;m/conv/Conv2D1' -> conv)."""
  last = tensor.split(";")[-1]
  parts = last.split("/")
  return parts[1] if len(parts) > 2 else (parts[0] if len(parts) == 2 else last)


def _key(name: str) -> str:
  """A tensor name without the converter's trailing counters ('Conv2D1' -> 'Conv2D')."""
  return ";".join(re.sub(r"\d+$", "", part) for part in name.split(";"))


class FileRunner:
  """A .tflite file in LiteRT that takes float inputs and gives float outputs.

  Integer inputs are quantized with the file's own scale and zero-point and
  integer outputs dequantized, so files of every precision compare directly.
  keep_tensors keeps every intermediate tensor for `tensor()` (slower).
  """

  def __init__(self, content: bytes, keep_tensors: bool = False, num_threads: int = 1):
    self.content = content
    resolver = (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if keep_tensors
                else OpResolverType.AUTO)
    try:
      self.interpreter = Interpreter(model_content=bytes(content), num_threads=num_threads,
                                     experimental_op_resolver_type=resolver,
                                     experimental_preserve_all_tensors=keep_tensors)
      self.inputs = self.interpreter.get_input_details()
      self.outputs = self.interpreter.get_output_details()
    except (ValueError, RuntimeError) as error:
      raise FidelityError(f"LiteRT cannot open this file to compare it ({error}).") from error
    self.details = {detail["index"]: detail for detail in self.interpreter.get_tensor_details()}
    self._shapes = None
    # A file converted at a fixed batch (recurrent layers) runs one example
    # at a time, its recurrent states reset before each; `_stacked` holds
    # the outputs of a batch run that way.
    self.fixed_batch = int(self.inputs[0]["shape_signature"][0]) == 1
    self._stacked = None

  def _resize(self, inputs: Sequence[np.ndarray]):
    """To the inputs' shapes: the batch, and any size the file left open
    (a sequence of any length)."""
    shapes = [tuple(np.shape(values)) for values in inputs]
    if self._shapes != shapes:
      for detail, shape in zip(self.inputs, shapes):
        open_sizes = [size < 0 for size in detail["shape_signature"][1:]]
        self.interpreter.resize_tensor_input(detail["index"], [shape[0]] + [
            given if is_open else int(size)
            for given, size, is_open in zip(shape[1:], detail["shape"][1:], open_sizes)])
      self.interpreter.allocate_tensors()
      self._shapes = shapes

  def invoke(self, inputs: Sequence[np.ndarray]):
    """Runs one batch (one array per input, float, batch first)."""
    self._stacked = None
    if self.fixed_batch and len(inputs[0]) != 1:
      outputs = []
      for number in range(len(inputs[0])):
        self.invoke([values[number:number + 1] for values in inputs])
        outputs.append(self.output_values())
      self._stacked = [np.concatenate(parts) for parts in zip(*outputs)]
      return
    self._resize(inputs)
    if self.fixed_batch:  # its LSTM states are variables that outlive an invoke
      self.interpreter.reset_all_variables()
    for detail, values in zip(self.inputs, inputs):
      self.interpreter.set_tensor(detail["index"], to_dtype(values, detail))
    self.interpreter.invoke()

  def output_values(self) -> List[np.ndarray]:
    if self._stacked is not None:
      return self._stacked
    return [dequantize(self.interpreter.get_tensor(detail["index"]), detail)
            for detail in self.outputs]

  def tensor(self, index: int) -> np.ndarray:
    return dequantize(self.interpreter.get_tensor(index), self.details[index])

  def predict(self, images: np.ndarray, batch_size: int = 250) -> List[np.ndarray]:
    """Float outputs for all `images` (one array per output)."""
    batches = [None] * len(self.outputs)
    for start in range(0, len(images), batch_size):
      self.invoke([np.asarray(images[start:start + batch_size], np.float32)])
      for number, values in enumerate(self.output_values()):
        batches[number] = (batches[number] or []) + [values]
    return [np.concatenate(parts) for parts in batches]


def _quantization(detail: dict):
  scales = detail["quantization_parameters"]["scales"]
  zero_points = detail["quantization_parameters"]["zero_points"]
  if not np.issubdtype(detail["dtype"], np.integer) or scales is None or not len(scales):
    return None
  axis = detail["quantization_parameters"]["quantized_dimension"]
  return scales, zero_points, axis


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
  """A tensor as float32 (its scale and zero-point applied when it has them)."""
  quantization = _quantization(detail)
  if quantization is None:
    return values.astype(np.float32)
  scales, zero_points, axis = quantization
  if len(scales) > 1:
    shape = [1] * values.ndim
    shape[axis] = len(scales)
    scales, zero_points = scales.reshape(shape), zero_points.reshape(shape)
  return ((values.astype(np.float32) - zero_points) * scales).astype(np.float32)


def to_dtype(values: np.ndarray, detail: dict) -> np.ndarray:
  """Float values as the tensor's dtype (quantized with its scale and zero-point)."""
  dtype = detail["dtype"]
  scale, zero_point = detail["quantization"]
  if not np.issubdtype(dtype, np.integer) or not scale:  # float, or token ids
    return np.asarray(values).astype(dtype)
  info = np.iinfo(dtype)
  return np.clip(np.round(np.asarray(values, np.float32) / scale + zero_point),
                 info.min, info.max).astype(dtype)


@dataclasses.dataclass
class Sums:
  """Running sums of a reference tensor and its quantized copy: SNR, cosine."""
  signal: float = 0.0
  noise: float = 0.0
  product: float = 0.0
  quantized: float = 0.0

  def add(self, reference: np.ndarray, values: np.ndarray):
    reference, values = reference.astype(np.float64), values.astype(np.float64)
    self.signal += float(np.sum(reference * reference))
    self.noise += float(np.sum((reference - values) ** 2))
    self.product += float(np.sum(reference * values))
    self.quantized += float(np.sum(values * values))

  def snr_db(self) -> Optional[float]:
    return _decibels(self.signal, self.noise)

  def cosine(self) -> Optional[float]:
    if self.signal <= 0 or self.quantized <= 0:
      return None
    return round(self.product / math.sqrt(self.signal * self.quantized), 6)


# An exact copy (noise 0) reads as this many dB: finite, so it sorts and prints.
EXACT_DB = 150.0


def _decibels(signal: float, noise: float) -> Optional[float]:
  if signal <= 0:
    return None
  if noise <= signal * 10 ** (-EXACT_DB / 10):
    return EXACT_DB
  return round(10 * math.log10(signal / noise), 3)


def op_fidelity(float_file: bytes, quantized_file: bytes, images: np.ndarray,
                batch_size: int = 16) -> List[OpFidelity]:
  """Every op output of `quantized_file` against `float_file` on `images`, in
  execution order (see the module docstring).

  Raises:
    FidelityError: the files take different inputs, or share no tensor name.
  """
  reference = FileRunner(float_file, keep_tensors=True)
  quantized = FileRunner(quantized_file, keep_tensors=True)
  if [tuple(d["shape"][1:]) for d in reference.inputs] != [
      tuple(d["shape"][1:]) for d in quantized.inputs]:
    raise FidelityError("The float and the quantized file take inputs of different "
                        "shapes: they are not the same model.")
  ops = comparable_ops(reference, quantized)
  if not ops:
    raise FidelityError("The quantized file shares no tensor name with the float file: "
                        "give the float file it was converted from.")
  sums = {output: Sums() for _, _, output, _ in ops}
  input_sums = {detail["index"]: Sums() for detail in quantized.inputs}
  for start in range(0, len(images), batch_size):
    batch = np.asarray(images[start:start + batch_size], np.float32)
    reference.invoke([batch])
    quantized.invoke([batch])
    for detail in quantized.inputs:  # what the input's own quantization loses
      input_sums[detail["index"]].add(batch, quantized.tensor(detail["index"]))
    for _, _, output, twin in ops:
      sums[output].add(reference.tensor(twin), quantized.tensor(output))
  snr = {index: sums_.snr_db() for index, sums_ in {**input_sums, **sums}.items()}
  return [_row(quantized, op, output, sums[output], snr) for op, _, output, _ in ops]


def comparable_ops(reference: FileRunner, quantized: FileRunner) -> list:
  """(op details, op name, output index, float twin index) in execution order."""
  exact = {detail["name"]: index for index, detail in reference.details.items()}
  loose: Dict[str, list] = {}
  for name, index in exact.items():
    loose.setdefault(_key(name), []).append(index)
  ops = []
  for op in quantized.interpreter._get_ops_details():  # pylint: disable=protected-access
    if op["op_name"] in _FORMAT_OPS or not len(op["outputs"]):
      continue
    output = int(op["outputs"][0])
    name = quantized.details[output]["name"]
    twin = exact.get(name)
    if twin is None and len(loose.get(_key(name), [])) == 1:
      twin = loose[_key(name)][0]
    if twin is not None and tuple(reference.details[twin]["shape"]) == tuple(
        quantized.details[output]["shape"]):
      ops.append((op, op["op_name"], output, twin))
  return ops


def _row(quantized: FileRunner, op: dict, output: int, sums: Sums, snr: dict) -> OpFidelity:
  own = snr.get(output)
  inputs = [snr[int(index)] for index in op["inputs"]
            if int(index) in snr and snr[int(index)] is not None]
  drop = None if own is None or not inputs else round(min(inputs) - own, 3)
  added = (None if drop is None else
           float(f"{10 ** (-own / 10) - 10 ** (-min(inputs) / 10):.4g}"))
  tensor = quantized.details[output]["name"]
  return OpFidelity(index=int(op["index"]), op=op["op_name"], tensor=tensor,
                    layer=_layer(quantized, op, tensor),
                    dtype=np.dtype(quantized.details[output]["dtype"]).name,
                    snr_db=own, cosine=sums.cosine(), drop_db=drop, added_noise=added)


def _layer(runner: FileRunner, op: dict, tensor: str) -> str:
  """The op's Keras layer; a model output's tensor is named after the model
  ('StatefulPartitionedCall:0'), so its weights' name says it instead."""
  if "/" in tensor or len(op["inputs"]) < 2 or int(op["inputs"][1]) < 0:
    return layer_of(tensor)
  weights = runner.details[int(op["inputs"][1])]["name"]
  return layer_of(weights) if "/" in weights else layer_of(tensor)


def float_ops(content: bytes) -> List[tuple]:
  """(op, Keras layer, output tensor) of every op of a quantized file that
  computes in float32 (besides the QUANTIZE / DEQUANTIZE around them): what
  was asked to stay float, and what the converter left float because LiteRT
  has no integer kernel for it."""
  runner = FileRunner(content)
  found = []
  for op in runner.interpreter._get_ops_details():  # pylint: disable=protected-access
    if op["op_name"] in _FORMAT_OPS or not len(op["outputs"]):
      continue
    output = int(op["outputs"][0])
    if runner.details[output]["dtype"] == np.float32:
      tensor = runner.details[output]["name"]
      found.append((op["op_name"], _layer(runner, op, tensor), tensor))
  return found


def worst_first(rows: List[OpFidelity]) -> List[OpFidelity]:
  """The rows that have an added noise, the ops that add the most first."""
  return sorted((row for row in rows if row.added_noise is not None),
                key=lambda row: -row.added_noise)


def output_snr_db(reference: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> float:
  """SNR (dB) of a file's outputs against the reference outputs, all outputs pooled."""
  sums = Sums()
  for expected, got in zip(reference, values):
    sums.add(expected, got)
  return sums.snr_db() or 0.0


def output_agreement(reference: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> float:
  """Share of examples whose top-1 class (first output) is the reference's."""
  return float(np.mean(np.argmax(reference[0], -1) == np.argmax(values[0], -1)))
