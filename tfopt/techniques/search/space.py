"""The search's space and its measurements (used by tfopt.techniques.search.algorithm).

Spec: one Keras model of the search (slim rate, sparsity, fine-tuned or not);
Candidate: one of its .tflite files, measured in LiteRT on the validation
split; Measure: converts a model in each mode and measures every file (a
file that cannot be written or run is noted, not measured); the sensitivity
scan that spreads each sparsity over the layers, sized to the budget.

ClassifierSpace is how the walk trains and measures a classifier on tfopt's
own data: accuracy is the quality, fine-tunes distill from the teacher.
tfopt.techniques.search.on_task has the same methods for a user's task.
"""

import contextlib
import dataclasses
import os
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import tensorflow as tf

from tfopt.config import EvaluateConfig

from tfopt.techniques.prune.settings import PruneConfig

from tfopt.techniques.qat.settings import QatConfig

from tfopt.techniques.search.settings import SearchConfig

from tfopt.core import artifacts
from tfopt.core._keras import keras
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset, take_images
from tfopt.keras_io.macs import parameter_counts, total_macs
from tfopt.litert import convert, evaluate
from tfopt.techniques.distill.algorithm import fine_tune
from tfopt.techniques.prune.algorithm import prune
from tfopt.techniques.qat.int4 import qat_int4
from tfopt.techniques.sensitivity.algorithm import allocate_sparsity, layer_sensitivity
from tfopt.techniques.slim.algorithm import slim
from tfopt.techniques.slim.settings import SlimConfig
from tfopt.techniques.sweep.algorithm import apply_masks, magnitude_mask, prunable_kernels
from tfopt.training.train import accuracy

__all__ = ["Spec", "Candidate", "objective_of", "Measure", "ClassifierSpace", "masked",
           "scan_for", "with_sparsity", "quiet_tf"]

# The sparsities each model's layers are scanned at (finer than the search's
# own, so the allocation can reach every target).
SCAN_SPARSITIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
SCAN_SHARE = 0.25  # of the time budget, the most one model's scan may take
SCAN_MIN_IMAGES = 500


@dataclasses.dataclass(frozen=True)
class Spec:
  """One Keras model of the search: strided or not, slimmed, then pruned,
  fine-tuned or not."""
  slim_rate: float = 0.0
  sparsity: float = 0.0
  finetuned: bool = False
  longer: bool = False  # step 3: fine-tuned LONGER times longer
  int4_qat: bool = False  # last: trained on the int4 grid (tfopt.techniques.qat.int4)
  strided: bool = False  # latency: pools folded into strided convs (techniques/strided)

  @property
  def name(self) -> str:
    parts = ["strided"] * self.strided + (
        [f"slim {100 * self.slim_rate:.4g}%"] if self.slim_rate else []) + (
            [f"sparsity {self.sparsity:.0%}"] if self.sparsity else [])
    if not parts:
      return "as given"
    return " + ".join(parts) + ("" if self.finetuned else " (no fine-tune)") + (
        ", fine-tuned longer" if self.longer else "") + (", int4 QAT" if self.int4_qat else "")

  @property
  def stem(self) -> str:
    return "_".join(["strided"] * self.strided
                    + [f"slim{100 * self.slim_rate:.4g}".replace(".", "p")]
                    * bool(self.slim_rate)
                    + [f"sparse{round(100 * self.sparsity)}"] * bool(self.sparsity)
                    + ["raw"] * (not self.finetuned and bool(self.sparsity))
                    + ["longer"] * self.longer + ["qat4"] * self.int4_qat) or "start"

  def filename(self, mode: str) -> str:
    """The name of its file in `mode`."""
    return f"{self.stem}_{mode}.tflite"


@dataclasses.dataclass
class Candidate(evaluate.FileRow):
  """One .tflite file of the search (FileRow's fields, measured on the
  validation split, then these). Make one with `Candidate.of`."""
  spec: Spec
  mode: str
  seconds: float  # fine-tune (shared by the spec's modes) plus this conversion
  content: bytes = dataclasses.field(default=b"", repr=False)
  feasible: bool = False

  @classmethod
  def of(cls, spec: Spec, mode: str, **fields) -> "Candidate":
    """The candidate of `spec`'s `mode` file, named and filed after them."""
    return cls(name=f"{spec.name}, {mode}", path=spec.filename(mode),
               spec=spec, mode=mode, **fields)

  def to_json(self) -> dict:
    """Its fields but the file's bytes and scratch name (report.json names a
    kept file under `file`)."""
    values = dataclasses.asdict(self)
    for key in ("content", "path"):
      values.pop(key)
    return values


