"""Pruning without fine-tuning, to see what a model tolerates.

threshold_sweep: as in the Deep Compression walkthrough, every conv / Dense
  kernel loses its weights with |w| < q * std(w) for a range of quality
  parameters q; accuracy and sparsity are measured for each q.

The per-layer sensitivity scan that builds on the same masks is
tfopt.techniques.sensitivity.algorithm.
"""

import dataclasses
from typing import Dict, List, Sequence

import numpy as np

from tfopt.core._keras import clone_model, keras, require_keras2_model
from tfopt.training.train import accuracy

__all__ = ["prunable_kernels", "magnitude_mask", "apply_masks",
           "SweepPoint", "threshold_sweep"]


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


def apply_masks(model: keras.Model, masks: Dict[str, np.ndarray]) -> keras.Model:
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
        apply_masks(model, masks), images, labels, batch_size)))
  return points
