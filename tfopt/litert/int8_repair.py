"""An int8 file repaired without training: measured choices, per layer.

The TFLite converter's full-integer int8 file is one fixed recipe: int8
weights with one scale per output channel, int8 activations with min/max
ranges. On models users bring that recipe can lose several points (a
per-channel scale spent on a BN-folded channel, an activation whose range a
few outliers take). tfopt calibrates once (the converter's own calibrator)
and then quantizes the calibrated model as often as it likes (the
converter's MLIR quantizer, ~0.1 s a file), so it can *try* recipes and keep
the one whose file is measured closest to the float model:

  1. the plain file (today's recipe), measured on the validation images
     (never the test set): top-1 agreement with the float file and the SNR
     of its outputs;
  2. whole-file alternatives: per-tensor weights, per-tensor weights for
     the fully-connected layers only, each with min/max and with MSE-clipped
     activation ranges (tfopt.litert.int8_ranges); the best of those, and per-tensor
     weights, on cross-layer equalized weights where conv -> (ReLU) -> conv
     pairs exist (tfopt.litert.int8_equalization); then the best so far with its
     biases corrected for the mean shift int8 puts on each layer's outputs
     (tfopt.litert.int8_bias_correction, on unlabelled calibration images);
  3. a diagnosis of the best of those (tfopt.litert.int8_fidelity: where along the
     graph its tensors part from the float ones) names the ops whose own
     loss is largest; each is changed *alone* (an experiment that proves or
     refutes it): first, for a conv / dense op with per-channel weights, one
     weight scale for that op only (spliced into the file,
     tfopt.litert.int8_file_edits), then the op in float; the changes that helped
     are combined, one by one, while the file improves and stays within the
     size and latency budget (1.1x plain int8 by default);
  4. a file replaces the best so far only with significantly more agreeing
     images (McNemar's test on the images where the two differ, p < 0.05),
     or not fewer and an output SNR 1 dB higher; within the budget; on a tie
     the plain file stays.

Every file stays LiteRT builtins with int8 input and output; what was tried,
what it measured and what was chosen is returned as a record (the report's
int8 section and the deploy bundle carry it). `mode="off"` writes the plain
file, measured and diagnosed only.
"""

import dataclasses
import os
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfopt.config import INT8_REPAIR_MODES as REPAIR_MODES
from tfopt.core.errors import TfoptError
from tfopt.litert import (convert, evaluate, int8_bias_correction, int8_equalization, int8_fidelity,
                          int8_file_edits, int8_ranges)

__all__ = ["RepairError", "Choice", "Candidate", "Repair", "REPAIR_MODES", "calibrate",
           "quantize", "repair"]

# How many of the worst ops (largest own SNR drop) are tried in float.
DEFAULT_EXPERIMENTS = 6
# Images the diagnosis runs with every tensor kept (the slow part).
DIAGNOSIS_IMAGES = 32
# Calibration images whose activations set the clipped ranges (int8_ranges).
RANGE_IMAGES = 128
# Calibration images bias correction measures mean shifts on.
BIAS_IMAGES = 64
# An op whose own loss is below this is no suspect (measurement noise).
MIN_DROP_DB = 0.5
# Latency at batch 1 jitters by a few µs on a busy host: a candidate within
# the ratio plus this many µs of the plain file is within the budget.
LATENCY_SLACK_US = 2.0
# With equal agreement, a change must lower the output noise by this much
# (1 dB: a fifth less noise power) to be worth its extra bytes.
SNR_MARGIN_DB = 1.0
# chi-squared with one degree of freedom at p = 0.05
MCNEMAR_CHI2 = 3.841


class RepairError(TfoptError, ValueError):
  """The data or the model cannot be calibrated or quantized as asked."""


