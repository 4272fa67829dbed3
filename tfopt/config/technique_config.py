"""The settings of each compression technique: one frozen dataclass each.

Every field is validated in ``__post_init__`` (see tfopt.core.validate). The lists
of allowed values here are the only copies: the technique modules import them.
"""

from dataclasses import dataclass, fields
from typing import Dict, Optional, Tuple

from tfopt.core.validate import (require, require_fraction, require_positive_int,
                                 require_positive_number)

__all__ = ["PruneConfig", "SLIM_CRITERIA", "SLIM_SCOPES", "SlimConfig", "StridedConfig",
           "LowRankConfig",
           "CENTROID_INITS", "ClusterConfig", "BINARY_MODES", "BinaryConfig",
           "GRANULARITIES", "AnalysisConfig", "QAT_SCHEMES", "QatConfig",
           "SEARCH_OBJECTIVES", "SEARCH_MODES", "SearchConfig", "require_search_space",
           "FINE_TUNED_SECTIONS", "FineTuneConfig"]

GRANULARITIES = ("per_tensor", "per_channel")


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


QAT_SCHEMES = ("auto", "qat", "pqat", "cqat", "pcqat")
QAT_BITS = (8, 4)


@dataclass(frozen=True)
class QatConfig:
  """Quantization-aware training with tfmot (see tfopt.techniques.qat.algorithm).

  scheme: auto picks pcqat after prune and cluster, pqat after prune, cqat
    after cluster, qat otherwise; or name one.
  bits: 8: tfmot's int8 QAT, the model converted to int8 with the ranges it
    learned; 4: the Conv2D / Dense kernels that the int4 file makes 4-bit
    trained on its grid (tfopt.techniques.qat.int4), the model converted to int4.
  """
  scheme: str = "auto"
  bits: int = 8
  epochs: int = 2
  batch_size: int = 128
  learning_rate: float = 1e-4
  use_teacher: bool = True

  def __post_init__(self):
    require(self.scheme in QAT_SCHEMES, "scheme", self.scheme,
            "one of " + ", ".join(QAT_SCHEMES))
    require(isinstance(self.bits, int) and not isinstance(self.bits, bool)
            and self.bits in QAT_BITS, "qat_bits", self.bits, "8 (int8 QAT) or 4 (int4 QAT)")
    require(self.bits == 8 or self.scheme in ("auto", "qat", "pqat"), "qat_scheme",
            self.scheme, "auto, qat or pqat with --qat_bits 4 (4-bit QAT keeps zeros, "
            "not clusters)")
    require_positive_int("epochs", self.epochs)
    require_positive_int("batch_size", self.batch_size)
    require_positive_number("learning_rate", self.learning_rate)


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
