"""Pruning without fine-tuning, to see what a model tolerates.

threshold_sweep: as in the Deep Compression walkthrough, every conv / Dense
  kernel loses its weights with |w| < q * std(w) for a range of quality
  parameters q; accuracy and sparsity are measured for each q.
layer_sensitivity: one layer at a time is pruned to increasing sparsities
  (smallest magnitudes first), the others untouched; the accuracy drop says
  how much that layer can lose.
choose_sparsities: for each layer, the highest sparsity whose drop stays
  within the user's budget; the result feeds tfopt.prune's per-layer targets.
allocate_sparsity: instead of a budget, a total sparsity to reach, spread
  over the layers where the curves say it costs least.
"""

import dataclasses
from typing import Dict, List, Sequence

import numpy as np

from tfopt._keras import keras, require_keras2_model
from tfopt.errors import TfoptError
from tfopt.prune import clone_model
from tfopt.train import accuracy

__all__ = ["SweepError", "prunable_kernels", "magnitude_mask", "SweepPoint",
           "threshold_sweep", "SensitivityPoint", "layer_sensitivity",
           "choose_sparsities", "allocate_sparsity", "overall_sparsity"]


class SweepError(TfoptError, ValueError):
  """A sweep that cannot run as asked."""


def prunable_kernels(model: keras.Model) -> Dict[str, int]:
  """{layer name: kernel size} of the layers tfmot prunes (Conv2D, Dense).

  Depthwise kernels are left out, as tfmot 0.8.1 leaves them unpruned.
  """
  return {layer.name: int(np.prod(layer.kernel.shape)) for layer in model.layers
          if type(layer) in (keras.layers.Conv2D, keras.layers.Dense)}


def magnitude_mask(kernel: np.ndarray, sparsity: float) -> np.ndarray:
  """True for the weights kept when the `sparsity` smallest |w| are removed."""
  count = int(round(sparsity * kernel.size))
  mask = np.ones(kernel.size, bool)
  mask[np.argsort(np.abs(kernel), axis=None, kind="stable")[:count]] = False
  return mask.reshape(kernel.shape)


@dataclasses.dataclass(frozen=True)
class SweepPoint:
  """One quality parameter q of the threshold sweep."""
  quality: float
  sparsity: float
  accuracy: float


def _apply(model: keras.Model, masks: Dict[str, np.ndarray]) -> keras.Model:
  copy = clone_model(model)
  for name, mask in masks.items():
    kernel = copy.get_layer(name).kernel
    kernel.assign(kernel.numpy() * mask)
  return copy


def threshold_sweep(model: keras.Model, images: np.ndarray, labels: np.ndarray,
                    qualities: Sequence[float], batch_size: int = 1000
                    ) -> List[SweepPoint]:
  """Accuracy and sparsity after removing |w| < q * std(w) in every kernel."""
  require_keras2_model(model)
  kernels = {name: model.get_layer(name).kernel.numpy()
             for name in prunable_kernels(model)}
  points = []
  for quality in qualities:
    masks = {name: np.abs(kernel) >= quality * np.std(kernel)
             for name, kernel in kernels.items()}
    zeros = sum(int(np.sum(~mask)) for mask in masks.values())
    total = sum(mask.size for mask in masks.values())
    points.append(SweepPoint(float(quality), zeros / total, accuracy(
        _apply(model, masks), images, labels, batch_size)))
  return points


@dataclasses.dataclass(frozen=True)
class SensitivityPoint:
  """Accuracy with one layer pruned to `sparsity`."""
  layer: str
  sparsity: float
  accuracy: float
  drop: float  # unpruned accuracy minus this one, in [0, 1] units


def layer_sensitivity(model: keras.Model, images: np.ndarray, labels: np.ndarray,
                      sparsities: Sequence[float], batch_size: int = 1000
                      ) -> List[SensitivityPoint]:
  """Prunes each layer alone to each sparsity; measures the accuracy drop."""
  require_keras2_model(model)
  if not all(0 < value < 1 for value in sparsities):
    raise SweepError(f"Sensitivity sparsities {list(sparsities)} must lie in (0, 1).")
  baseline = accuracy(model, images, labels, batch_size)
  points = []
  for name in prunable_kernels(model):
    kernel = model.get_layer(name).kernel.numpy()
    for sparsity in sorted(sparsities):
      value = accuracy(_apply(model, {name: magnitude_mask(kernel, sparsity)}),
                       images, labels, batch_size)
      points.append(SensitivityPoint(name, float(sparsity), value, baseline - value))
  return points


def choose_sparsities(points: Sequence[SensitivityPoint],
                      max_accuracy_drop: float) -> Dict[str, float]:
  """Per layer, the highest sparsity whose drop is within the budget.

  Walking up from the lowest sparsity, a layer stops at the first sparsity
  that breaks the budget, so one lucky point past a break is not taken.
  `max_accuracy_drop` is in [0, 1] units (0.003 = 0.3 percentage points);
  a layer that breaks it already at the lowest sparsity gets 0.
  """
  chosen: Dict[str, float] = {}
  for point in points:
    chosen.setdefault(point.layer, 0.0)
  stopped = set()
  for point in sorted(points, key=lambda point: (point.layer, point.sparsity)):
    if point.layer in stopped:
      continue
    if point.drop <= max_accuracy_drop:
      chosen[point.layer] = point.sparsity
    else:
      stopped.add(point.layer)
  return chosen


def allocate_sparsity(points: Sequence[SensitivityPoint], sizes: Dict[str, int],
                      target: float) -> Dict[str, float]:
  """Per-layer sparsities reaching `target` overall at the least measured cost.

  Greedy: starting from 0 everywhere, repeatedly move the layer whose next
  sparsity on its curve costs the least accuracy drop per weight removed,
  until the weights removed reach `target` of the total. Layers whose curve
  is flat (a large Dense) fill up first; sensitive ones (the first conv) last.
  """
  if not 0 < target < 1:
    raise SweepError(f"Target sparsity {target} must lie in (0, 1).")
  curves: Dict[str, List[SensitivityPoint]] = {}
  for point in sorted(points, key=lambda point: point.sparsity):
    curves.setdefault(point.layer, []).append(point)
  chosen = {layer: 0.0 for layer in curves}
  steps = {layer: 0 for layer in curves}
  drops = {layer: 0.0 for layer in curves}
  total = sum(sizes[layer] for layer in curves)
  while overall_sparsity(chosen, sizes) < target:
    candidates = [layer for layer in curves if steps[layer] < len(curves[layer])]
    if not candidates:
      raise SweepError(f"Target sparsity {target:.0%} is beyond the highest "
                       "sensitivity sparsities measured; add higher ones.")

    def cost(layer):
      point = curves[layer][steps[layer]]
      removed = (point.sparsity - chosen[layer]) * sizes[layer] / total
      return max(point.drop - drops[layer], 0.0) / removed

    layer = min(candidates, key=cost)
    point = curves[layer][steps[layer]]
    chosen[layer], drops[layer] = point.sparsity, max(drops[layer], point.drop)
    steps[layer] += 1
  return chosen


def overall_sparsity(sparsities: Dict[str, float], sizes: Dict[str, int]) -> float:
  """The share of all prunable weights removed by per-layer `sparsities`."""
  return (sum(sparsities.get(name, 0.0) * size for name, size in sizes.items())
          / sum(sizes.values()))