@dataclasses.dataclass(frozen=True)
class Choice:
  """One int8 recipe: how weights are scaled, which ops stay float, and
  which file edits follow the conversion."""
  per_tensor: bool = False  # every conv / dense kernel one scale, not one per channel
  dense_per_tensor: bool = False  # fully-connected kernels only
  # (op output tensor, its Keras layer) of each op left in float32
  float_ops: Tuple[Tuple[str, str], ...] = ()
  clip_ranges: bool = False  # activation ranges at their MSE-optimal clip (int8_ranges)
  # (op output tensor, its Keras layer) of each op whose weights get one scale
  per_tensor_ops: Tuple[Tuple[str, str], ...] = ()
  bias_correction: bool = False  # int32 biases corrected (tfopt.litert.int8_bias_correction)
  equalize: bool = False  # cross-layer equalized before calibration (int8_equalization)

  def describe(self) -> str:
    parts = ["per-tensor weights" if self.per_tensor else
             "per-channel conv, per-tensor dense weights" if self.dense_per_tensor else
             "per-channel weights"]
    if self.per_tensor_ops:
      layers = ", ".join(layer for _, layer in self.per_tensor_ops)
      parts.append(f"per-tensor weights only for: {layers}")
    if self.equalize:
      parts.append("cross-layer equalized")
    parts.append("MSE-clipped activation ranges" if self.clip_ranges
                 else "min/max activation ranges")
    if self.bias_correction:
      parts.append("bias-corrected")
    if self.float_ops:
      parts.append(f"float: {', '.join(layer for _, layer in self.float_ops)}")
    return "; ".join(parts)

  def with_float(self, op: Tuple[str, str]) -> "Choice":
    return dataclasses.replace(self, float_ops=tuple(sorted(set(self.float_ops + (op,)))))

  def with_per_tensor(self, op: Tuple[str, str]) -> "Choice":
    return dataclasses.replace(self, per_tensor_ops=tuple(sorted(set(self.per_tensor_ops
                                                                     + (op,)))))

  def merged(self, other: "Choice") -> "Choice":
    """This recipe with `other`'s per-op changes added."""
    return dataclasses.replace(
        self, float_ops=tuple(sorted(set(self.float_ops + other.float_ops))),
        per_tensor_ops=tuple(sorted(set(self.per_tensor_ops + other.per_tensor_ops))))

  def to_json(self) -> dict:
    return dict(per_tensor=self.per_tensor, dense_per_tensor=self.dense_per_tensor,
                clip_ranges=self.clip_ranges, bias_correction=self.bias_correction,
                equalize=self.equalize,
                float_ops=[tensor for tensor, _ in self.float_ops],
                float_layers=[layer for _, layer in self.float_ops],
                per_tensor_layers=[layer for _, layer in self.per_tensor_ops],
                description=self.describe())


@dataclasses.dataclass
class Candidate:
  """A file made with one Choice, measured on the validation images."""
  choice: Choice
  purpose: str
  agreement: float
  output_snr_db: float
  tflite_bytes: int
  latency_us: float
  # per validation image: does the file's top-1 class agree with the float model's
  agrees: np.ndarray = dataclasses.field(repr=False, compare=False)
  within_budget: bool = True

  def beats(self, other: "Candidate") -> bool:
    """Significantly more examples agree (McNemar's test on the images where
    the two files differ, p < 0.05), or not significantly fewer with an output
    SNR at least SNR_MARGIN_DB higher. One or two images more out of a
    thousand is chance, not a repair: chasing it picks noise (measured on a
    nested MobileNetV2: +0.6 pp on validation, +0.1 pp on test)."""
    gained, lost = _changed_agreements(self, other)
    if _significant(gained, lost):
      return gained > lost
    return gained >= lost and self.output_snr_db >= other.output_snr_db + SNR_MARGIN_DB

  def to_json(self) -> dict:
    return dict(choice=self.choice.to_json(), purpose=self.purpose,
                agreement=self.agreement, output_snr_db=self.output_snr_db,
                tflite_bytes=self.tflite_bytes, latency_us=self.latency_us,
                within_budget=self.within_budget)


@dataclasses.dataclass
class Repair:
  """What repair tried and chose; `content` is the chosen file."""
  content: bytes
  chosen: Candidate
  plain: Candidate
  candidates: List[Candidate]
  diagnosis: List[int8_fidelity.OpFidelity]
  validation_images: int
  seconds: float
  size_ratio: float
  latency_ratio: float
  failed: Dict[str, str] = dataclasses.field(default_factory=dict)  # recipe -> why not made
  # "layer (OP)" of the ops the converter left float in the chosen file (no
  # integer kernel in LiteRT), besides those the recipe asked for
  kept_float: List[str] = dataclasses.field(default_factory=list)
  start: Optional[Candidate] = None  # the file the diagnosis and the experiments started from

  @property
  def changed(self) -> bool:
    return self.chosen.choice != self.plain.choice

  def to_record(self) -> dict:
    return dict(
        chosen=self.chosen.to_json(), plain=self.plain.to_json(),
        candidates=[candidate.to_json() for candidate in self.candidates],
        diagnosis=[dataclasses.asdict(row) for row in self.diagnosis],
        validation_images=self.validation_images, seconds=round(self.seconds, 2),
        budget=dict(size_ratio=self.size_ratio, latency_ratio=self.latency_ratio),
        changed=self.changed, failed=self.failed, kept_float=self.kept_float,
        start=self.start.to_json() if self.start else None)


