"""Edits to a quantized .tflite file that keep it plain LiteRT builtins.

The converter quantizes a whole file with one recipe; some repairs are
per op and need no new conversion, only other numbers in the file:

  * `splice_weights`: the weights and bias of chosen ops are taken from
    another quantization of the same calibrated model (e.g. one scale per
    tensor instead of one per output channel). Both files share activation
    ranges (same calibration), so the spliced op reads and writes the same
    int8 grid as before; only its own weight rounding changes.
  * `shift_biases`: an op's int32 bias is moved by a float amount per output
    channel (bias correction: tfopt.litert.int8_bias_correction), in the bias's
    own steps (scale = input scale x weight scale).

Files are edited as flatbuffer objects (TF's tflite flatbuffer_utils); ops
are found by the name of their output tensor, which conversions of one
calibrated model share.
"""

from typing import Dict, Iterable, Optional

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

__all__ = ["read", "write", "tensor_name", "op_by_output", "splice_weights", "shift_biases",
           "op_name", "fused_activation", "bias_index", "own_buffer", "WEIGHTED_OPS"]

# Ops with a weight (input 1) and an int32 bias (input 2, or none).
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_ACTIVATION_NAMES = {value: name for name, value in vars(schema.ActivationFunctionType).items()
                     if not name.startswith("_")}


def read(content: bytes):
  """The file as a mutable flatbuffer object (schema.ModelT)."""
  return flatbuffer_utils.read_model_from_bytearray(bytearray(content))


def write(model) -> bytes:
  return flatbuffer_utils.convert_object_to_bytearray(model)


def tensor_name(model, index: int) -> str:
  name = model.subgraphs[0].tensors[index].name
  return name.decode() if isinstance(name, bytes) else name


def op_name(model, operator) -> str:
  return flatbuffer_utils.opcode_to_name(model, operator.opcodeIndex) or "CUSTOM"


def fused_activation(operator) -> str:
  """'NONE', 'RELU', 'RELU6', ... for ops that fuse one; 'NONE' otherwise."""
  options = operator.builtinOptions
  value = getattr(options, "fusedActivationFunction", 0) if options is not None else 0
  return _ACTIVATION_NAMES.get(value, "NONE")


def op_by_output(model) -> Dict[str, object]:
  """The main graph's ops by the name of their first output tensor."""
  return {tensor_name(model, op.outputs[0]): op for op in model.subgraphs[0].operators
          if op.outputs is not None and len(op.outputs)}


def _constant(model, index: int) -> Optional[object]:
  """The buffer of tensor `index` when it holds constant data."""
  if index < 0:
    return None
  buffer = model.buffers[model.subgraphs[0].tensors[index].buffer]
  return buffer if buffer.data is not None and len(buffer.data) else None


def own_buffer(model, index: int):
  """The buffer of tensor `index`, first copied if another tensor shares it
  (the converter stores equal constants, e.g. zero biases, once)."""
  tensor = model.subgraphs[0].tensors[index]
  sharing = sum(other.buffer == tensor.buffer for subgraph in model.subgraphs
                for other in subgraph.tensors)
  if sharing > 1:
    copy = schema.BufferT()
    copy.data = np.array(model.buffers[tensor.buffer].data, np.uint8)
    model.buffers.append(copy)
    tensor.buffer = len(model.buffers) - 1
  return model.buffers[tensor.buffer]


def splice_weights(target: bytes, donor: bytes, op_outputs: Iterable[str]) -> bytes:
  """`target` with the constant inputs (weights, bias) of the ops named by
  their output tensors copied from `donor`, scales and zero-points included.

  Raises:
    KeyError: an op is missing from either file, or its inputs differ in shape.
  """
  model, source = read(target), read(donor)
  ops, donor_ops = op_by_output(model), op_by_output(source)
  for output in op_outputs:
    op, twin = ops[output], donor_ops[output]
    for index, twin_index in zip(op.inputs, twin.inputs):
      buffer, twin_buffer = _constant(model, index), _constant(source, twin_index)
      if buffer is None or twin_buffer is None:
        continue
      tensor, twin_tensor = (model.subgraphs[0].tensors[index],
                             source.subgraphs[0].tensors[twin_index])
      if list(tensor.shape) != list(twin_tensor.shape):
        raise KeyError(f"{output}: its input {tensor_name(model, index)} differs in shape")
      own_buffer(model, index).data = np.array(twin_buffer.data, np.uint8)
      tensor.type, tensor.quantization = twin_tensor.type, twin_tensor.quantization
  return write(model)


def bias_index(model, op) -> int:
  """The op's int32 bias tensor; a zero one is added where the converter left
  it out (a zero bias is dropped), scaled input scale x weight scale."""
  inputs = list(op.inputs)
  if len(inputs) > 2 and inputs[2] >= 0:
    return inputs[2]
  tensors = model.subgraphs[0].tensors
  source, weights = tensors[inputs[0]], tensors[inputs[1]]
  channels = weights.shape[-1 if op_name(model, op) == "DEPTHWISE_CONV_2D" else 0]
  bias = schema.TensorT()
  bias.name, bias.shape, bias.type = f"{tensor_name(model, op.outputs[0])}/tfopt_bias", [
      channels], schema.TensorType.INT32
  bias.quantization = schema.QuantizationParametersT()
  # one scale per weight scale: LiteRT reads a single-scale bias for
  # per-tensor weights (a per-channel one there fails to prepare)
  weight_scales = np.asarray(weights.quantization.scale, np.float64)
  bias.quantization.scale = list((source.quantization.scale[0] * weight_scales)
                                 .astype(np.float32))
  bias.quantization.zeroPoint = [0] * len(weight_scales)
  buffer = schema.BufferT()
  buffer.data = np.zeros(4 * channels, np.uint8)
  model.buffers.append(buffer)
  bias.buffer = len(model.buffers) - 1
  tensors.append(bias)
  op.inputs = np.array(inputs[:2] + [len(tensors) - 1], np.int32)
  return len(tensors) - 1


def shift_biases(content: bytes, shifts: Dict[str, np.ndarray]) -> bytes:
  """`content` with the int32 bias of each op (named by its output tensor)
  moved by `shifts[name]` (float, one value per output channel)."""
  model = read(content)
  ops = op_by_output(model)
  for output, shift in shifts.items():
    index = bias_index(model, ops[output])
    tensor, buffer = model.subgraphs[0].tensors[index], own_buffer(model, index)
    bias = np.frombuffer(bytes(buffer.data), np.int32).astype(np.int64)
    steps = np.round(np.asarray(shift, np.float64) / np.asarray(tensor.quantization.scale))
    info = np.iinfo(np.int32)
    moved = np.clip(bias + steps.astype(np.int64), info.min, info.max).astype("<i4")
    buffer.data = np.frombuffer(moved.tobytes(), np.uint8).copy()
  return write(model)
