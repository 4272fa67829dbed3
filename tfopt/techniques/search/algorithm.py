"""Search under a budget: the smallest (or fastest) file within an accuracy drop.

The space is the one tfopt already has, in three steps applied in order:
remove channels (tfopt.techniques.slim.algorithm, one step to each of `slim_rates`), prune what
is left (tfopt.techniques.prune.algorithm, per-layer sparsities spread by the sensitivity curves,
tfopt.techniques.sensitivity.algorithm.allocate_sparsity), then convert (`modes`: int8, int4 ...).
Every candidate is a .tflite measured in LiteRT: accuracy on the validation
split (the test set stays for the report), gzip and raw bytes, batch-1
latency. A candidate is feasible when its accuracy is at least the
baseline's minus `max_accuracy_drop`.

How it walks the space, cheap first:

  1. The starting model and its masks at each sparsity without any training
     (the sensitivity scan's allocation applied as is), in every mode:
     conversions only, up to the first sparsity that no mode keeps feasible.
  2. With the latency objective first: the model with its 2 x 2 pools folded
     into stride-2 convolutions (tfopt.techniques.strided.algorithm), fine-tuned LONGER times
     longer; when it is feasible, the slim chains below start from it.
     Chains that fine-tune (distilled from the teacher): for each slim rate,
     0 first, the slimmed model, then each sparsity in increasing order on
     top of it. A chain stops at its first model that no mode keeps
     feasible, and a higher slim rate does not go past the sparsity where a
     lower one failed (more compression, less accuracy); it tries that
     sparsity itself when the lower rate missed by less than PROMISING_PP
     (on a teacher whose Dense layer holds most weights, slim 25 % +
     sparsity 90 % was more accurate than sparsity 90 % alone). With the latency
     objective the sparsities are not fine-tuned: LiteRT runs sparse
     kernels densely, so they cannot be faster than their slimmed model.
  3. With the latency objective, slim rates halfway between the highest
     feasible rate and the lowest failed one (BISECTIONS times). Then
     fine-tuned models that missed the floor by less than PROMISING_PP and
     would beat the best feasible candidate are fine-tuned again, LONGER
     times longer, most compressed first; then the chosen model too.
  4. When the choice is an int4 file: its model trained on the int4 grid
     (tfopt.techniques.qat.int4: QAT before int4, zeros kept) and measured as int4.

The choice: among feasible candidates whose objective is within TIE of the
smallest, the most accurate.

No fine-tune starts that the time budget cannot finish with its measurement,
at the pace of the fine-tuned candidates so far. Each fine-tune's epochs are
seeded by its position in the stage (tfopt.training.epoch_checkpoints), so a
candidate's figures depend on the walk before it: the same command gives the
same figures, another budget or floor may give a candidate slightly
different ones.

The result is every candidate, the Pareto front of objective vs accuracy and
the best feasible one (the starting model when none is).
"""

import dataclasses
import tempfile
import time
from typing import Callable, Dict, List, Optional

from tfopt.config import EvaluateConfig

from tfopt.core._keras import keras
from tfopt.core.errors import TfoptError
from tfopt.core.pareto import pareto_front
from tfopt.data.datasets import Dataset
from tfopt.techniques.distill.algorithm import Teacher
from tfopt.techniques.search.settings import SearchConfig
from tfopt.techniques.search.space import (Candidate, ClassifierSpace, Measure, SCAN_SHARE, Spec,
                                           objective_of, quiet_tf, with_sparsity)
from tfopt.techniques.strided.algorithm import strided

__all__ = ["Spec", "Candidate", "SearchResult", "SearchError", "search", "objective_of"]


@dataclasses.dataclass
class SearchResult:
  """Every candidate, the front (indices into them), the chosen one and its model."""
  candidates: List[Candidate]
  front: List[int]
  chosen: int
  model: keras.Model
  floor: float
  skipped: List[str]
  seconds: float


