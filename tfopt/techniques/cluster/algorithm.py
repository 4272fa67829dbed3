"""Weight sharing (Deep Compression's k-means quantization) with tfmot.

Each chosen kernel is replaced by `number_of_clusters` shared values
(centroids) and an index per weight; fine-tuning trains the centroids, and
`strip_clustering` leaves a plain Keras model whose kernels hold at most that
many distinct values. After pruning, `preserve_sparsity` keeps the zeros.
`cluster` clones the model first (tfmot's wrappers share layer objects with the
model they wrap), then checks the distinct values and zeros it promised.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.clustering.keras.experimental import (
    cluster as experimental_cluster)

from tfopt.core._keras import clone_model, keras, kernel_of, require_keras2_model, require_layers
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset
from tfopt.techniques.cluster.settings import CENTROID_INITS, ClusterConfig
from tfopt.techniques.distill.algorithm import Teacher, trainer_for
from tfopt.training.train import FitContext

__all__ = ["ClusteringError", "KernelClusters", "ClusterResult", "CLUSTERABLE",
           "clusterable_layers", "check_layers", "apply_clustering", "measure_clusters", "cluster"]

# What tfmot's clustering registry clusters. It leaves DepthwiseConv2D out on
# purpose ("big unrecoverable accuracy loss"): wrapped, its kernel stays as it
# was, so tfopt neither picks nor accepts it.
CLUSTERABLE = (keras.layers.Conv2D, keras.layers.Dense)
# tfmot's initializations, named as in ClusterConfig.centroid_init.
_INIT = {name: getattr(tfmot.clustering.keras.CentroidInitialization, name.upper())
         for name in CENTROID_INITS}


class ClusteringError(TfoptError, ValueError):
  """Clustering cannot run as asked, or did not deliver what it promised."""


@dataclasses.dataclass(frozen=True)
class KernelClusters:
  """The measured distinct values and zeros of one clustered kernel."""
  layer: str
  clusters: int
  shape: tuple
  size: int
  distinct: int
  zeros: int

  @property
  def sparsity(self) -> float:
    return self.zeros / self.size


@dataclasses.dataclass
class ClusterResult:
  """A stripped, clustered model and its per-kernel table."""
  model: keras.Model
  kernels: List[KernelClusters]
  preserve_sparsity: bool


def clusterable_layers(model: keras.Model,
                       names: Optional[Sequence[str]] = None) -> List[str]:
  """The layers to cluster: `names` (checked), or every Conv2D and Dense.

  Raises:
    ClusteringError: a named layer is missing or has no kernel to cluster.
  """
  if names is None:
    return [layer.name for layer in model.layers if isinstance(layer, CLUSTERABLE)]
  require_layers(model, names, lambda layer: isinstance(layer, CLUSTERABLE),
                 ClusteringError,
                 "Conv2D and Dense kernels can be clustered (tfmot does not cluster "
                 "DepthwiseConv2D kernels)")
  return list(names)


def check_layers(model: keras.Model, number_of_clusters: int,
                 names: Optional[Sequence[str]] = None,
                 layer_clusters: Optional[Dict[str, int]] = None) -> Dict[str, int]:
  """{layer: clusters} to cluster: `names` (default: every conv and Dense),
  plus the layers of `layer_clusters`, each at its own count.

  Raises:
    ClusteringError: a bad layer name, or a kernel with fewer weights than
      its clusters.
  """
  layer_clusters = dict(layer_clusters or {})
  chosen = {name: number_of_clusters for name in clusterable_layers(model, names)}
  clusterable_layers(model, list(layer_clusters))  # checks the names
  chosen.update(layer_clusters)
  for name, clusters in chosen.items():
    size = kernel_of(model.get_layer(name)).size
    if size < clusters:
      raise ClusteringError(
          f"Layer {name!r} has {size} weights, fewer than {clusters} clusters; "
          "lower the clusters or leave the layer out (--cluster_layers).")
  return chosen


def apply_clustering(model: keras.Model, number_of_clusters: int,
                     centroid_init: str = "linear",
                     preserve_sparsity: bool = False,
                     layers: Optional[Sequence[str]] = None,
                     layer_clusters: Optional[Dict[str, int]] = None) -> keras.Model:
  """Wraps the chosen layers of a clone of `model` for clustering.

  Every chosen layer gets `number_of_clusters`, except those named in
  `layer_clusters` ({layer: clusters}), which are clustered at their own count.

  Raises:
    ClusteringError: an unknown init, a bad layer name, or a kernel with
      fewer weights than clusters.
  """
  require_keras2_model(model)
  if centroid_init not in _INIT:
    raise ClusteringError(f"Unknown centroid init {centroid_init!r}; choose "
                          f"one of {', '.join(_INIT)}.")
  chosen = check_layers(model, number_of_clusters, layers, layer_clusters)

  def wrap(layer):
    # Wrapping the trained layer itself: tfmot initializes the centroids
    # from the weights the layer holds when it is wrapped.
    if layer.name not in chosen:
      return layer
    return experimental_cluster.cluster_weights(
        layer, number_of_clusters=chosen[layer.name],
        cluster_centroids_init=_INIT[centroid_init],
        preserve_sparsity=preserve_sparsity)

  # A private clone: the wrappers and the returned model share its layers,
  # never the caller's.
  return keras.models.clone_model(clone_model(model), clone_function=wrap)


def measure_clusters(model: keras.Model,
                     clusters: Dict[str, int]) -> List[KernelClusters]:
  """Distinct values and zeros of the kernels of the layers in `clusters`."""
  table = []
  for name, count in clusters.items():
    values = kernel_of(model.get_layer(name))
    table.append(KernelClusters(name, count, tuple(values.shape), int(values.size),
                                int(np.unique(values).size),
                                int(np.sum(values == 0))))
  return table


def cluster(model: keras.Model, dataset: Dataset, config: ClusterConfig,
            teacher: Optional[Teacher] = None,
            preserve_sparsity: Optional[bool] = None,
            verbose: int = 2, train=None,
            fits: Optional[FitContext] = None) -> ClusterResult:
  """Clusters a copy of `model`'s kernels and fine-tunes the centroids.

  Args:
    model: a trained Keras 2 model that outputs logits; not modified.
    dataset: training data for fine-tuning, validation data for monitoring.
    config: clusters, centroid init, layers and fine-tuning settings.
    teacher: if given (a tfopt.techniques.distill.algorithm.Teacher or a Keras model), fine-tune
      by distillation from it.
    preserve_sparsity: keep the zeros of a pruned model (tfmot's
      sparsity-preserving clustering); None: config.preserve_sparsity, where
      None means no (the pipeline resolves it from the run's history).
    train: fine-tune with train(model, epochs, callbacks) instead of on
      `dataset` (see distill.trainer_for).
    fits: a pipeline stage's epoch checkpoints and clock (see train.fit).

  Returns:
    A ClusterResult with the stripped model and its per-kernel table.

  Raises:
    ClusteringError: bad settings, or a kernel ended with more distinct
      values than clusters, or lost zeros it was meant to keep.
  """
  if preserve_sparsity is None:
    preserve_sparsity = bool(config.preserve_sparsity)
  chosen = check_layers(model, config.number_of_clusters, config.layers,
                        config.layer_clusters)
  before = {entry.layer: entry for entry in measure_clusters(model, chosen)}
  wrapped = apply_clustering(model, config.number_of_clusters, config.centroid_init,
                             preserve_sparsity, config.layers, config.layer_clusters)
  if config.epochs:
    train = train or trainer_for(dataset, config.batch_size, config.learning_rate, teacher,
                                 verbose, fits=fits)
    train(wrapped, config.epochs)
  stripped = tfmot.clustering.keras.strip_clustering(wrapped)
  table = measure_clusters(stripped, chosen)
  _check(table, before, preserve_sparsity)
  return ClusterResult(stripped, table, preserve_sparsity)


def _check(table, before, preserve_sparsity):
  for entry in table:
    # The zero of a sparsity-preserving layer is kept apart from the centroids.
    allowed = entry.clusters + (1 if preserve_sparsity else 0)
    if entry.distinct > allowed:
      raise ClusteringError(
          f"Layer {entry.layer!r} holds {entry.distinct} distinct values after "
          f"clustering, more than {allowed}; this is a tfmot bug, not a setting.")
    if preserve_sparsity and entry.zeros < before[entry.layer].zeros:
      raise ClusteringError(
          f"Layer {entry.layer!r} lost zeros while clustering "
          f"({before[entry.layer].zeros} -> {entry.zeros}).")