def _changed_agreements(one: Candidate, other: Candidate) -> Tuple[int, int]:
  """(images only `one` agrees on, images only `other` agrees on)."""
  return int(np.sum(one.agrees & ~other.agrees)), int(np.sum(~one.agrees & other.agrees))


def _significant(gained: int, lost: int) -> bool:
  """McNemar's test (continuity-corrected) at p < 0.05 on the discordant images."""
  return gained + lost > 0 and (abs(gained - lost) - 1) ** 2 > MCNEMAR_CHI2 * (gained + lost)


def calibrate(model, images: np.ndarray, count: int) -> bytes:
  """The model converted to float with the converter's activation statistics."""
  _check_finite("calibration images", images[:count])
  converter = convert.converter_for(model, "int8", images, count)
  converter._experimental_calibrate_only = True  # pylint: disable=protected-access
  with convert.without_converter_noise():
    try:
      return converter.convert()
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
      raise RepairError(f"The converter could not calibrate this model for int8: "
                        f"{str(error).strip().splitlines()[-1] if str(error).strip() else error}"
                        ) from error


def quantize(calibrated: bytes, choice: Choice) -> bytes:
  """The full-integer int8 file (int8 input and output) for `choice`."""
  from tensorflow.lite.python import convert as tflite_convert  # pylint: disable=g-import-not-at-top
  with convert.without_converter_noise():
    return tflite_convert.mlir_quantize(
        calibrated, disable_per_channel=choice.per_tensor, fully_quantize=True,
        input_data_type=tf.int8, output_data_type=tf.int8,
        denylisted_nodes=[tensor for tensor, _ in choice.float_ops] or None,
        disable_per_channel_for_dense_layers=choice.dense_per_tensor)


def _check_finite(what: str, images: np.ndarray):
  values = np.asarray(images, np.float32)
  if not np.all(np.isfinite(values)):
    bad = int(np.sum(~np.all(np.isfinite(values.reshape(len(values), -1)), axis=1)))
    raise RepairError(f"{bad} of the {len(values)} {what} hold NaN or inf: int8 ranges "
                      "cannot be calibrated on them. Clean the data (or the input scaling) "
                      "and run again.")


