"""The sections several techniques share: `analysis` (sensitivity, sweep and
bitwidth) and `finetune` (every technique that fine-tunes). Each technique's own
section is its folder's settings.py (tfopt/techniques/<name>/settings.py).

Every field is validated in ``__post_init__`` (see tfopt.core.validate).
"""

from dataclasses import dataclass, fields
from typing import Dict, Optional, Tuple

from tfopt.core.validate import (require, require_fraction, require_positive_int,
                                 require_positive_number)

__all__ = ["GRANULARITIES", "AnalysisConfig", "FINE_TUNED_SECTIONS", "FineTuneConfig"]


GRANULARITIES = ("per_tensor", "per_channel")


@dataclass(frozen=True)
class AnalysisConfig:
  """The analysis stages, which measure the current model and make no new one.

  bits / granularities: the bit-width study (tfopt.techniques.bitwidth.algorithm).
  sweep_qualities: threshold multipliers q of the pruning sweep; every kernel
    loses |w| < q * std(w) (tfopt.techniques.sweep.algorithm.threshold_sweep).
  sensitivity_sparsities: the sparsities each layer is pruned to, alone.
  max_accuracy_drop: the sensitivity stage's budget, in percentage points of
    validation accuracy per layer (0.3 = 0.3 pp).
  sensitivity_target_sparsity: instead of the budget, reach this overall
    sparsity, spread where the sensitivity curves say it costs least.
  """
  bits: Tuple[int, ...] = (8, 4, 2)
  granularities: Tuple[str, ...] = ("per_tensor", "per_channel")
  sweep_qualities: Tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4,
                                        1.6, 1.8, 2.0)
  sensitivity_sparsities: Tuple[float, ...] = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9,
                                               0.95)
  max_accuracy_drop: float = 0.3
  sensitivity_target_sparsity: Optional[float] = None

  def __post_init__(self):
    if self.sensitivity_target_sparsity is not None:
      require_fraction("sensitivity_target_sparsity",
                       self.sensitivity_target_sparsity, low_open=True)
    require(bool(self.bits) and all(isinstance(bits, int) and not isinstance(bits, bool)
                                     and 1 <= bits <= 16 for bits in self.bits),
             "bits", self.bits, "integers in [1, 16]")
    require(bool(self.granularities) and set(self.granularities) <= {
        "per_tensor", "per_channel"}, "granularities", self.granularities,
             "per_tensor and/or per_channel")
    require(bool(self.sweep_qualities) and all(
        isinstance(value, (int, float)) and value >= 0 for value in self.sweep_qualities),
             "sweep_qualities", self.sweep_qualities, "numbers >= 0")
    require(bool(self.sensitivity_sparsities) and all(
        isinstance(value, (int, float)) and 0 < value < 1
        for value in self.sensitivity_sparsities), "sensitivity_sparsities",
             self.sensitivity_sparsities, "numbers in (0, 1)")
    require(isinstance(self.max_accuracy_drop, (int, float))
            and not isinstance(self.max_accuracy_drop, bool)
            and 0 <= self.max_accuracy_drop <= 100, "max_accuracy_drop",
            self.max_accuracy_drop, "percentage points in [0, 100]")


FINE_TUNED_SECTIONS = ("prune", "slim", "strided", "lowrank", "cluster", "qat", "binary",
                       "search")


@dataclass(frozen=True)
class FineTuneConfig:
  """The fine-tuning settings the techniques share (recipes and flags).

  A value given here is copied into every technique section that has that
  setting (FINE_TUNED_SECTIONS), unless the same recipe file, or the same
  command line, sets the section's own; a later layer (flags over a recipe)
  wins as everywhere. None: each section keeps its own value.
  epochs: fine-tuning epochs (a section's `epochs`, or `finetune_epochs`
    where it has both training and fine-tuning epochs: slim, search, ...).
  batch_size: the fine-tuning batch size.
  learning_rate: the fine-tuning peak learning rate.
  use_teacher: fine-tune by distillation from the teacher rather than from
    the labels alone.
  """
  epochs: Optional[int] = None
  batch_size: Optional[int] = None
  learning_rate: Optional[float] = None
  use_teacher: Optional[bool] = None

  def __post_init__(self):
    for name in ("epochs", "batch_size"):
      if getattr(self, name) is not None:
        require_positive_int(name, getattr(self, name))
    if self.learning_rate is not None:
      require_positive_number("learning_rate", self.learning_rate)

  def shared_with(self, section_fields: Tuple[str, ...]) -> Dict[str, object]:
    """{field of a section: value} of the settings given here that it has."""
    given = {}
    for name in (item.name for item in fields(self)):
      value = getattr(self, name)
      target = ("finetune_epochs" if name == "epochs" and "finetune_epochs" in section_fields
                else name)
      if value is not None and target in section_fields:
        given[target] = value
    return given
