"""Configuration as data: one frozen dataclass per stage, nested in PipelineConfig.

Every field is validated in ``__post_init__``; a bad value raises ConfigError
naming the field, the value and what is allowed, before any work starts.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from tfopt.errors import TfoptError

__all__ = [
    "ConfigError", "DATASETS", "STAGES", "DEFAULT_STAGES", "DataConfig", "TrainConfig", "DistillConfig",
    "PruneConfig", "SlimConfig", "LowRankConfig", "ClusterConfig", "QatConfig", "BinaryConfig", "AnalysisConfig", "ConvertConfig", "EvaluateConfig", "PipelineConfig",
]

DATASETS = ("mnist", "fashion_mnist", "cifar10", "folder")
COLOR_MODES = ("grayscale", "rgb")
# Stages that make a model; convert and evaluate always follow them.
STAGES = ("teacher", "distill", "scratch", "prune", "slim", "lowrank", "cluster",
          "qat", "binary", "sensitivity", "bitwidth", "sweep")
# Stages that measure the current model and make none.
ANALYSIS_STAGES = ("bitwidth", "sweep")
DEFAULT_STAGES = ("teacher", "distill", "prune")
STRATEGIES = ("default", "mirrored", "multi_worker")


class ConfigError(TfoptError, ValueError):
  """A configuration value is invalid."""


def _require(ok, name, value, allowed):
  if not ok:
    raise ConfigError(f"{name}={value!r} is invalid: it must be {allowed}.")


def _require_positive_int(name, value):
  _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
           name, value, "an integer >= 1")


def _require_fraction(name, value, low_open=False, high_open=True):
  is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
  low_ok = is_number and (value > 0 if low_open else value >= 0)
  high_ok = is_number and (value < 1 if high_open else value <= 1)
  interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
  _require(low_ok and high_ok, name, value, f"a number in {interval}")


def _require_positive_number(name, value):
  _require(isinstance(value, (int, float)) and not isinstance(value, bool)
           and value > 0, name, value, "a number > 0")


@dataclass(frozen=True)
class DataConfig:
  """Which data set, where it comes from, and how much of it to use.

  dataset: a named data set, or "folder": a folder of images in data_dir
    (one subfolder per class, or Food-11 style <label>_<index>.jpg names,
    optionally in training/ validation/ evaluation/; see tfopt.image_folder).
  data_dir: a directory with the data set's files (IDX .gz or .npz, or the
    image folder); None means the TFOPT_DATA_DIR environment variable, then
    a keras download.
  labels_file: class names, one per line, in output order (folders only).
  image_size / color_mode: what folder images become, (height, width) and
    grayscale | rgb; None: from the model, else the images' own.
  input_range: the model input that pixel values 0 and 255 map to, e.g.
    (0, 1), (0, 255) for a model that starts with Rescaling, or (-1, 1);
    None: (0, 1), or what a given model's first layer says (see model_io).
  validation_fraction: share of the training set held out for validation
    (when there is no validation folder); the test set is used only for the
    final measurements.
  test_fraction: share of a folder without a test split held out as the
    test set.
  max_train_examples / max_test_examples: take a slice (for a quick look).
  """
  dataset: str = "mnist"
  data_dir: Optional[str] = None
  labels_file: Optional[str] = None
  image_size: Optional[Tuple[int, int]] = None
  color_mode: Optional[str] = None
  input_range: Optional[Tuple[float, float]] = None
  validation_fraction: float = 0.1
  test_fraction: float = 0.2
  max_train_examples: Optional[int] = None
  max_test_examples: Optional[int] = None

  def __post_init__(self):
    _require(self.dataset in DATASETS, "dataset", self.dataset,
             "one of " + ", ".join(DATASETS))
    if self.dataset == "folder":
      _require(bool(self.data_dir), "data_dir", self.data_dir,
               "the image folder's path when dataset is folder")
    else:
      for name in ("labels_file", "image_size", "color_mode"):
        if getattr(self, name) is not None:
          raise ConfigError(f"{name} is for image folders (dataset folder); "
                            f"{self.dataset} has its own classes and image size.")
    if self.image_size is not None:
      size = tuple(self.image_size)
      _require(len(size) == 2 and all(isinstance(value, int) and value >= 1
                                      for value in size),
               "image_size", self.image_size, "two integers >= 1: height, width")
    _require(self.color_mode in (None,) + COLOR_MODES, "color_mode",
             self.color_mode, "grayscale or rgb")
    if self.input_range is not None:
      low_high = tuple(self.input_range)
      _require(len(low_high) == 2 and all(isinstance(value, (int, float))
                                          and math.isfinite(value) for value in low_high)
               and low_high[0] < low_high[1], "input_range", self.input_range,
               "two finite numbers low < high, e.g. 0,1 or 0,255 or -1,1")
    _require_fraction("validation_fraction", self.validation_fraction,
                      low_open=True)
    _require_fraction("test_fraction", self.test_fraction, low_open=True)
    for name in ("max_train_examples", "max_test_examples"):
      if getattr(self, name) is not None:
        _require_positive_int(name, getattr(self, name))


@dataclass(frozen=True)
class TrainConfig:
  """Training a model from its labels (the teacher, or a scratch control)."""
  builder: str = "teacher"
  epochs: int = 5
  batch_size: int = 128
  learning_rate: float = 3e-3

  def __post_init__(self):
    _require(isinstance(self.builder, str) and self.builder, "builder",
             self.builder, "a model builder name")
    _require_positive_int("epochs", self.epochs)
    _require_positive_int("batch_size", self.batch_size)
    _require_positive_number("learning_rate", self.learning_rate)


@dataclass(frozen=True)
class DistillConfig:
  """Knowledge distillation of a student from the teacher.

  alpha weighs the distillation term: loss = alpha * temperature**2 * KL +
  (1 - alpha) * cross-entropy with the labels.
  """
  builder: str = "student"
  epochs: int = 6
  batch_size: int = 128
  learning_rate: float = 3e-3
  temperature: float = 2.0
  alpha: float = 0.5

  def __post_init__(self):
    TrainConfig(self.builder, self.epochs, self.batch_size, self.learning_rate)
    _require_positive_number("temperature", self.temperature)
    _require_fraction("alpha", self.alpha, high_open=False)


@dataclass(frozen=True)
class PruneConfig:
  """Magnitude pruning with tfmot, polynomial schedule, then fine-tuning.

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
    _require_fraction("target_sparsity", self.target_sparsity)
    _require_fraction("initial_sparsity", self.initial_sparsity)
    _require(self.initial_sparsity <= self.target_sparsity, "initial_sparsity",
             self.initial_sparsity,
             f"<= target_sparsity ({self.target_sparsity})")
    _require_positive_int("epochs", self.epochs)
    _require_positive_int("batch_size", self.batch_size)
    _require_positive_number("learning_rate", self.learning_rate)
    _require_positive_int("pruning_updates", self.pruning_updates)
    _require_fraction("ramp_fraction", self.ramp_fraction, low_open=True,
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
    MobileNet-v1 student it cut the stem to its floor). min_channels is the
    floor: every layer keeps at least this share of its channels, and one.
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
    _require_fraction("rate", self.rate)
    _require_positive_int("prune_count", self.prune_count)
    _require(isinstance(self.finetune_epochs, int) and self.finetune_epochs >= 0,
             "finetune_epochs", self.finetune_epochs, "an integer >= 0")
    _require(isinstance(self.sparsity_epochs, int) and self.sparsity_epochs >= 0,
             "sparsity_epochs", self.sparsity_epochs, "an integer >= 0")
    _require(isinstance(self.l1_strength, (int, float))
             and not isinstance(self.l1_strength, bool) and self.l1_strength >= 0,
             "l1_strength", self.l1_strength, "a number >= 0")
    _require(self.criterion in SLIM_CRITERIA, "criterion", self.criterion,
             "one of " + ", ".join(SLIM_CRITERIA))
    _require(self.scope in SLIM_SCOPES, "scope", self.scope,
             "one of " + ", ".join(SLIM_SCOPES))
    _require_fraction("min_channels", self.min_channels, low_open=True,
                      high_open=False)
    _require_positive_int("batch_size", self.batch_size)
    _require_positive_number("learning_rate", self.learning_rate)


