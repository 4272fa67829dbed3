"""What a person (or a CI log) sees while a run goes on.

    log(message, **fields)   one "[tfopt] ..." line, or one JSON object per
                             line with --log_format json
    Progress                 the runner's clock: "stage k of n", elapsed time
                             and an estimate of the training time left
    keras_verbose()          Keras' own progress bar on a terminal, one line
                             per epoch in a log file, none in JSON mode
    bar(iterable, ...)       tqdm's bar on a terminal (evaluating .tflite files)

The estimate is rough and says what it is: the training epochs left in the
run times the seconds of the latest epoch trained ("at the last epoch's
pace"). After the teacher it overestimates (a student epoch costs less than a
teacher epoch); from the student's first stage on it is close. Conversion and
measurement are not in it.
"""

import json
import sys
import time
from typing import Dict, Optional, Sequence

__all__ = ["FORMATS", "set_format", "json_mode", "log", "Progress",
           "keras_verbose", "bar", "epoch_log"]

FORMATS = ("text", "json")
_state = {"format": "text"}


def set_format(log_format: str):
  """text: "[tfopt] ..." lines; json: one JSON object per line, on stdout."""
  if log_format not in FORMATS:
    raise ValueError(f"log_format={log_format!r}: it must be text or json")
  _state["format"] = log_format


def json_mode() -> bool:
  return _state["format"] == "json"


def log(message: str, **fields):
  """Prints one progress line; in JSON mode `fields` are keys of its object."""
  if json_mode():
    event = {"time": round(time.time(), 3), "event": "log", "message": message, **fields}
    print(json.dumps(event, default=str), flush=True)
  else:
    print(f"[tfopt] {message}", flush=True)


def _minutes(seconds: float) -> str:
  return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


class Progress:
  """The run's stages, their training epochs, and the seconds of each epoch."""

  def __init__(self, stages: Sequence[str], epochs: Dict[str, int],
               caps: Optional[Dict[str, float]] = None):
    self.stages, self.epochs, self.caps = list(stages), dict(epochs), dict(caps or {})
    self.started = time.perf_counter()
    self.epoch_seconds: Optional[float] = None
    self.epochs_done: Dict[str, int] = {}
    self.stage: Optional[str] = None

  def stage_started(self, stage: str, position: int):
    self.stage = stage
    elapsed = time.perf_counter() - self.started
    left = self.training_left()
    estimate = (f"; {_minutes(left)} of training left at the last epoch's pace"
                if left else "")
    log(f"stage {position} of {len(self.stages)}: {stage} ({_minutes(elapsed)} into "
        f"the run{estimate})", event="stage", stage=stage, position=position,
        stages=len(self.stages), elapsed_s=round(elapsed, 1),
        training_left_s=None if left is None else round(left, 1))

  def stage_done(self, stage: str, seconds: float):
    self.epochs_done[stage] = self.epochs.get(stage, 0)  # restored fits count too
    log(f"{stage}: done in {seconds:.1f} s", event="stage_done", stage=stage,
        seconds=round(seconds, 1))

  def epoch_done(self, seconds: float):
    self.epoch_seconds = seconds
    if self.stage is not None:
      self.epochs_done[self.stage] = self.epochs_done.get(self.stage, 0) + 1

  def training_left(self) -> Optional[float]:
    """Seconds: epochs left in the run x the latest epoch's, each stage at
    most its time cap (the search's budget); None before an epoch."""
    if self.epoch_seconds is None:
      return None
    return sum(min(max(count - self.epochs_done.get(stage, 0), 0) * self.epoch_seconds,
                   self.caps.get(stage, float("inf")))
               for stage, count in self.epochs.items())


def keras_verbose() -> int:
  """1 (Keras' bar) on a terminal, 2 (a line per epoch) in a log, 0 in JSON mode."""
  if json_mode():
    return 0
  return 1 if sys.stdout.isatty() else 2


def bar(iterable, total: int, description: str):
  """tqdm's progress bar over `iterable` on a terminal; the iterable as is otherwise."""
  if json_mode() or not sys.stderr.isatty():
    return iterable
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(iterable, total=total, desc=description, unit="batch", leave=False)


def epoch_log(stage: str, clock: Optional[Progress] = None):
  """A Keras callback: each epoch's time, told to the run's `clock` (for the
  estimate), and in JSON mode its logs as one JSON line."""
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top

  class EpochLog(keras.callbacks.Callback):

    def on_epoch_begin(self, epoch, logs=None):
      self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      seconds = time.perf_counter() - self.started
      if clock is not None:
        clock.epoch_done(seconds)
      if json_mode():
        log(f"{stage}: epoch {epoch + 1}", event="epoch", stage=stage, epoch=epoch + 1,
            seconds=round(seconds, 2),
            **{name: round(float(value), 6) for name, value in (logs or {}).items()})

  return EpochLog()

