"""Empirical bias correction of an int8 file: no labels, no training.

Rounding a layer's weights (and the activations feeding it) shifts the mean
of its outputs, channel by channel: E[W_q x_q] != E[W x]. The shift passes
on and adds up along the graph (Nagel et al., "Data-Free Quantization
Through Weight Equalization and Bias Correction", 2019; AIMET's empirical
bias correction). Here it is measured where it shows, on the files
themselves: the float file and the int8 file run on the same unlabelled
calibration images with every tensor kept, and for each conv / depthwise /
dense op

    shift_c = mean over examples and positions of (float_c - int8_c)

is added to its int32 bias (tfopt.litert.int8_file_edits.shift_biases). An op's
output is clamped (a fused ReLU / ReLU6, and the ends of its int8 grid,
which a clipped range makes the outliers hit), and a clamped mean is
biased: only positions where both files are inside the clamp, by a step,
count.

Correcting every op at once over-corrects the later ones: part of their
shift came from earlier ops, corrected now (measured on EfficientNetB0:
validation agreement 84.2 -> 69.4 %, and repeating it diverges). So the ops
are corrected one at a time in execution order, each measured on the file
with the ones before it corrected (one int8 run per op; the float tensors
are computed once). Whether the corrected file is better is not assumed:
tfopt's int8 repair measures it as one more candidate.
"""

import time
from typing import Dict, Optional, Tuple

import numpy as np

from tfopt.litert import int8_fidelity, int8_file_edits as edits

__all__ = ["correct"]

# The float tensors of all rounds are kept when they take at most this much.
CACHE_BYTES = 256 * 2 ** 20
# A channel seen at fewer positions (inside the clamp) than this keeps its bias.
MIN_POSITIONS = 16
_CLAMPS = {"RELU": (0.0, np.inf), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0),
           "NONE": (-np.inf, np.inf)}


def correct(float_file: bytes, quantized_file: bytes, images: np.ndarray,
            rounds: Optional[int] = None, batch_size: int = 32) -> Tuple[bytes, dict]:
  """`quantized_file` with bias-corrected int8 ops, and a summary record.

  Args:
    float_file: the float file `quantized_file` was quantized from (same
      tensor names).
    quantized_file: a full-integer file.
    images: unlabelled inputs (calibration split), float as the model takes them.
    rounds: the ops, in execution order, are corrected in this many groups,
      each measured on the file with the groups before it corrected (None:
      one group per op, exact; fewer: faster, and over-corrects within a group).
  """
  started = time.perf_counter()
  images = np.asarray(images, np.float32)
  reference = _FloatTensors(float_file, quantized_file, images, batch_size)
  order = list(reference.targets)
  groups = np.array_split(np.asarray(order, np.int64), min(rounds or len(order), len(order)) or 1)
  content, total = quantized_file, {}
  for group in groups:
    shifts = reference.mean_shifts(content, set(group.tolist()))
    if shifts:
      content = edits.shift_biases(content, shifts)
      total.update(shifts)
  scales = _bias_scales(content, total)
  steps = [float(np.mean(np.abs(shift) / scales[name])) for name, shift in total.items()]
  return content, dict(ops=len(total), rounds=len(groups), images=len(images),
                       mean_shift_steps=round(float(np.mean(steps)), 3) if steps else 0.0,
                       seconds=round(time.perf_counter() - started, 2))


def _targets(quantized: int8_fidelity.FileRunner, comparable: list,
             model) -> Dict[int, Tuple[int, tuple]]:
  """{int8 output tensor: (float twin tensor, (low, high) clamp)} of the
  int8 conv / depthwise / dense ops (with an int32 bias, or none yet)."""
  ops = edits.op_by_output(model)
  reference_of = {output: twin for _, _, output, twin in comparable}
  targets = {}
  for op in ops.values():
    output = op.outputs[0]
    if (edits.op_name(model, op) not in edits.WEIGHTED_OPS or output not in reference_of
        or quantized.details[output]["dtype"] != np.int8
        or quantized.details[op.inputs[1]]["dtype"] != np.int8
        or (len(op.inputs) > 2 and op.inputs[2] >= 0
            and quantized.details[op.inputs[2]]["dtype"] != np.int32)):
      continue
    targets[output] = (reference_of[output], _CLAMPS.get(edits.fused_activation(op),
                                                          _CLAMPS["NONE"]))
  return targets


class _FloatTensors:
  """The float file's outputs of the corrected ops, on the images: kept in
  memory when they fit in CACHE_BYTES (one float run for all rounds), else
  recomputed each round."""

  def __init__(self, float_file: bytes, quantized_file: bytes, images: np.ndarray,
               batch_size: int):
    self.runner = int8_fidelity.FileRunner(float_file, keep_tensors=True)
    quantized = int8_fidelity.FileRunner(quantized_file, keep_tensors=True)
    self.targets = _targets(quantized, int8_fidelity.comparable_ops(self.runner, quantized),
                            edits.read(quantized_file))
    self.batches = [images[start:start + batch_size]
                    for start in range(0, len(images), batch_size)]
    size = sum(int(np.prod(self.runner.details[twin]["shape"][1:]))
               for twin, _ in self.targets.values()) * len(images) * 4
    self.cache = [self._run(batch) for batch in self.batches] if size <= CACHE_BYTES else None

  def _run(self, batch: np.ndarray) -> Dict[int, np.ndarray]:
    self.runner.invoke([batch])
    return {twin: self.runner.tensor(twin) for twin, _ in self.targets.values()}

  def mean_shifts(self, quantized_file: bytes, outputs: set) -> Dict[str, np.ndarray]:
    """{op output name: mean (float - int8) per channel} of the ops writing `outputs`."""
    quantized = int8_fidelity.FileRunner(quantized_file, keep_tensors=True)
    sums, counts = {}, {}
    for number, batch in enumerate(self.batches):
      floats = self.cache[number] if self.cache is not None else self._run(batch)
      quantized.invoke([batch])
      for output in outputs:
        twin, (low, high) = self.targets[output]
        expected, got = floats[twin], quantized.tensor(output)
        step, zero_point = quantized.details[output]["quantization"]
        # inside the fused clamp and the int8 grid (a clipped range saturates)
        bottom = max(low, (-128 - zero_point) * step)
        top = min(high, (127 - zero_point) * step)
        inside = ((expected > bottom + step) & (expected < top - step)
                  & (got > bottom + step) & (got < top - step))
        axes = tuple(range(expected.ndim - 1))
        sums[output] = sums.get(output, 0) + np.sum(np.where(inside, expected - got, 0), axes)
        counts[output] = counts.get(output, 0) + np.sum(inside, axes)
    return {quantized.details[output]["name"]:
            np.where(counts[output] >= MIN_POSITIONS,
                     sums[output] / np.maximum(counts[output], 1), 0.0)
            for output in outputs}


def _bias_scales(content: bytes, shifts: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  model = edits.read(content)
  ops = edits.op_by_output(model)
  return {name: np.asarray(model.subgraphs[0].tensors[edits.bias_index(model, ops[name])]
                          .quantization.scale) for name in shifts}
