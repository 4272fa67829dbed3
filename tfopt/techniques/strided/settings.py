"""The `strided` section: the settings of strided downsampling (tfopt.techniques.strided).

Every field is validated in ``__post_init__`` (see tfopt.core.validate); the
lists of allowed values here are the only copies. PipelineConfig holds it as
`strided`; recipes and `--strided.field=value` fill it.
"""

from dataclasses import dataclass

from tfopt.core.validate import require_positive_int, require_positive_number

__all__ = ["StridedConfig"]


@dataclass(frozen=True)
class StridedConfig:
  """Strided downsampling (tfopt.techniques.strided.algorithm): each stride-1 conv before a 2 x 2
  pool made stride 2 and the pool removed, where the shapes after it stay;
  then `finetune_epochs` of (distilled) fine-tuning."""
  finetune_epochs: int = 6
  batch_size: int = 128
  learning_rate: float = 1e-3
  use_teacher: bool = True

  def __post_init__(self):
    require_positive_int("finetune_epochs", self.finetune_epochs)
    require_positive_int("batch_size", self.batch_size)
    require_positive_number("learning_rate", self.learning_rate)