class SearchError(TfoptError, ValueError):
  """A search that cannot run on this model."""


def search(model: keras.Model, dataset: Dataset, config: SearchConfig,
           baseline_accuracy: float, evaluate_config: EvaluateConfig,
           calibration_examples: int = 500, teacher: Optional[Teacher] = None,
           log: Callable[[str], None] = print, verbose: int = 2,
           fits=None) -> SearchResult:
  """Walks the space of `config` from `model` (see the module docstring).

  Args:
    model: the trained Keras 2 model to compress; not modified.
    dataset: training data to fine-tune on, validation data to measure on.
    config: objective, accuracy drop, time budget and the space.
    baseline_accuracy: the validation accuracy the drop is counted from.
    evaluate_config: LiteRT threads, batch and latency runs.
    calibration_examples: images that calibrate int8 / int4 activations.
    teacher: fine-tunes distill from it when config.use_teacher.
    log: one line per step and per candidate.
    fits: a pipeline stage's epoch checkpoints and clock (train.FitContext).
  """
  floor = baseline_accuracy - config.max_accuracy_drop / 100
  log(f"search: {config.objective} within {config.max_accuracy_drop} pp of the "
      f"baseline's {baseline_accuracy:.2%} (validation, so >= {floor:.2%}); "
      f"budget {config.time_budget:,.0f} s")
  with tempfile.TemporaryDirectory(prefix="tfopt-search-") as directory:
    return walk_space(model, ClassifierSpace(dataset, config, Measure(
        dataset, config.modes, evaluate_config, calibration_examples, directory, log),
                                             teacher if config.use_teacher else None,
                                             verbose, PROMISING_PP / 100, fits),
                      config, floor, log)


def walk_space(model: keras.Model, space, config: SearchConfig, floor: float,
               log: Callable[[str], None]) -> SearchResult:
  """The walk (steps 1 to 4 of the module docstring) from `model` in `space`
  (search_space.ClassifierSpace, or a task's: tfopt.techniques.search.on_task), keeping the
  candidates whose quality is at least `floor`."""
  with quiet_tf():
    walk = _Walk(model, config, floor, log, space)
    log("search: 1. no training: the model as given, and pruned by its sensitivity "
        "curves without fine-tuning")
    walk.untrained()
    if not any(candidate.spec == Spec() for candidate in walk.candidates):
      raise SearchError(f"The model {model.name!r} could not be converted and measured "
                        f"in any of the modes {', '.join(config.modes)}: "
                        + "; ".join(walk.space.failed))
    log("search: 2. fine-tuned chains: " + (
        "the pools folded into strided convolutions, then " if
        config.objective == "latency" else "") + "slim rate, then sparsity on top")
    if config.objective == "latency":
      walk.stride(LONGER * config.finetune_epochs)
    walk.chains()
    log("search: 3. while the budget lasts: " + (
        "slim rates between the last feasible and the first failed one, then " if
        config.objective == "latency" else "") + "the most promising models fine-tuned "
        "longer, then the chosen one")
    if config.objective == "latency":
      walk.between()
    walk.longer()
    walk.polish()
    walk.int4_qat()
  candidates = walk.candidates
  front = pareto_front([(objective_of(candidate, config.objective), candidate.accuracy)
                        for candidate in candidates])
  chosen = _best(candidates, config.objective)
  return SearchResult(candidates, front, chosen, walk.models[candidates[chosen].spec],
                      floor, walk.skipped + walk.space.failed,
                      time.monotonic() - walk.started)


# How far below the floor a fine-tuned model may be for step 3 to try it longer.
PROMISING_PP = 0.5
LONGER = 3  # step 3's fine-tunes: this many times finetune_epochs
BISECTIONS = 2  # step 3, latency: slim rates tried between a feasible and a failed one
# Objectives within this share of the smallest count as equal (latency is
# measured to a few %; a few bytes of gzip do not matter): the most accurate wins.
TIE = 0.03