class _Trials:
  """Makes and measures candidate files, each Choice once."""

  def __init__(self, calibrated: bytes, calibration, range_images: np.ndarray,
               images: np.ndarray, latency_image: np.ndarray, size_ratio: float,
               latency_ratio: float, log):
    self.calibrated, self.images, self.latency_image = calibrated, images, latency_image
    self.range_images, self._statistics = range_images, {(False, False): calibrated}
    self.calibration = calibration
    self.size_ratio, self.latency_ratio, self.log = size_ratio, latency_ratio, log
    self.reference = int8_fidelity.FileRunner(calibrated).predict(images)
    if not all(np.all(np.isfinite(output)) for output in self.reference):
      raise RepairError("The float model's outputs are NaN or inf on the validation images: "
                        "int8 cannot be made faithful to them. Check the model and its "
                        "input scaling (--input_range).")
    self.files: Dict[Choice, bytes] = {}
    self.measured: Dict[Choice, Candidate] = {}
    self.failed: Dict[Choice, str] = {}  # recipes that could not be made, and why
    self.plain: Optional[Candidate] = None

  def statistics(self, choice: Choice) -> bytes:
    """The calibrated model whose ranges `choice` quantizes with."""
    key = (choice.equalize, choice.clip_ranges)
    if key not in self._statistics:
      if choice.clip_ranges:
        self._statistics[key] = int8_ranges.clip_ranges(
            self.statistics(dataclasses.replace(choice, clip_ranges=False)), self.range_images)
      else:  # equalized (the unequalized one is there from the start)
        self._statistics[key], _ = int8_equalization.equalize(self.calibrated,
                                                              self.calibration)
    return self._statistics[key]

  def file(self, choice: Choice) -> bytes:
    if choice not in self.files:
      content = quantize(self.statistics(choice), choice)
      if choice.per_tensor_ops:
        donor = self.file(dataclasses.replace(choice, per_tensor=True, per_tensor_ops=(),
                                              bias_correction=False))
        content = int8_file_edits.splice_weights(
            content, donor, [tensor for tensor, _ in choice.per_tensor_ops])
      if choice.bias_correction:
        content, _ = int8_bias_correction.correct(self.statistics(choice), content,
                                                  self.range_images[:BIAS_IMAGES])
      self.files[choice] = content
    return self.files[choice]

  def measure(self, choice: Choice, purpose: str) -> Optional[Candidate]:
    """The candidate file for `choice`, measured; None (logged, recorded in
    `failed`) where that recipe cannot be made for this model: a user's graph
    the edits or the calibrator do not handle loses one candidate, not the run."""
    if choice in self.measured:
      return self.measured[choice]
    if choice in self.failed:
      return None
    try:
      content = self.file(choice)
      outputs = int8_fidelity.FileRunner(content).predict(self.images)
    except (KeyError, IndexError, ValueError, RuntimeError) as error:
      if self.plain is None:
        raise
      self.failed[choice] = f"{type(error).__name__}: {str(error).strip()[:300]}"
      self.log(f"int8 repair: {choice.describe()}: could not be made ({self.failed[choice]})")
      return None
    agrees = np.argmax(self.reference[0], -1) == np.argmax(outputs[0], -1)
    candidate = Candidate(
        choice=choice, purpose=purpose, agrees=agrees, agreement=float(np.mean(agrees)),
        output_snr_db=round(int8_fidelity.output_snr_db(self.reference, outputs), 3),
        tflite_bytes=len(content), latency_us=round(_latency_us(content, self.latency_image), 1))
    if self.plain is not None:
      candidate.within_budget = self._within_budget(candidate, content)
    self.measured[choice] = candidate
    self.log(f"int8 repair: {choice.describe()}: agrees {candidate.agreement:.2%}, output "
             f"SNR {candidate.output_snr_db:.1f} dB, {candidate.tflite_bytes:,} B, "
             f"{candidate.latency_us:,.0f} µs" + ("" if candidate.within_budget
                                                  else " (over the budget)"))
    return candidate

  def _within_budget(self, candidate: Candidate, content: bytes) -> bool:
    """Size and latency within the ratios of the plain file's. A shared host
    can slow one timing by half (measured: the same EfficientNetB0 file at
    424 and 783 µs minutes apart), so a file over the latency budget is
    timed again, and the plain file with it; each keeps its fastest."""
    if candidate.tflite_bytes > self.size_ratio * self.plain.tflite_bytes:
      return False
    for retry in (False, True):
      if candidate.latency_us <= (self.latency_ratio * self.plain.latency_us
                                  + LATENCY_SLACK_US):
        return True
      if not retry:
        candidate.latency_us = round(min(candidate.latency_us,
                                         _latency_us(content, self.latency_image)), 1)
        self.plain.latency_us = round(min(self.plain.latency_us, _latency_us(
            self.file(self.plain.choice), self.latency_image)), 1)
    return False

  def best(self) -> Candidate:
    """The candidate within budget that beats every other (in the order
    measured: simpler recipes first); the plain file unless one beats it."""
    best = self.plain
    for candidate in self.measured.values():
      if candidate.within_budget and candidate.beats(best):
        best = candidate
    return best


def _latency_us(content: bytes, image: np.ndarray, rounds: int = 3) -> float:
  """The fastest of `rounds` medians: what the file costs, with less of what
  other work on the host adds."""
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "candidate.tflite")
    with open(path, "wb") as stream:
      stream.write(content)
    return min(evaluate.latency_us(path, image, 1, warmup=10, runs=60)
               for _ in range(rounds))


def _whole_file_recipes(trials: "_Trials"):
  """The recipes that change the whole file: weight scales, clipped ranges,
  equalization, then bias correction of the best so far."""
  trials.measure(Choice(per_tensor=True), "whole file: one weight scale per tensor")
  if _has_dense(trials.file(Choice())):
    trials.measure(Choice(dense_per_tensor=True),
                   "fully-connected layers: one weight scale per tensor")
  for weights in list(trials.measured):
    trials.measure(dataclasses.replace(weights, clip_ranges=True),
                   "activation ranges clipped where that lowers their int8 error")
  _equalization(trials)
  trials.measure(dataclasses.replace(trials.best().choice, bias_correction=True),
                 "biases corrected for the mean shift int8 puts on each layer's outputs")


