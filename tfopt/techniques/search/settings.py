"""The `search` section: the settings of the budgeted search (tfopt.techniques.search).

Every field is validated in ``__post_init__`` (see tfopt.core.validate); the
lists of allowed values here are the only copies. PipelineConfig holds it as
`search`; recipes and `--search.field=value` fill it.
"""

from dataclasses import dataclass
from typing import Tuple

from tfopt.core.validate import require, require_positive_int, require_positive_number

__all__ = ["SEARCH_OBJECTIVES", "SEARCH_MODES", "require_search_space", "SearchConfig"]


SEARCH_OBJECTIVES = ("size", "latency")
SEARCH_MODES = ("int8", "int4", "dynamic_int4", "dynamic_range", "float16")


def require_search_space(config):
  """Checks a search config's space: slim_rates, sparsities and modes."""
  for name in ("slim_rates", "sparsities"):
    values = tuple(getattr(config, name))
    require(all(isinstance(value, (int, float)) and not isinstance(value, bool)
                and 0 < value < 1 for value in values)
            and len(set(values)) == len(values), name, values,
            "distinct numbers in (0, 1), or an empty list")
  require(bool(config.modes) and set(config.modes) <= set(SEARCH_MODES)
          and len(set(config.modes)) == len(config.modes), "modes", config.modes,
          "distinct modes among " + ", ".join(SEARCH_MODES))


@dataclass(frozen=True)
class SearchConfig:
  """The budgeted search of the compression space (see tfopt.techniques.search.algorithm).

  objective: what the search makes small: gzip bytes ("size") or batch-1
    latency in LiteRT ("latency").
  max_accuracy_drop: the accuracy the result may lose against the baseline
    (the run's teacher or --model), in percentage points of validation
    accuracy measured on each candidate's .tflite in LiteRT.
  time_budget: seconds the search stage may spend; no fine-tune starts that
    would not end within it (the last fine-tune's pace is the estimate).
  slim_rates / sparsities / modes: the space: channels removed (structured,
    for latency and size), then unstructured sparsity spread by the
    sensitivity curves (size), then the conversion mode of the file.
  finetune_epochs: distilled fine-tuning epochs per slim step and per prune.
  """
  objective: str = "size"
  max_accuracy_drop: float = 0.5
  time_budget: float = 600.0
  slim_rates: Tuple[float, ...] = (0.25, 0.5, 0.75)
  sparsities: Tuple[float, ...] = (0.5, 0.7, 0.8, 0.9)
  modes: Tuple[str, ...] = ("int8", "int4")
  finetune_epochs: int = 2
  batch_size: int = 128
  learning_rate: float = 1e-3
  use_teacher: bool = True

  def __post_init__(self):
    require(self.objective in SEARCH_OBJECTIVES, "objective", self.objective,
            "one of " + ", ".join(SEARCH_OBJECTIVES))
    require(isinstance(self.max_accuracy_drop, (int, float))
            and not isinstance(self.max_accuracy_drop, bool)
            and 0 <= self.max_accuracy_drop <= 100, "max_accuracy_drop",
            self.max_accuracy_drop, "percentage points in [0, 100]")
    require_positive_number("time_budget", self.time_budget)
    require_search_space(self)
    require_positive_int("finetune_epochs", self.finetune_epochs)
    require_positive_int("batch_size", self.batch_size)
    require_positive_number("learning_rate", self.learning_rate)