class _Walk:
  """The search's state: what was measured, the models, the clock (steps 1-3)."""

  def __init__(self, model, config, floor, log, space):
    self.model, self.config, self.floor, self.log, self.space = model, config, floor, log, space
    self.started, self.pace = time.monotonic(), _Pace()
    self.start = model  # what the slim chains start from: the strided model if feasible
    self.candidates: List[Candidate] = []
    self.models: Dict[Spec, keras.Model] = {}
    self.skipped: List[str] = []
    # slim rate -> (its fine-tuned model, {sparsity: per-layer sparsities})
    self.bases = {0.0: (model, {})}

  def add(self, model: keras.Model, spec: Spec, seconds: float, modes=()) -> bool:
    """Measures `model` in every mode (or `modes`); whether a file is feasible."""
    found = self.space.measure(model, spec, seconds, modes)
    for candidate in found:
      candidate.feasible = candidate.accuracy >= self.floor
    self.candidates.extend(found)
    self.models[spec] = model
    return any(candidate.feasible for candidate in found)

  def fits(self, epochs: int, what: str) -> bool:
    """Whether a fine-tune of `epochs` ends within the budget; notes it if not."""
    if self.pace.fits(epochs, self.started, self.config.time_budget):
      return True
    self.skipped.append(f"{what}: the time budget")
    return False

  def masks(self, model: keras.Model) -> Dict[float, Dict[str, float]]:
    """{sparsity: per-layer sparsities} of `model` from its sensitivity scan,
    which may take SCAN_SHARE of the budget."""
    return self.space.masks(model, SCAN_SHARE * self.config.time_budget, self.log)

  def untrained(self):
    """Step 1: the model as given, and its sensitivity masks at each sparsity."""
    self.add(self.model, Spec(), 0.0)
    if self.config.objective == "size":
      masks = self.masks(self.model)
      self.bases[0.0] = (self.model, masks)
      for sparsity in sorted(masks):
        spec = Spec(0.0, sparsity)
        if time.monotonic() - self.started > self.config.time_budget:
          self.skipped.append(f"{spec.name} and after: the time budget")
          return
        if not self.add(with_sparsity(self.model, masks[sparsity]), spec, 0.0):
          if sparsity != max(masks):
            self.skipped.append(f"higher sparsities without fine-tuning: {spec.name} "
                                "already lost too much")
          return

  @property
  def strided(self) -> bool:
    """Whether the slim chains start from the strided model (step 2)."""
    return self.start is not self.model

  def stride(self, epochs: int) -> bool:
    """Step 2, latency: the model's pools folded into strided convolutions,
    fine-tuned longer (every layer after a fold sees new inputs, and the slim
    chains start from it when it is feasible)."""
    spec = Spec(finetuned=True, longer=True, strided=True)
    if not self.fits(epochs, spec.name):
      return False
    try:
      model = strided(self.model).model
    except TfoptError as error:  # no pool to fold, or a model it cannot rebuild
      self.skipped.append(f"strided: {error}")
      self.log(f"search: no strided convolutions: {error}")
      return False
    self.log(f"search: fine-tuning {spec.name} ({epochs} epochs)")
    clock = time.monotonic()
    self.space.fine_tune(model, epochs)
    seconds = self.pace.add(time.monotonic() - clock, epochs)
    clock = time.monotonic()
    feasible = self.add(model, spec, seconds)
    self.pace.add_measuring(time.monotonic() - clock)
    if feasible:
      self.start = model
      self.bases[0.0] = (model, {})
    return feasible

  def chains(self):
    """Step 2: for each slim rate, the slimmed model, then each sparsity on it."""
    config = self.config
    reach = len(config.sparsities)  # how far along the sparsities chains may go
    for rate in (0.0,) + tuple(sorted(config.slim_rates)):
      if rate:
        if not self.fits(config.finetune_epochs, f"slim {rate:.0%} and after"):
          return
        if not self.slim(rate, config.finetune_epochs):
          return  # nothing to slim, or a higher rate would lose more
      for position, sparsity in enumerate(sorted(self.bases[rate][1])):
        spec = Spec(rate, sparsity, True)
        if position >= reach:
          self.skipped.append(f"{spec.name}: a lower slim rate lost too much there")
          break
        if not self.fits(config.finetune_epochs, f"{spec.name} and after"):
          return
        feasible = self.prune(spec, config.finetune_epochs)
        if not feasible:
          # Higher rates stop before this sparsity, or at it after a near miss:
          # slimming can remove what the sparsity had to cut from a layer.
          reach = position + self._near_miss(spec)
          break

  def between(self):
    """Step 3, latency: slim rates halfway between the highest feasible rate
    and the lowest failed one, BISECTIONS times at most."""
    for _ in range(BISECTIONS):
      slimmed = [candidate for candidate in self.candidates
                 if candidate.spec.finetuned and not candidate.spec.sparsity
                 and not candidate.spec.longer and candidate.spec.strided == self.strided]
      feasible = {candidate.spec.slim_rate for candidate in slimmed if candidate.feasible}
      low = max(feasible | {0.0})
      failed = [candidate.spec.slim_rate for candidate in slimmed
                if candidate.spec.slim_rate > low]
      if not failed:
        return
      rate = round((low + min(failed)) / 2, 4)
      if not self.fits(self.config.finetune_epochs, f"slim {100 * rate:.4g}%"):
        return
      self.slim(rate, self.config.finetune_epochs)

  def longer(self):
    """Step 3: fine-tuned models just below the floor that would beat the choice
    if feasible, most compressed first, fine-tuned again LONGER times longer."""
    for spec in self._promising():
      if not self._again(spec):
        return

  def polish(self):
    """Last: the chosen model, if fine-tuned, fine-tuned LONGER times longer
    (the same size and speed, more accuracy; the choice takes it if so)."""
    spec = self.candidates[_best(self.candidates, self.config.objective)].spec
    if spec.finetuned and not spec.longer and dataclasses.replace(
        spec, longer=True) not in self.models:
      self._again(spec)

  def int4_qat(self):
    """Last, when the choice is an int4 file: its model trained on the int4
    grid (tfopt.techniques.qat.int4, zeros kept) and measured as int4, the same size with
    what post-training int4 lost taken back; the choice takes it if so."""
    best = self.candidates[_best(self.candidates, self.config.objective)]
    spec = dataclasses.replace(best.spec, int4_qat=True)
    if best.mode != "int4" or best.spec.int4_qat or spec in self.models:
      return
    epochs = self.config.finetune_epochs
    if not self.fits(epochs, spec.name):
      return
    self.log(f"search: {spec.name} ({epochs} epochs)")
    clock = time.monotonic()
    trained = self.space.int4_qat(self.models[best.spec], epochs, bool(best.spec.sparsity))
    self.add(trained, spec, self.pace.add(time.monotonic() - clock, epochs), ("int4",))

  def _again(self, spec: Spec) -> bool:
    """`spec` fine-tuned LONGER times longer; False when the budget says no."""
    epochs = LONGER * self.config.finetune_epochs
    if not self.fits(epochs, f"{spec.name} fine-tuned longer"):
      return False
    longer = dataclasses.replace(spec, longer=True)
    if spec.sparsity:
      self.prune(longer, epochs)
    else:
      self.slim(spec.slim_rate, epochs, longer)
    return True

  def _near_miss(self, spec: Spec) -> bool:
    """Whether a file of `spec` missed the floor by less than PROMISING_PP."""
    return any(candidate.spec == spec and candidate.accuracy >= self.floor - self.space.near
               for candidate in self.candidates)

  def _promising(self) -> List[Spec]:
    best = self.candidates[_best(self.candidates, self.config.objective)]
    bar = objective_of(best, self.config.objective) if best.feasible else float("inf")
    close = [candidate for candidate in self.candidates
             if candidate.spec.finetuned and not candidate.spec.longer and not candidate.feasible
             and candidate.accuracy >= self.floor - self.space.near
             and objective_of(candidate, self.config.objective) < bar]
    specs = []
    for candidate in sorted(close, key=lambda item: objective_of(item, self.config.objective)):
      if candidate.spec not in specs and candidate.spec.slim_rate in self.bases:
        specs.append(candidate.spec)
    return specs

  def slim(self, rate: float, epochs: int, spec: Optional[Spec] = None) -> bool:
    """Slims the model to `rate` and fine-tunes it; whether a mode is feasible."""
    spec = spec or Spec(rate, 0.0, True, strided=self.strided)
    self.log(f"search: fine-tuning {spec.name} ({epochs} epochs)")
    clock = time.monotonic()
    try:
      slimmed = self.space.slim(self.start, rate, epochs)
    except TfoptError as error:  # nothing to slim: the sparsities remain
      self.skipped.append(f"slim {rate:.0%}: {error}")
      self.log(f"search: no slimming: {error}")
      return False
    seconds = self.pace.add(time.monotonic() - clock, epochs)
    clock = time.monotonic()
    if not spec.longer:
      masks = self.masks(slimmed) if self.config.objective == "size" else {}
      self.bases[rate] = (slimmed, masks)
    feasible = self.add(slimmed, spec, seconds)
    self.pace.add_measuring(time.monotonic() - clock)
    return feasible

  def prune(self, spec: Spec, epochs: int) -> bool:
    """Prunes the spec's slimmed model by its sensitivity allocation, fine-tuning."""
    base, masks = self.bases[spec.slim_rate]
    self.log(f"search: fine-tuning {spec.name} ({epochs} epochs)")
    clock = time.monotonic()
    try:
      pruned = self.space.prune(base, spec.sparsity, epochs, masks[spec.sparsity])
    except TfoptError as error:  # e.g. a layer short of its target
      self.skipped.append(f"{spec.name}: {error}")
      return False
    seconds = self.pace.add(time.monotonic() - clock, epochs)
    clock = time.monotonic()
    feasible = self.add(pruned, spec, seconds)
    self.pace.add_measuring(time.monotonic() - clock)
    return feasible