def objective_of(candidate, objective: str) -> float:
  """The number the search makes small: gzip bytes or µs."""
  return candidate.gzip_bytes if objective == "size" else candidate.latency_us


@dataclasses.dataclass
class Measure:
  """Converts a Keras model in each mode and measures every file; a file that
  cannot be written or run is noted in `failed`, not measured."""
  dataset: Dataset
  modes: Sequence[str]
  evaluate_config: EvaluateConfig
  calibration_examples: int
  directory: str
  log: Callable[[str], None]
  failed: List[str] = dataclasses.field(default_factory=list)

  def __call__(self, model: keras.Model, spec: Spec, seconds: float,
               modes: Sequence[str] = ()) -> List[Candidate]:
    """`model`'s file in each of `modes` (none given: the search's), measured."""
    params, nonzero_params = parameter_counts(model)
    shared = dict(params=params, nonzero_params=nonzero_params,
                  macs=total_macs(model))
    found = []
    for mode in modes or self.modes:
      try:
        candidate = self._file(model, spec, mode, seconds, shared)
      except TfoptError as error:  # e.g. degenerate int8 scales of a collapsed model
        reason = str(error).split(". ")[0]
        self.failed.append(f"{spec.name}, {mode}: {reason}")
        self.log(f"  {spec.name}, {mode}: not measured: {reason}")
        continue
      self.log(f"  {candidate.name}: {candidate.accuracy:.2%} validation, "
               f"{candidate.gzip_bytes:,} B gzip ({candidate.tflite_bytes:,} B), "
               f"{candidate.latency_us:,.1f} µs")
      found.append(candidate)
    return found

  def _file(self, model, spec, mode, seconds, shared) -> Candidate:
    started, config = time.monotonic(), self.evaluate_config
    content = convert.to_tflite(model, mode, self.dataset.x_train, self.calibration_examples)
    path = artifacts.write_bytes_atomic(os.path.join(self.directory, spec.filename(mode)),
                                        content)
    measured = evaluate.measure_file(path, self.dataset.x_val[0], self.dataset.x_val,
                                     self.dataset.y_val, config.num_threads,
                                     config.batch_size, config.latency_warmup,
                                     config.latency_runs)
    return Candidate.of(
        spec, mode, accuracy=measured.accuracy, tflite_bytes=measured.tflite_bytes,
        gzip_bytes=measured.gzip_bytes, latency_us=measured.latency_us,
        seconds=seconds + time.monotonic() - started, content=content, **shared)


def masked(model: keras.Model, scan: "Scan",
            sparsities: Sequence[float], batch_size: int) -> Dict[float, Dict[str, float]]:
  """{overall sparsity: per-layer sparsities} from one sensitivity scan
  (none for a model without a Conv2D or Dense kernel to prune)."""
  if not prunable_kernels(model):
    return {}
  points = layer_sensitivity(model, scan.images, scan.labels, scan.sparsities, batch_size)
  sizes = prunable_kernels(model)
  return {target: allocate_sparsity(points, sizes, target) for target in sparsities}


@contextlib.contextmanager
def quiet_tf():
  """TensorFlow's retracing warnings off: every candidate is a new model, so
  predict and fit are traced again for each, as expected."""
  logger = tf.get_logger()
  level = logger.level
  logger.setLevel("ERROR")
  try:
    yield
  finally:
    logger.setLevel(level)


@dataclasses.dataclass
class Scan:
  """What one sensitivity scan runs on, and why it is not everything."""
  images: object
  labels: np.ndarray
  sparsities: Sequence[float]
  note: str = ""


