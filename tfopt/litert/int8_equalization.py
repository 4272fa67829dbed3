"""Cross-layer equalization of a float file, before it is quantized.

Where a conv's output feeds one other conv through a ReLU (or nothing),
ReLU(x / s) = ReLU(x) / s for s > 0, so output channel i of the first can
be divided by s_i and input channel i of the second multiplied by s_i
without changing what the pair computes (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", 2019; AIMET's
CLE). With

    s_i = sqrt(r1_i / r2_i)   r1_i: max |weight| of the first's channel i,
                              r2_i: max |weight| of the second's input channel i

both channels end with the range sqrt(r1_i r2_i): a layer whose channels
spanned 0.01..10 (one int8 scale for all of them rounds the small ones
away) becomes even, which is what one weight scale per tensor (and the
second layer's scale per output channel) needs.

The pairs are found in the calibrated float file (batch norm already folded
into the convs): CONV_2D / DEPTHWISE_CONV_2D with no fused activation or a
ReLU, whose output only the next CONV_2D / DEPTHWISE_CONV_2D reads. ReLU6,
swish and every other activation are not positive-homogeneous and end a
pair. The equalized file is calibrated again (its activation ranges moved)
by the converter's own calibrator; whether it is better is measured by
tfopt's int8 repair, as one more candidate.
"""

from typing import Callable, List, Tuple

import numpy as np

from tfopt.litert import int8_file_edits as edits

__all__ = ["equalize", "pairs"]

# Sweeps over the chain: each pair's scales move its neighbours' ranges.
SWEEPS = 3
_LAYERS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_HOMOGENEOUS = ("NONE", "RELU")


def pairs(model) -> List[Tuple[object, object]]:
  """(first op, second op) pairs that can be equalized, in graph order."""
  graph = model.subgraphs[0]
  readers = {}
  for op in graph.operators:
    for index in op.inputs:
      readers.setdefault(int(index), []).append(op)
  outputs = set(int(index) for index in graph.outputs)
  found = []
  for op in graph.operators:
    output = int(op.outputs[0])
    if (edits.op_name(model, op) not in _LAYERS or edits.fused_activation(op) not in _HOMOGENEOUS
        or output in outputs or len(readers.get(output, [])) != 1):
      continue
    second = readers[output][0]
    if (edits.op_name(model, second) in _LAYERS and int(second.inputs[0]) == output
        and _float_weights(model, op) is not None and _float_weights(model, second) is not None
        and _channels_out(model, op) == _channels_in(model, second)):
      found.append((op, second))
  return found


def _float_weights(model, op):
  tensor = model.subgraphs[0].tensors[int(op.inputs[1])]
  buffer = model.buffers[tensor.buffer]
  if tensor.type != 0 or buffer.data is None or not len(buffer.data):  # 0: FLOAT32
    return None
  return np.frombuffer(bytes(buffer.data), "<f4").reshape(tensor.shape)


def _channels_out(model, op) -> int:
  return int(_float_weights(model, op).shape[-1 if edits.op_name(model, op) ==
                                                "DEPTHWISE_CONV_2D" else 0])


def _channels_in(model, op) -> int:
  """The input channels a weight's last axis indexes (a depthwise conv with
  channel multiplier 1: its own channels; otherwise 0, not equalizable)."""
  weights = _float_weights(model, op)
  if edits.op_name(model, op) == "DEPTHWISE_CONV_2D":
    input_channels = model.subgraphs[0].tensors[int(op.inputs[0])].shape[-1]
    return int(weights.shape[-1]) if weights.shape[-1] == input_channels else 0
  return int(weights.shape[-1])


def _set(model, index: int, values: np.ndarray):
  edits.own_buffer(model, index).data = np.frombuffer(
      np.ascontiguousarray(values, "<f4").tobytes(), np.uint8).copy()


def _equalize_pair(model, first, second):
  one, two = _float_weights(model, first), _float_weights(model, second)
  out_axis = -1 if edits.op_name(model, first) == "DEPTHWISE_CONV_2D" else 0
  moved_one = np.moveaxis(one, out_axis, 0)
  range_one = np.max(np.abs(moved_one.reshape(len(moved_one), -1)), axis=1)
  range_two = np.max(np.abs(two.reshape(-1, two.shape[-1])), axis=0)
  scale = np.ones_like(range_one)
  usable = (range_one > 0) & (range_two > 0)
  scale[usable] = np.sqrt(range_one[usable] / range_two[usable])
  shape = [1] * one.ndim
  shape[out_axis] = len(scale)
  _set(model, int(first.inputs[1]), one / scale.reshape(shape))
  if len(first.inputs) > 2 and first.inputs[2] >= 0:
    bias_index = int(first.inputs[2])
    bias = np.frombuffer(bytes(model.buffers[model.subgraphs[0].tensors[bias_index].buffer]
                               .data), "<f4")
    _set(model, bias_index, bias / scale)
  _set(model, int(second.inputs[1]), two * scale)


def equalize(calibrated: bytes, calibration: Callable) -> Tuple[bytes, dict]:
  """`calibrated` (a float file with activation statistics) with every pair
  equalized and calibrated again on `calibration` (a representative-dataset
  generator function); the record says how many pairs. No pair: the file
  as it was."""
  from tensorflow.lite.python.optimize import calibrator  # pylint: disable=g-import-not-at-top
  model = edits.read(calibrated)
  found = pairs(model)
  if not found:
    return calibrated, dict(pairs=0)
  for _ in range(SWEEPS):
    for first, second in found:
      _equalize_pair(model, first, second)
  layers = [edits.tensor_name(model, int(second.outputs[0])) for _, second in found]
  content = calibrator.Calibrator(edits.write(model)).calibrate(calibration)
  return content, dict(pairs=len(found), second_layers=layers)
