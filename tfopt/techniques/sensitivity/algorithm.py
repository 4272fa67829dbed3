"""Per-layer sensitivity: how much each layer can lose, and pruning by it.

layer_sensitivity: one layer at a time is pruned to increasing sparsities
  (smallest magnitudes first), the others untouched; the accuracy drop says
  how much that layer can lose. scan_layers does the same with any measure
  of quality (a task's metric or score, tfopt.techniques.sensitivity.on_task).
choose_sparsities: for each layer, the highest sparsity whose drop stays
  within the user's budget; the result feeds tfopt.techniques.prune.algorithm's per-layer targets.
allocate_sparsity: instead of a budget, a total sparsity to reach, spread
  over the layers where the curves say it costs least.
sensitivity: the whole technique: scan, choose, then prune with the chosen
  per-layer targets and, as a control, uniformly at the same total.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from tfopt.config import AnalysisConfig

from tfopt.core._keras import clone_model, keras, require_keras2_model
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset
from tfopt.techniques.distill.algorithm import Teacher
from tfopt.techniques.prune.algorithm import PruneResult, prune
from tfopt.techniques.prune.settings import PruneConfig
from tfopt.techniques.sweep.algorithm import magnitude_mask, prunable_kernels
from tfopt.training.train import accuracy, FitContext

__all__ = ["SensitivityError", "SensitivityPoint", "layer_sensitivity",
           "scan_layers", "choose_sparsities", "allocate_sparsity", "overall_sparsity",
           "SensitivityResult", "sensitivity"]


class SensitivityError(TfoptError, ValueError):
  """A sensitivity scan or allocation that cannot run as asked."""


@dataclasses.dataclass(frozen=True)
class SensitivityPoint:
  """The quality with one layer pruned to `sparsity`: validation accuracy for
  classifiers, a task's objective (tfopt.task.objective) oriented so higher is
  better for tasks; `drop` is the unpruned quality minus this one."""
  layer: str
  sparsity: float
  accuracy: float
  drop: float


def layer_sensitivity(model: keras.Model, images: np.ndarray, labels: np.ndarray,
                      sparsities: Sequence[float], batch_size: int = 1000
                      ) -> List[SensitivityPoint]:
  """Prunes each layer alone to each sparsity; measures the accuracy drop."""
  return scan_layers(model, lambda scanned: accuracy(scanned, images, labels, batch_size),
                     sparsities)


def scan_layers(model: keras.Model, quality: Callable[[keras.Model], float],
                sparsities: Sequence[float]) -> List[SensitivityPoint]:
  """Each prunable layer alone at each sparsity (smallest |w| zeroed), the
  others untouched: `quality(model)` (higher is better) and its drop.

  The layers are masked in place on one copy, restored after each layer, so
  `quality` may reuse what it built for the model (a traced predict).
  """
  require_keras2_model(model)
  if not all(0 < value < 1 for value in sparsities):
    raise SensitivityError(f"Sensitivity sparsities {list(sparsities)} must lie in (0, 1).")
  copy = clone_model(model)
  baseline = quality(copy)
  points = []
  for name in prunable_kernels(copy):
    kernel = copy.get_layer(name).kernel
    original = kernel.numpy()
    for sparsity in sorted(sparsities):
      kernel.assign(original * magnitude_mask(original, sparsity))
      value = quality(copy)
      points.append(SensitivityPoint(name, float(sparsity), value, baseline - value))
    kernel.assign(original)
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
    raise SensitivityError(f"Target sparsity {target} must lie in (0, 1).")
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
      raise SensitivityError(f"Target sparsity {target:.0%} is beyond the highest "
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


@dataclasses.dataclass
class SensitivityResult:
  """The scan, the per-layer sparsities it chose, and both pruned models.

  uniform: pruned at `overall_sparsity` in every layer (the control);
  chosen_result: pruned at `chosen` per layer; same total, other allocation.
  """
  points: List[SensitivityPoint]
  layer_sizes: Dict[str, int]
  chosen: Dict[str, float]
  overall_sparsity: float
  uniform: PruneResult
  chosen_result: PruneResult


def sensitivity(model: keras.Model, dataset: Dataset, config: AnalysisConfig,
                prune_config: PruneConfig, teacher: Optional[Teacher] = None,
                batch_size: int = 1000, seed: int = 0,
                fits: Optional[FitContext] = None) -> SensitivityResult:
  """Scans each layer, chooses per-layer sparsities, prunes by them and uniformly.

  Args:
    model: a trained Keras 2 model that outputs logits; not modified.
    dataset: validation data for the scan, training data for fine-tuning.
    config: the sparsities to scan and the budget (max_accuracy_drop, in
      percentage points) or the overall target (sensitivity_target_sparsity).
    prune_config: how both pruned models are fine-tuned.
    teacher: if given (a tfopt.techniques.distill.algorithm.Teacher or a Keras model), fine-tune
      by distillation from it.
    batch_size: for the scan's predictions.
    seed: both prunes start from it, so they see the same shuffles.
    fits: a pipeline stage's epoch checkpoints and clock (see train.fit).

  Raises:
    SensitivityError: no layer stays within the budget.
  """
  points = layer_sensitivity(model, dataset.x_val, dataset.y_val,
                             config.sensitivity_sparsities, batch_size)
  sizes = prunable_kernels(model)
  if config.sensitivity_target_sparsity is None:
    chosen = choose_sparsities(points, config.max_accuracy_drop / 100)
  else:
    chosen = allocate_sparsity(points, sizes, config.sensitivity_target_sparsity)
  total = overall_sparsity(chosen, sizes)
  if total == 0:
    raise SensitivityError(
        f"No layer of {model.name!r} stays within {config.max_accuracy_drop} pp at "
        f"{min(config.sensitivity_sparsities):.0%} sparsity; raise "
        "--max_accuracy_drop or add lower --sensitivity_sparsities.")
  uniform = prune(model, dataset, dataclasses.replace(
      prune_config, target_sparsity=total, initial_sparsity=0.0), teacher=teacher,
                  fits=fits)
  keras.utils.set_random_seed(seed)  # the same shuffles for both
  chosen_result = prune(model, dataset, prune_config, teacher=teacher,
                        layer_targets=chosen, fits=fits)
  return SensitivityResult(points, sizes, chosen, total, uniform, chosen_result)