@dataclasses.dataclass
class _Pace:
  """What a fine-tuned candidate has cost so far: seconds per training epoch,
  and seconds to convert and measure it; whether the next one fits."""
  seconds: float = 0.0
  epochs: int = 0
  measuring: float = 0.0
  measured: int = 0

  def add(self, seconds: float, epochs: int) -> float:
    self.seconds, self.epochs = self.seconds + seconds, self.epochs + epochs
    return seconds

  def add_measuring(self, seconds: float):
    self.measuring, self.measured = self.measuring + seconds, self.measured + 1

  def fits(self, epochs: int, started: float, budget: float) -> bool:
    per_epoch = self.seconds / self.epochs if self.epochs else 0.0
    measuring = self.measuring / self.measured if self.measured else 0.0
    return time.monotonic() - started + per_epoch * epochs + measuring <= budget


def _best(candidates: List[Candidate], objective: str) -> int:
  """The most accurate feasible candidate among those within TIE of the
  smallest objective (then the smaller); the starting model's best file when
  none is feasible."""
  feasible = [index for index, candidate in enumerate(candidates) if candidate.feasible]
  if feasible:
    smallest = min(objective_of(candidates[index], objective) for index in feasible)
    near = [index for index in feasible
            if objective_of(candidates[index], objective) <= smallest * (1 + TIE)]
    return max(near, key=lambda index: (candidates[index].accuracy,
                                        -objective_of(candidates[index], objective)))
  start = [index for index, candidate in enumerate(candidates)
           if candidate.spec == Spec()]
  return max(start, key=lambda index: candidates[index].accuracy)
