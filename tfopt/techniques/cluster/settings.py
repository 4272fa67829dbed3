"""The `cluster` section: the settings of weight sharing (tfopt.techniques.cluster).

Every field is validated in ``__post_init__`` (see tfopt.core.validate); the
lists of allowed values here are the only copies. PipelineConfig holds it as
`cluster`; recipes and `--cluster.field=value` fill it.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from tfopt.core.validate import require, require_positive_int, require_positive_number

__all__ = ["CENTROID_INITS", "ClusterConfig"]


CENTROID_INITS = ("kmeans_plus_plus", "linear", "density_based", "random")


@dataclass(frozen=True)
class ClusterConfig:
  """Weight sharing with tfmot: k shared values per kernel, then fine-tuning.

  number_of_clusters: shared values per kernel (16 -> 4-bit indices).
  centroid_init: how tfmot places the initial centroids. linear (evenly
    spaced between min and max, Deep Compression's choice) compresses best:
    on the teacher its int8 file gzips to 0.34x of plain int8, against
    0.58x with kmeans_plus_plus, for a similar accuracy (BUILD_NOTES).
  preserve_sparsity: keep a pruned model's zeros; None means yes exactly
    when the model was pruned earlier in the run.
  epochs / learning_rate: fine-tuning of the centroids (0 epochs: none).
  layers: the layers to cluster (default: every Conv2D, DepthwiseConv2D and
    Dense).
  layer_clusters: {layer: clusters} for layers that get their own count
    (e.g. fewer for a large Dense, more for the first conv); they are
    clustered even when not in `layers`.
  """
  number_of_clusters: int = 16
  centroid_init: str = "linear"
  preserve_sparsity: Optional[bool] = None
  epochs: int = 2
  batch_size: int = 128
  learning_rate: float = 1e-4
  use_teacher: bool = True
  layers: Optional[Tuple[str, ...]] = None
  layer_clusters: Optional[Dict[str, int]] = None

  def __post_init__(self):
    for name, clusters in [("number_of_clusters", self.number_of_clusters)] + [
        (f"layer_clusters[{layer!r}]", value)
        for layer, value in (self.layer_clusters or {}).items()]:
      require(isinstance(clusters, int) and not isinstance(clusters, bool)
              and 2 <= clusters <= 256, name, clusters, "an integer in [2, 256]")
    require(self.centroid_init in CENTROID_INITS, "centroid_init",
            self.centroid_init, "one of " + ", ".join(CENTROID_INITS))
    require(self.preserve_sparsity in (None, True, False), "preserve_sparsity",
            self.preserve_sparsity, "true, false or unset")
    require(isinstance(self.epochs, int) and self.epochs >= 0, "epochs",
            self.epochs, "an integer >= 0")
    require_positive_int("batch_size", self.batch_size)
    require_positive_number("learning_rate", self.learning_rate)