@dataclass(frozen=True)
class LowRankConfig:
  """Truncated-SVD factorization of Dense (and spatial SVD of Conv2D) layers.

  Exactly one way to choose ranks: `energy` (share of sum(s**2) kept),
  `param_ratio` (r (n + m) <= param_ratio * n * m), or `ranks` per layer.
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
    _require(len(given) == 1, "energy/param_ratio/ranks", given,
             "exactly one of them set")
    if self.energy is not None:
      _require_fraction("energy", self.energy, low_open=True, high_open=False)
    if self.param_ratio is not None:
      _require_fraction("param_ratio", self.param_ratio, low_open=True)
    if self.ranks is not None:
      _require(isinstance(self.ranks, dict) and self.ranks and all(
          isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1
          for rank in self.ranks.values()), "ranks", self.ranks,
               "a {layer name: integer rank >= 1} dict")
    _require(isinstance(self.finetune_epochs, int) and self.finetune_epochs >= 0,
             "finetune_epochs", self.finetune_epochs, "an integer >= 0")
    _require_positive_int("batch_size", self.batch_size)
    _require_positive_number("learning_rate", self.learning_rate)


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
      _require(isinstance(clusters, int) and not isinstance(clusters, bool)
               and 2 <= clusters <= 256, name, clusters, "an integer in [2, 256]")
    _require(self.centroid_init in CENTROID_INITS, "centroid_init",
             self.centroid_init, "one of " + ", ".join(CENTROID_INITS))
    _require(self.preserve_sparsity in (None, True, False), "preserve_sparsity",
             self.preserve_sparsity, "true, false or unset")
    _require(isinstance(self.epochs, int) and self.epochs >= 0, "epochs",
             self.epochs, "an integer >= 0")
    _require_positive_int("batch_size", self.batch_size)
    _require_positive_number("learning_rate", self.learning_rate)


BINARY_MODES = ("bwn", "binaryconnect")


@dataclass(frozen=True)
class BinaryConfig:
  """Binary weights (see tfopt.binary), trained from the current model.

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
    _require(self.mode in BINARY_MODES, "mode", self.mode,
             "one of " + ", ".join(BINARY_MODES))
    _require_positive_int("epochs", self.epochs)
    _require_positive_int("batch_size", self.batch_size)
    _require_positive_number("learning_rate", self.learning_rate)


