"""The `lowrank` section: the settings of low-rank factorization (tfopt.techniques.lowrank).

Every field is validated in ``__post_init__`` (see tfopt.core.validate); the
lists of allowed values here are the only copies. PipelineConfig holds it as
`lowrank`; recipes and `--lowrank.field=value` fill it.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from tfopt.core.validate import (require, require_fraction, require_positive_int,
                                 require_positive_number)

__all__ = ["LowRankConfig"]


@dataclass(frozen=True)
class LowRankConfig:
  """Truncated-SVD factorization of Dense (and spatial SVD of Conv2D) layers.

  Exactly one way to choose ranks:
  energy: each rank keeps this share of sum(s**2), in (0, 1].
  param_ratio: each rank keeps r (n + m) <= param_ratio * n * m parameters.
  ranks: {layer name: rank}.
  layers: which layers to factorize; "largest_dense" (default) picks the Dense
    layer with the most parameters, None means every layer where it saves.
    With `ranks`, the layers are the keys of `ranks` and this is ignored.
  """
  energy: Optional[float] = None
  param_ratio: Optional[float] = 0.25
  ranks: Optional[Dict[str, int]] = None
  layers: Optional[Tuple[str, ...]] = ("largest_dense",)
  finetune_epochs: int = 2
  batch_size: int = 128
  learning_rate: float = 1e-3
  use_teacher: bool = True

  def __post_init__(self):
    given = [name for name in ("energy", "param_ratio", "ranks")
             if getattr(self, name) is not None]
    require(len(given) == 1, "energy/param_ratio/ranks", given,
            "exactly one of them set")
    if self.energy is not None:
      require_fraction("energy", self.energy, low_open=True, high_open=False)
    if self.param_ratio is not None:
      require_fraction("param_ratio", self.param_ratio, low_open=True)
    if self.ranks is not None:
      require(isinstance(self.ranks, dict) and self.ranks and all(
          isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1
          for rank in self.ranks.values()), "ranks", self.ranks,
               "a {layer name: integer rank >= 1} dict")
    require(isinstance(self.finetune_epochs, int) and self.finetune_epochs >= 0,
            "finetune_epochs", self.finetune_epochs, "an integer >= 0")
    require_positive_int("batch_size", self.batch_size)
    require_positive_number("learning_rate", self.learning_rate)
