"""Configuration as data: one frozen dataclass per stage, nested in PipelineConfig.

Every field is validated in ``__post_init__``; a bad value raises ConfigError
naming the field, the value and what is allowed, before any work starts. The
run-wide sections are here; each compression technique's section is its
folder's settings.py (tfopt/techniques/<name>/settings.py; the shared
`analysis` and `finetune` are in tfopt.config.technique_config), and
PipelineConfig gets a field for each from the registry (registry.SECTIONS), as
it gets the stage names.
"""

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from tfopt.config import registry
from tfopt.core.validate import (ConfigError, require, require_fraction, require_positive_int,
                                 require_positive_number)

__all__ = ["ConfigError", "DATASETS", "DEFAULT_STAGES", "DataConfig", "TrainConfig",
           "DistillConfig", "ConvertConfig", "EvaluateConfig", "PipelineConfig", "QUANT_MODES"]

DATASETS = ("mnist", "fashion_mnist", "cifar10", "folder")
COLOR_MODES = ("grayscale", "rgb")
DEFAULT_STAGES = ("teacher", "distill", "prune")
STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclass(frozen=True)
class DataConfig:
  """Which data set, where it comes from, and how much of it to use.

  dataset: a named data set, or "folder": a folder of images in data_dir
    (one subfolder per class, or Food-11 style <label>_<index>.jpg names,
    optionally in training/ validation/ evaluation/; see tfopt.data.image_folder).
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
  augment: random translation (up to 10 %) of the training images, each
    epoch, and a random horizontal flip except on MNIST (a flip changes a
    digit); None: on for image folders (photos), off for the named data sets.
    Give False for a folder of images a flip changes the meaning of (digits,
    text). Distillation then runs the teacher on each augmented batch.
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
  augment: Optional[bool] = None

  def __post_init__(self):
    require(self.dataset in DATASETS, "dataset", self.dataset,
            "one of " + ", ".join(DATASETS))
    if self.dataset == "folder":
      require(bool(self.data_dir), "data_dir", self.data_dir,
              "the image folder's path when dataset is folder")
    else:
      for name in ("labels_file", "image_size", "color_mode"):
        if getattr(self, name) is not None:
          raise ConfigError(f"{name} is for image folders (dataset folder); "
                            f"{self.dataset} has its own classes and image size.")
    if self.image_size is not None:
      size = tuple(self.image_size)
      require(len(size) == 2 and all(isinstance(value, int) and value >= 1
                                      for value in size),
               "image_size", self.image_size, "two integers >= 1: height, width")
    require(self.color_mode in (None,) + COLOR_MODES, "color_mode",
            self.color_mode, "grayscale or rgb")
    if self.input_range is not None:
      low_high = tuple(self.input_range)
      require(len(low_high) == 2 and all(isinstance(value, (int, float))
                                          and math.isfinite(value) for value in low_high)
               and low_high[0] < low_high[1], "input_range", self.input_range,
               "two finite numbers low < high, e.g. 0,1 or 0,255 or -1,1")
    require_fraction("validation_fraction", self.validation_fraction,
                     low_open=True)
    require_fraction("test_fraction", self.test_fraction, low_open=True)
    for name in ("max_train_examples", "max_test_examples"):
      if getattr(self, name) is not None:
        require_positive_int(name, getattr(self, name))


@dataclass(frozen=True)
class TrainConfig:
  """Training a model from its labels (the teacher, or a scratch control).

  builder: the model builder (tfopt.keras_io.models.BUILDERS: teacher, student,
    student_small, mobilenet_v1, mobilenet_v2, resnet18)."""
  builder: str = "teacher"
  epochs: int = 5
  batch_size: int = 128
  learning_rate: float = 3e-3

  def __post_init__(self):
    require(isinstance(self.builder, str) and self.builder, "builder",
            self.builder, "a model builder name")
    require_positive_int("epochs", self.epochs)
    require_positive_int("batch_size", self.batch_size)
    require_positive_number("learning_rate", self.learning_rate)


@dataclass(frozen=True)
class DistillConfig:
  """Knowledge distillation of a student from the teacher.

  alpha weighs the distillation term: loss = alpha * temperature**2 * KL +
  (1 - alpha) * cross-entropy with the labels.
  builder: the student's builder (tfopt.keras_io.models.BUILDERS).
  temperature: the softmax temperature T > 0 of both models' logits.
  alpha: the distillation term's weight, in [0, 1].
  """
  builder: str = "student"
  epochs: int = 6
  batch_size: int = 128
  learning_rate: float = 3e-3
  temperature: float = 2.0
  alpha: float = 0.5

  def __post_init__(self):
    TrainConfig(self.builder, self.epochs, self.batch_size, self.learning_rate)
    require_positive_number("temperature", self.temperature)
    require_fraction("alpha", self.alpha, high_open=False)


INT8_REPAIR_MODES = ("on", "off")
QUANT_MODES = ("float32", "float16", "dynamic_range", "int8", "int16x8", "int4",
               "dynamic_int4")


@dataclass(frozen=True)
class ConvertConfig:
  """Which .tflite variants to write for each model (see tfopt.litert.convert).

  modes: conversion modes, each a report row per model; the teacher's
    float32 file is always written, as the baseline. int4 and dynamic_int4
    are written by LiteRT's quantizer (see tfopt.litert.int4).
  int4_layers: a regular expression over the weight tensor names (the Keras
    layer names, as `tfopt inspect` lists them): the layers int4 /
    dynamic_int4 give 4-bit weights (mixed precision); the others stay int8
    (int4) or float (dynamic_int4).
  int8_repair: "on" (default): each int8 file is the most faithful of the
    recipes tried on the validation images (per-channel or per-tensor
    weights, the worst ops in float; see tfopt.litert.int8_repair); "off": the
    converter's plain file, still diagnosed.
  int8_repair_size_ratio / int8_repair_latency_ratio: how much larger and
    slower than the plain int8 file a repaired one may be.
  int8_repair_examples: validation images the recipes are judged on.
  representative_examples: training images that calibrate the int8
    activation ranges.
  """
  modes: Tuple[str, ...] = ("int8",)
  representative_examples: int = 500
  int4_layers: str = ".*"
  int8_repair: str = "on"
  int8_repair_size_ratio: float = 1.1
  int8_repair_latency_ratio: float = 1.1
  int8_repair_examples: int = 1000

  def __post_init__(self):
    require(bool(self.modes) and all(mode in QUANT_MODES for mode in self.modes)
            and len(set(self.modes)) == len(self.modes), "quant_modes",
            ",".join(map(str, self.modes)),
            "a list without repeats from " + ", ".join(QUANT_MODES))
    require_positive_int("representative_examples",
                         self.representative_examples)
    require(self.int8_repair in INT8_REPAIR_MODES, "int8_repair", self.int8_repair,
            "on or off")
    for name in ("int8_repair_size_ratio", "int8_repair_latency_ratio"):
      require(isinstance(getattr(self, name), (int, float)) and math.isfinite(
          getattr(self, name)) and getattr(self, name) >= 1, name, getattr(self, name),
              "a number >= 1 (1.1: at most 10 % larger / slower than plain int8)")
    require_positive_int("int8_repair_examples", self.int8_repair_examples)
    require(isinstance(self.int4_layers, str) and self.int4_layers and _compiles(
        self.int4_layers), "int4_layers", self.int4_layers,
            "a regular expression over layer names, e.g. .* or block[23]|logits")


def _compiles(pattern: str) -> bool:
  try:
    re.compile(pattern)
    return True
  except re.error:
    return False


@dataclass(frozen=True)
class EvaluateConfig:
  """How .tflite files are measured in LiteRT.

  latency_breakdown: also time every int8 model segment by segment (see
    tfopt.litert.breakdown), to show where its latency comes from. Each segment
    costs a conversion, so None (the default) does it for models of at most
    breakdown.AUTO_MAX_SEGMENTS compute layers (tfopt's builders) and skips
    it, with a log line, for deep ones (a MobileNetV2 backbone: 52 segments,
    ~10 minutes); True or False forces it.
  quantization_debug: True: also list, per int8 file, each op's own error in
    quantization steps (TF Lite's QuantizationDebugger, see
    tfopt.litert.quant_debug). Off by default (None or False): the convert stage's
    diagnosis (tfopt.litert.int8_fidelity, SNR along the graph) covers every int8
    file and finds what that measure misses.
  num_threads: LiteRT threads for every measurement.
  latency_warmup / latency_runs: untimed invokes, then timed ones whose
    median (batch 1) is the latency.
  batch_size: examples per LiteRT invoke when accuracy is measured.
  """
  num_threads: int = 1
  latency_warmup: int = 20
  latency_runs: int = 200
  batch_size: int = 1000
  latency_breakdown: Optional[bool] = None
  quantization_debug: Optional[bool] = None

  def __post_init__(self):
    require_positive_int("num_threads", self.num_threads)
    require(isinstance(self.latency_warmup, int) and self.latency_warmup >= 0,
            "latency_warmup", self.latency_warmup, "an integer >= 0")
    require_positive_int("latency_runs", self.latency_runs)
    require_positive_int("batch_size", self.batch_size)
    for name in ("latency_breakdown", "quantization_debug"):
      require(getattr(self, name) in (None, True, False), name, getattr(self, name),
              "true, false or unset (auto)")


def _with_technique_sections(cls):
  """Gives `cls` a field per built-in technique section (registry.SECTIONS),
  after `distill`, before it becomes a dataclass: adding a technique is a
  registration, not an edit of PipelineConfig."""
  annotations = {}
  for name, kind in cls.__annotations__.items():
    annotations[name] = kind
    if name == "distill":
      for section, settings in registry.builtin_sections().items():
        annotations[section] = settings
        setattr(cls, section, field(default_factory=settings))
  cls.__annotations__ = annotations
  return cls


@dataclass(frozen=True)
@_with_technique_sections
class PipelineConfig:
  """Everything one run of ``python -m tfopt.pipeline`` needs.

  stages: the stages, in order (names from tfopt.config.registry). "teacher"
    comes first; "distill" turns the teacher into the student; prune, slim,
    strided, lowrank, cluster, qat, binary and sensitivity each compress the latest
    model (e.g. teacher, distill, slim, prune prunes the slimmed student);
    "search" looks for the smallest or fastest file within an accuracy drop
    (see SearchConfig); "scratch" needs distill before it; bitwidth and sweep
    measure the latest model and make none. Each stage checks the chain it is in (see
    Stage.check_chain).
  compare_scratch: also train the student from scratch with the same epochs
    (a control that shows what distillation gained); adds "scratch".
  model: a trained Keras model (.keras, .h5 or a SavedModel directory) that
    the teacher stage takes as the baseline instead of training one; Keras 3
    models are rebuilt in Keras 2 (see tfopt.keras_io.model_io).
  allow_unsafe_model: let the model file run code on load (Lambda layers);
    only for files you trust.
  strategy: where teacher, distill and prune train: "default" (one device),
    "mirrored" (every local GPU) or "multi_worker" (the cluster in
    TF_CONFIG); batch sizes are per replica (see tfopt.training.distribute).
  worker_timeout: with multi_worker, the seconds a collective waits for the
    other workers before the run stops with an error naming them.
  stage_settings: the settings of stages registered from outside tfopt that
    bring their own (Stage.config_class), as (stage name, its dataclass)
    pairs; recipes and flags write them as sections named after the stage.
    Read one with `section(name)`.
  output_dir: where models, files, report and deploy/ go (tfopt refuses a
    folder holding files it did not write).
  seed: the random seed of splits, initialization and shuffling.
  """
  data: DataConfig = field(default_factory=DataConfig)
  teacher: TrainConfig = field(default_factory=TrainConfig)
  distill: DistillConfig = field(default_factory=DistillConfig)
  # One section per built-in technique follows distill: prune, slim, ..., search
  # (registry.SECTIONS; see _with_technique_sections).
  convert: ConvertConfig = field(default_factory=ConvertConfig)
  evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
  output_dir: str = "runs/mnist"
  seed: int = 0
  compare_scratch: bool = False
  stages: Tuple[str, ...] = DEFAULT_STAGES
  model: Optional[str] = None
  allow_unsafe_model: bool = False
  strategy: str = "default"
  worker_timeout: float = 600.0
  stage_settings: Tuple[Tuple[str, Any], ...] = ()

  def __post_init__(self):
    require(self.strategy in STRATEGIES, "strategy", self.strategy,
            "one of " + ", ".join(STRATEGIES))
    require_positive_number("worker_timeout", self.worker_timeout)
    require(self.model is None or (isinstance(self.model, str) and self.model.strip()),
            "model", self.model, "a model file or SavedModel directory path")
    require(isinstance(self.output_dir, str) and self.output_dir.strip(),
            "output_dir", self.output_dir, "a non-empty path")
    registry.check_chain(self)
    require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed,
            "an integer >= 0")
    sections = registry.stage_sections()
    for name, settings in self.stage_settings:
      require(name in sections and isinstance(settings, sections[name]),
              "stage_settings", name, "a registered stage's own settings "
              f"({', '.join(sections) or 'none registered'})")

  def section(self, name: str):
    """The settings section `name`: one of this config's (prune, slim, ...),
    or a registered stage's own (its given settings, else their defaults)."""
    if name in {item.name for item in dataclasses.fields(self)}:
      return getattr(self, name)
    given = dict(self.stage_settings)
    if name in given:
      return given[name]
    sections = registry.stage_sections()
    if name not in sections:
      raise ConfigError(f"There is no settings section {name!r}.")
    return sections[name]()

  def to_dict(self):
    return dataclasses.asdict(self)

  def stage_list(self) -> Tuple[str, ...]:
    """The stages to run: `stages`, with "scratch" after distill if asked."""
    stages = tuple(self.stages)
    if self.compare_scratch and "scratch" not in stages and "distill" in stages:
      at = stages.index("distill") + 1
      stages = stages[:at] + ("scratch",) + stages[at:]
    return stages