@dataclass(frozen=True)
class AnalysisConfig:
  """The analysis stages, which measure the current model and make no new one.

  bits / granularities: the bit-width study (tfopt.bitwidth).
  sweep_qualities: threshold multipliers q of the pruning sweep; every kernel
    loses |w| < q * std(w) (tfopt.sweep.threshold_sweep).
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
      _require_fraction("sensitivity_target_sparsity",
                        self.sensitivity_target_sparsity, low_open=True)
    _require(bool(self.bits) and all(isinstance(bits, int) and not isinstance(bits, bool)
                                     and 1 <= bits <= 16 for bits in self.bits),
             "bits", self.bits, "integers in [1, 16]")
    _require(bool(self.granularities) and set(self.granularities) <= {
        "per_tensor", "per_channel"}, "granularities", self.granularities,
             "per_tensor and/or per_channel")
    _require(bool(self.sweep_qualities) and all(
        isinstance(value, (int, float)) and value >= 0 for value in self.sweep_qualities),
             "sweep_qualities", self.sweep_qualities, "numbers >= 0")
    _require(bool(self.sensitivity_sparsities) and all(
        isinstance(value, (int, float)) and 0 < value < 1
        for value in self.sensitivity_sparsities), "sensitivity_sparsities",
             self.sensitivity_sparsities, "numbers in (0, 1)")
    _require(isinstance(self.max_accuracy_drop, (int, float))
             and not isinstance(self.max_accuracy_drop, bool)
             and 0 <= self.max_accuracy_drop <= 100, "max_accuracy_drop",
             self.max_accuracy_drop, "percentage points in [0, 100]")


QAT_SCHEMES = ("auto", "qat", "pqat", "cqat", "pcqat")


@dataclass(frozen=True)
class QatConfig:
  """Quantization-aware training with tfmot (see tfopt.qat).

  scheme: auto picks pcqat after prune and cluster, pqat after prune, cqat
    after cluster, qat otherwise; or name one.
  """
  scheme: str = "auto"
  epochs: int = 2
  batch_size: int = 128
  learning_rate: float = 1e-4
  use_teacher: bool = True

  def __post_init__(self):
    _require(self.scheme in QAT_SCHEMES, "scheme", self.scheme,
             "one of " + ", ".join(QAT_SCHEMES))
    _require_positive_int("epochs", self.epochs)
    _require_positive_int("batch_size", self.batch_size)
    _require_positive_number("learning_rate", self.learning_rate)


QUANT_MODES = ("float32", "float16", "dynamic_range", "int8", "int16x8")


@dataclass(frozen=True)
class ConvertConfig:
  """Which .tflite variants to write for each model (see tfopt.convert).

  modes: conversion modes, each a report row per model; the teacher's
    float32 file is always written, as the baseline.
  """
  modes: Tuple[str, ...] = ("int8",)
  representative_examples: int = 500

  def __post_init__(self):
    _require(bool(self.modes) and all(mode in QUANT_MODES for mode in self.modes)
             and len(set(self.modes)) == len(self.modes), "quant_modes",
             ",".join(map(str, self.modes)),
             "a list without repeats from " + ", ".join(QUANT_MODES))
    _require_positive_int("representative_examples",
                          self.representative_examples)


@dataclass(frozen=True)
class EvaluateConfig:
  """How .tflite files are measured in LiteRT.

  latency_breakdown: also time every int8 model segment by segment (see
    tfopt.breakdown), to show where its latency comes from.
  """
  num_threads: int = 1
  latency_warmup: int = 20
  latency_runs: int = 200
  batch_size: int = 1000
  latency_breakdown: bool = True

  def __post_init__(self):
    _require_positive_int("num_threads", self.num_threads)
    _require(isinstance(self.latency_warmup, int) and self.latency_warmup >= 0,
             "latency_warmup", self.latency_warmup, "an integer >= 0")
    _require_positive_int("latency_runs", self.latency_runs)
    _require_positive_int("batch_size", self.batch_size)


def _check_stages(stages: Tuple[str, ...]):
  _require(bool(stages) and all(stage in STAGES for stage in stages), "stages",
           ",".join(map(str, stages)), "a list of " + ", ".join(STAGES))
  _require(len(set(stages)) == len(stages), "stages", ",".join(stages),
           "a list without repeats")
  _require(stages[0] == "teacher", "stages", ",".join(stages),
           "a list that starts with teacher")
  if "scratch" in stages:
    _require("distill" in stages[:stages.index("scratch")], "stages",
             ",".join(stages), "a list with distill before scratch")


@dataclass(frozen=True)
class PipelineConfig:
  """Everything one run of ``python -m tfopt.pipeline`` needs.

  stages: the stages, in order (see STAGES). "teacher" comes first;
    "distill" turns the teacher into the student; prune, slim, lowrank,
    cluster, qat, binary and sensitivity each compress the latest model (e.g.
    teacher, distill, slim, prune prunes the slimmed student); "scratch"
    needs distill before it; bitwidth and sweep measure the latest model
    and make none.
  compare_scratch: also train the student from scratch with the same epochs
    (a control that shows what distillation gained); adds "scratch".
  model: a trained Keras model (.keras, .h5 or a SavedModel directory) that
    the teacher stage takes as the baseline instead of training one; Keras 3
    models are rebuilt in Keras 2 (see tfopt.model_io).
  allow_unsafe_model: let the model file run code on load (Lambda layers);
    only for files you trust.
  strategy: where teacher, distill and prune train: "default" (one device),
    "mirrored" (every local GPU) or "multi_worker" (the cluster in
    TF_CONFIG); batch sizes are per replica (see tfopt.distribute).
  """
  data: DataConfig = field(default_factory=DataConfig)
  teacher: TrainConfig = field(default_factory=TrainConfig)
  distill: DistillConfig = field(default_factory=DistillConfig)
  prune: PruneConfig = field(default_factory=PruneConfig)
  slim: SlimConfig = field(default_factory=SlimConfig)
  lowrank: LowRankConfig = field(default_factory=LowRankConfig)
  cluster: ClusterConfig = field(default_factory=ClusterConfig)
  qat: QatConfig = field(default_factory=QatConfig)
  binary: BinaryConfig = field(default_factory=BinaryConfig)
  analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
  convert: ConvertConfig = field(default_factory=ConvertConfig)
  evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
  output_dir: str = "runs/mnist"
  seed: int = 0
  compare_scratch: bool = False
  stages: Tuple[str, ...] = DEFAULT_STAGES
  model: Optional[str] = None
  allow_unsafe_model: bool = False
  strategy: str = "default"

  def __post_init__(self):
    _require(self.strategy in STRATEGIES, "strategy", self.strategy,
             "one of " + ", ".join(STRATEGIES))
    _require(self.model is None or (isinstance(self.model, str) and self.model.strip()),
             "model", self.model, "a model file or SavedModel directory path")
    _require(isinstance(self.output_dir, str) and self.output_dir.strip(),
             "output_dir", self.output_dir, "a non-empty path")
    _check_stages(tuple(self.stages))
    _require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed,
             "an integer >= 0")
    self._check_qat_scheme()

  def _check_qat_scheme(self):
    """CQAT / PCQAT keep clusters (and zeros) that earlier stages must make."""
    stages = tuple(self.stages)
    if "qat" not in stages:
      return
    before = stages[:stages.index("qat")]
    clustered = "cluster" in before
    pruned = any(stage in ("prune", "sensitivity") for stage in before)
    if self.qat.scheme in ("cqat", "pcqat") and not clustered:
      raise ConfigError(f"qat_scheme={self.qat.scheme!r} keeps the clusters of a "
                        "clustered model: put cluster before qat in --stages, or "
                        "use --qat_scheme qat (or auto).")
    if self.qat.scheme in ("pqat", "pcqat") and not pruned:
      raise ConfigError(f"qat_scheme={self.qat.scheme!r} keeps the zeros of a "
                        "pruned model: put prune before qat in --stages, or use "
                        "--qat_scheme qat (or auto).")

  def to_dict(self):
    return dataclasses.asdict(self)

  def stage_list(self) -> Tuple[str, ...]:
    """The stages to run: `stages`, with "scratch" after distill if asked."""
    stages = tuple(self.stages)
    if self.compare_scratch and "scratch" not in stages and "distill" in stages:
      at = stages.index("distill") + 1
      stages = stages[:at] + ("scratch",) + stages[at:]
    return stages

  @classmethod
  def quick(cls, **overrides):
    """A small, fast configuration: a slice of the data and few epochs."""
    quick = dict(
        data=DataConfig(max_train_examples=5000, max_test_examples=1000),
        teacher=TrainConfig(epochs=2, batch_size=64),
        distill=DistillConfig(epochs=2, batch_size=64),
        prune=PruneConfig(epochs=1, batch_size=64),
        slim=SlimConfig(finetune_epochs=1, sparsity_epochs=1, batch_size=64),
        lowrank=LowRankConfig(finetune_epochs=1, batch_size=64),
        cluster=ClusterConfig(epochs=1, batch_size=64),
        qat=QatConfig(epochs=1, batch_size=64),
        binary=BinaryConfig(epochs=1, batch_size=64),
        convert=ConvertConfig(representative_examples=100),
        evaluate=EvaluateConfig(latency_warmup=5, latency_runs=20),
    )
    quick.update(overrides)
    return cls(**quick)