def scan_for(model: keras.Model, dataset: Dataset, sparsities: Sequence[float],
              seconds: float, batch_size: int) -> Scan:
  """The whole validation split at SCAN_SPARSITIES when the scan fits in
  `seconds`; else the search's own sparsities (and 0.95) on as many of the
  first validation images as fit, at least SCAN_MIN_IMAGES (a large model on
  photos)."""
  count = len(dataset.y_val)
  probe = min(count, 256)
  images = take_images(dataset.x_val, np.arange(probe))
  accuracy(model, images, dataset.y_val[:probe], batch_size)  # traced once
  clock = time.monotonic()
  accuracy(model, images, dataset.y_val[:probe], batch_size)
  per_image = (time.monotonic() - clock) / probe
  layers = len(prunable_kernels(model))
  if (1 + layers * len(SCAN_SPARSITIES)) * per_image * count <= seconds:
    return Scan(dataset.x_val, dataset.y_val, SCAN_SPARSITIES)
  coarse = tuple(sorted(set(sparsities) | {max(SCAN_SPARSITIES)}))
  keep = max(min(count, SCAN_MIN_IMAGES),
             min(count, int(seconds / ((1 + layers * len(coarse)) * per_image))))
  return Scan(take_images(dataset.x_val, np.arange(keep)), dataset.y_val[:keep], coarse,
               f"sparsities {', '.join(f'{value:.0%}' for value in coarse)} on the first "
               f"{keep:,} of {count:,} validation images (the full scan would take more "
               f"than {seconds:,.0f} s)")




def with_sparsity(model: keras.Model, layers: Dict[str, float]) -> keras.Model:
  return apply_masks(model, {name: magnitude_mask(model.get_layer(name).kernel.numpy(),
                                                  sparsity)
                             for name, sparsity in layers.items() if sparsity})


@dataclasses.dataclass
class ClassifierSpace:
  """How the search trains and measures a classifier (tfopt.techniques.search.algorithm): files
  by their validation accuracy, fine-tunes on the dataset, distilled from
  `teacher` when given. `near`: how far below the floor, in accuracy, a
  candidate counts as a near miss (PROMISING_PP)."""
  dataset: Dataset
  config: SearchConfig
  measure: Measure
  teacher: object = None
  verbose: int = 2
  near: float = 0.005
  fits: object = None  # a pipeline stage's train.FitContext

  @property
  def failed(self) -> List[str]:
    return self.measure.failed

  def masks(self, model: keras.Model, seconds: float, log) -> Dict[float, Dict[str, float]]:
    """{sparsity: per-layer sparsities} of `model` from its sensitivity scan,
    which may take `seconds`."""
    batch_size = self.measure.evaluate_config.batch_size
    scan = scan_for(model, self.dataset, self.config.sparsities, seconds, batch_size)
    if scan.note:
      log(f"search: the sensitivity scan of {model.name}: {scan.note}")
    return masked(model, scan, self.config.sparsities, batch_size)

  def fine_tune(self, model: keras.Model, epochs: int):
    fine_tune(model, self.dataset, epochs, self.config.batch_size, self.config.learning_rate,
              teacher=self.teacher, verbose=self.verbose, fits=self.fits)

  def slim(self, model: keras.Model, rate: float, epochs: int) -> keras.Model:
    return slim(model, self.dataset, SlimConfig(
        rate=rate, prune_count=1, finetune_epochs=epochs, sparsity_epochs=0,
        batch_size=self.config.batch_size, learning_rate=self.config.learning_rate),
                teacher=self.teacher, verbose=self.verbose, fits=self.fits).model

  def prune(self, model: keras.Model, sparsity: float, epochs: int,
            layer_targets: Dict[str, float]) -> keras.Model:
    return prune(model, self.dataset, PruneConfig(
        target_sparsity=sparsity, epochs=epochs, batch_size=self.config.batch_size,
        learning_rate=self.config.learning_rate), teacher=self.teacher,
                 verbose=self.verbose, layer_targets=layer_targets, fits=self.fits).model

  def int4_qat(self, model: keras.Model, epochs: int, keep_zeros: bool) -> keras.Model:
    return qat_int4(model, self.dataset, QatConfig(
        bits=4, epochs=epochs, batch_size=self.config.batch_size),
                    keep_zeros=keep_zeros, teacher=self.teacher, verbose=self.verbose,
                    fits=self.fits).model
