"""The `prune` section: the settings of magnitude pruning (tfopt.techniques.prune).

Every field is validated in ``__post_init__`` (see tfopt.core.validate); the
lists of allowed values here are the only copies. PipelineConfig holds it as
`prune`; recipes and `--prune.field=value` fill it.
"""

from dataclasses import dataclass

from tfopt.core.validate import (require, require_fraction, require_positive_int,
                                 require_positive_number)

__all__ = ["PruneConfig"]


@dataclass(frozen=True)
class PruneConfig:
  """Magnitude pruning with tfmot, polynomial schedule, then fine-tuning.

  target_sparsity: the share of each pruned kernel's weights set to zero, in
    [0, 1).
  initial_sparsity: the sparsity the schedule starts from.
  ramp_fraction: the share of the fine-tuning steps over which the sparsity
    ramps up.
  pruning_updates: how many times the masks are recomputed while sparsity
    ramps from initial_sparsity to target_sparsity (over ramp_fraction of the
    fine-tuning steps); the remaining steps fine-tune with fixed masks.
  use_teacher: fine-tune by distillation from the teacher (when the pipeline
    has one) rather than from the labels alone.
  """
  target_sparsity: float = 0.7
  initial_sparsity: float = 0.0
  epochs: int = 5
  batch_size: int = 128
  learning_rate: float = 1e-3
  pruning_updates: int = 10
  ramp_fraction: float = 0.5
  use_teacher: bool = True

  def __post_init__(self):
    require_fraction("target_sparsity", self.target_sparsity)
    require_fraction("initial_sparsity", self.initial_sparsity)
    require(self.initial_sparsity <= self.target_sparsity, "initial_sparsity",
            self.initial_sparsity,
            f"<= target_sparsity ({self.target_sparsity})")
    require_positive_int("epochs", self.epochs)
    require_positive_int("batch_size", self.batch_size)
    require_positive_number("learning_rate", self.learning_rate)
    require_positive_int("pruning_updates", self.pruning_updates)
    require_fraction("ramp_fraction", self.ramp_fraction, low_open=True,
                     high_open=False)
