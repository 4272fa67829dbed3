"""Activation ranges that minimise int8 error, not the ones min/max calibration sets.

The TFLite converter's calibration records each activation tensor's minimum
and maximum over the representative images and spreads the 256 int8 levels
across that whole range. A tensor whose range a few outliers stretch (a
swish after a BN-folded depthwise conv, a residual sum) then rounds every
ordinary value on a coarse grid: on a briefly trained EfficientNetB0 the file
ends 5 dB above its noise. Clipping the range trades a little error on the
outliers for a finer grid everywhere else; the best clip minimises the mean
squared error of quantize-then-dequantize (as TensorRT's and LiteRT's
quantizer's MSE calibrators do for their own formats).

`clip_ranges(calibrated, images)` runs the converter's calibrated model (float,
with the statistics in its tensors) on the images, keeps a histogram of every
calibrated tensor, and rewrites each tensor's min/max to the pair that
minimises

    MSE(lo, hi) = step^2 / 12 * (share of values inside) + mean((v - clip(v))^2 outside)

with step = (hi - lo) / 255, searched over a geometric grid of each end
(coordinate descent, two rounds). The model's inputs keep their ranges
(they define how an app feeds the int8 file). The converter's quantizer then
makes the file from the rewritten statistics, so the file is made by the
converter as before; only its ranges differ.
"""

from typing import Dict, List

import numpy as np

from tfopt.litert import int8_fidelity

__all__ = ["clip_ranges", "best_range", "BINS"]

BINS = 2048  # histogram bins per tensor, over its calibrated range
_GRID = np.geomspace(1.0, 0.03, 48)  # the fractions of each end tried


def best_range(counts: np.ndarray, low: float, high: float) -> tuple:
  """The (lo, hi) within [low, high] minimising the int8 MSE of the histogram
  `counts` (BINS equal bins over [low, high]); [low, high] if nothing better."""
  centers = low + (np.arange(len(counts)) + 0.5) * (high - low) / len(counts)
  total = counts.sum()
  if total == 0 or high <= low:
    return low, high

  def mse(lo: float, hi: float) -> float:
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # int8 ranges hold zero exactly
    step = (hi - lo) / 255.0
    inside = (centers >= lo) & (centers <= hi)
    clipped = np.where(centers < lo, lo - centers, np.where(centers > hi, centers - hi, 0.0))
    return float((counts[inside].sum() * step * step / 12.0
                  + np.sum(counts * clipped * clipped)) / total)

  best_low, best_high, best = low, high, mse(low, high)
  for _ in range(2):
    for fraction in _GRID:
      error = mse(best_low, high * fraction) if high > 0 else best
      if error < best:
        best, best_high = error, high * fraction
    for fraction in _GRID:
      error = mse(low * fraction, best_high) if low < 0 else best
      if error < best:
        best, best_low = error, low * fraction
  return best_low, best_high


def clip_ranges(calibrated: bytes, images: np.ndarray, batch_size: int = 16) -> bytes:
  """The calibrated model with every activation range set by best_range."""
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
  tensors = model.subgraphs[0].tensors
  runner = int8_fidelity.FileRunner(calibrated, keep_tensors=True)
  inputs = {int(detail["index"]) for detail in runner.inputs}
  ranges = {index: (float(tensor.quantization.min[0]), float(tensor.quantization.max[0]))
            for index, tensor in enumerate(tensors)
            if index not in inputs and _calibrated(tensor)}
  counts: Dict[int, np.ndarray] = {index: np.zeros(BINS) for index in ranges}
  for start in range(0, len(images), batch_size):
    runner.invoke([np.asarray(images[start:start + batch_size], np.float32)])
    for index, (low, high) in ranges.items():
      if high > low:
        values = np.clip(runner.interpreter.get_tensor(index).ravel(), low, high)
        counts[index] += np.histogram(values, BINS, (low, high))[0]
  for index, (low, high) in ranges.items():
    new_low, new_high = best_range(counts[index], low, high)
    if (new_low, new_high) != (low, high):
      tensors[index].quantization.min = np.array([new_low], np.float32)
      tensors[index].quantization.max = np.array([new_high], np.float32)
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _calibrated(tensor) -> bool:
  quantization = tensor.quantization
  return (quantization is not None and quantization.min is not None
          and quantization.max is not None and len(quantization.min) == 1
          and len(quantization.max) == 1)


def changed_ranges(before: bytes, after: bytes) -> List[dict]:
  """[{tensor, before: [lo, hi], after: [lo, hi]}] of the ranges clip_ranges moved."""
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  old = flatbuffer_utils.convert_bytearray_to_object(before).subgraphs[0].tensors
  new = flatbuffer_utils.convert_bytearray_to_object(after).subgraphs[0].tensors
  moved = []
  for tensor_before, tensor_after in zip(old, new):
    if _calibrated(tensor_before) and (
        float(tensor_before.quantization.min[0]) != float(tensor_after.quantization.min[0])
        or float(tensor_before.quantization.max[0]) != float(tensor_after.quantization.max[0])):
      moved.append(dict(tensor=tensor_before.name.decode(),
                        before=[float(tensor_before.quantization.min[0]),
                                float(tensor_before.quantization.max[0])],
                        after=[float(tensor_after.quantization.min[0]),
                               float(tensor_after.quantization.max[0])]))
  return moved