def repair(model, calibration_images: np.ndarray, validation_images: np.ndarray,
           calibration_count: int = 500, mode: str = "on", size_ratio: float = 1.1,
           latency_ratio: float = 1.1, experiments: int = DEFAULT_EXPERIMENTS,
           log=lambda message: None) -> Repair:
  """The most faithful int8 file within the budget (see the module docstring).

  Args:
    model: a float Keras 2 model (no quantization wrappers).
    calibration_images: images to calibrate activation ranges on (training split).
    validation_images: images the candidates are judged on (validation split).
    calibration_count: how many calibration images to use.
    mode: "on" or "off" (the plain file, measured once).
    size_ratio / latency_ratio: how much larger / slower than the plain
      int8 file a repaired file may be.
    experiments: how many of the worst ops to change, one at a time.
    log: called with one line per measured candidate.

  Returns:
    A Repair (the chosen file and the record of what was tried).

  Raises:
    RepairError: NaN/inf in the data or the model's outputs, or a model the
      converter cannot calibrate.
  """
  if mode not in REPAIR_MODES:
    raise RepairError(f"int8_repair={mode!r}; choose one of {', '.join(REPAIR_MODES)}.")
  started = time.perf_counter()
  _check_finite("validation images", validation_images)
  calibrated = calibrate(model, calibration_images, calibration_count)
  range_images = convert.calibration_images(calibration_images,
                                            min(calibration_count, RANGE_IMAGES))
  trials = _Trials(calibrated, convert.representative_dataset(calibration_images,
                                                              calibration_count),
                   range_images, np.asarray(validation_images, np.float32),
                   np.asarray(validation_images[0], np.float32), size_ratio, latency_ratio, log)
  trials.plain = plain = trials.measure(Choice(), "the plain int8 file (converter defaults)")
  if mode == "on":
    _whole_file_recipes(trials)
  start = trials.best()
  # the float file with the start's weights (equalized ones are scaled per channel)
  diagnosis = int8_fidelity.op_fidelity(trials.statistics(start.choice),
                                        trials.file(start.choice),
                                        validation_images[:DIAGNOSIS_IMAGES])
  if mode == "on":
    _layer_experiments(trials, start, diagnosis, experiments)
  chosen = trials.best()
  return Repair(content=trials.file(chosen.choice), chosen=chosen, plain=plain,
                candidates=list(trials.measured.values()),
                diagnosis=int8_fidelity.worst_first(diagnosis),
                validation_images=len(validation_images),
                seconds=time.perf_counter() - started, size_ratio=size_ratio,
                latency_ratio=latency_ratio,
                failed={choice.describe(): why for choice, why in trials.failed.items()},
                kept_float=_kept_float(trials.file(chosen.choice), chosen.choice), start=start)


def _kept_float(content: bytes, choice: Choice) -> List[str]:
  asked = {tensor for tensor, _ in choice.float_ops}
  return [f"{layer} ({op})" for op, layer, tensor in int8_fidelity.float_ops(content)
          if tensor not in asked]


def _equalization(trials: _Trials):
  """The best recipe so far, and per-tensor weights, on cross-layer equalized
  weights: where conv -> (ReLU) -> conv pairs exist."""
  if not int8_equalization.pairs(int8_file_edits.read(trials.calibrated)):
    return
  best = trials.best().choice
  for weights in (best, dataclasses.replace(best, per_tensor=True, dense_per_tensor=False)):
    trials.measure(dataclasses.replace(weights, equalize=True),
                   "weights equalized across conv -> (ReLU) -> conv pairs, then calibrated")


def _has_dense(content: bytes) -> bool:
  runner = int8_fidelity.FileRunner(content)
  return any(op["op_name"] == "FULLY_CONNECTED"
             for op in runner.interpreter._get_ops_details())  # pylint: disable=protected-access


def _layer_experiments(trials: _Trials, start: Candidate,
                       diagnosis: List[int8_fidelity.OpFidelity], count: int):
  """Each of the `count` worst ops changed alone (per-tensor weights where it
  has per-channel ones, then float), then the helpful changes combined."""
  suspects = [row for row in int8_fidelity.worst_first(diagnosis)
              if row.dtype != "float32" and row.drop_db > MIN_DROP_DB][:count]
  helpful = []
  for row in suspects:
    op, loss = (row.tensor, row.layer), f"{row.layer} ({row.op}, loses {row.drop_db:.1f} dB)"
    changes = [(start.choice.with_float(op), f"experiment: {loss} alone in float")]
    if row.op in int8_file_edits.WEIGHTED_OPS and not start.choice.per_tensor:
      changes.insert(0, (start.choice.with_per_tensor(op),
                         f"experiment: {loss} alone with per-tensor weights"))
    for choice, purpose in changes:
      candidate = trials.measure(choice, purpose)
      if candidate and candidate.within_budget and candidate.beats(start):
        helpful.append(candidate)
        break  # the cheaper change (per-tensor weights) is enough
  helpful.sort(key=lambda c: (c.agreement, c.output_snr_db), reverse=True)
  combined = helpful[0] if helpful else start
  for candidate in helpful[1:]:
    both = trials.measure(combined.choice.merged(candidate.choice),
                          "the helpful experiments combined")
    if both and both.within_budget and both.beats(combined):
      combined = both
