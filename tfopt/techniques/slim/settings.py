"""The `slim` section: the settings of network slimming (tfopt.techniques.slim).

Every field is validated in ``__post_init__`` (see tfopt.core.validate); the
lists of allowed values here are the only copies. PipelineConfig holds it as
`slim`; recipes and `--slim.field=value` fill it.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

from tfopt.core.validate import (require, require_fraction, require_positive_int,
                                 require_positive_number)

__all__ = ["SLIM_CRITERIA", "SLIM_SCOPES", "SlimConfig"]


SLIM_CRITERIA = ("bn_gamma", "l1", "l2")
SLIM_SCOPES = ("global", "local")


@dataclass(frozen=True)
class SlimConfig:
  """Network slimming / filter pruning: remove whole conv channels.

  rate: share of the prunable channels removed by the last step, in [0, 1).
  prune_count: steps to get there; step i removes rate * i / prune_count of
    the original channels, then fine-tunes for finetune_epochs.
  sparsity_epochs / l1_strength: training with an L1 penalty on BatchNorm
    gamma before the first step (network slimming); 0 epochs skips it.
  criterion: channel importance, bn_gamma (|gamma| of the BN after the conv),
    l1 or l2 (norm of each filter, for convs without BN).
  scope: local (the same rate in every layer; the default, robust across
    architectures) or global (one threshold across layers, as in the network
    slimming paper; raw |gamma| scales differ between layers, and on the
    MobileNet-v1 student it cut the stem to its floor).
  min_channels: the floor: every layer keeps at least this share of its
    channels, and one.
  layers: the convs to consider (default: every conv that can be slimmed).
  """
  rate: float = 0.5
  prune_count: int = 2
  finetune_epochs: int = 2
  sparsity_epochs: int = 2
  l1_strength: float = 1e-4
  criterion: str = "bn_gamma"
  scope: str = "local"
  min_channels: float = 0.1
  batch_size: int = 128
  learning_rate: float = 1e-3
  use_teacher: bool = True
  layers: Optional[Tuple[str, ...]] = None

  def __post_init__(self):
    require_fraction("rate", self.rate)
    require_positive_int("prune_count", self.prune_count)
    require(isinstance(self.finetune_epochs, int) and self.finetune_epochs >= 0,
            "finetune_epochs", self.finetune_epochs, "an integer >= 0")
    require(isinstance(self.sparsity_epochs, int) and self.sparsity_epochs >= 0,
            "sparsity_epochs", self.sparsity_epochs, "an integer >= 0")
    require(isinstance(self.l1_strength, (int, float))
            and not isinstance(self.l1_strength, bool) and self.l1_strength >= 0,
            "l1_strength", self.l1_strength, "a number >= 0")
    require(self.criterion in SLIM_CRITERIA, "criterion", self.criterion,
            "one of " + ", ".join(SLIM_CRITERIA))
    require(self.scope in SLIM_SCOPES, "scope", self.scope,
            "one of " + ", ".join(SLIM_SCOPES))
    require_fraction("min_channels", self.min_channels, low_open=True,
                     high_open=False)
    require_positive_int("batch_size", self.batch_size)
    require_positive_number("learning_rate", self.learning_rate)
