"""The `binary` section: the settings of binary weights (tfopt.techniques.binary).

Every field is validated in ``__post_init__`` (see tfopt.core.validate); the
lists of allowed values here are the only copies. PipelineConfig holds it as
`binary`; recipes and `--binary.field=value` fill it.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

from tfopt.core.validate import require, require_positive_int, require_positive_number

__all__ = ["BINARY_MODES", "BinaryConfig"]


BINARY_MODES = ("bwn", "binaryconnect")


@dataclass(frozen=True)
class BinaryConfig:
  """Binary weights (see tfopt.techniques.binary.algorithm), trained from the current model.

  mode: bwn (alpha * sign(w), alpha = mean |w| per output channel) or
    binaryconnect (sign(w)).
  layers: the Conv2D / Dense layers to binarize (default: all of them).
  epochs / learning_rate: training with the straight-through estimator.
  """
  mode: str = "bwn"
  epochs: int = 3
  batch_size: int = 128
  learning_rate: float = 1e-3
  use_teacher: bool = True
  layers: Optional[Tuple[str, ...]] = None

  def __post_init__(self):
    require(self.mode in BINARY_MODES, "mode", self.mode,
            "one of " + ", ".join(BINARY_MODES))
    require_positive_int("epochs", self.epochs)
    require_positive_int("batch_size", self.batch_size)
    require_positive_number("learning_rate", self.learning_rate)
