"""A task's measurements: the user's metrics on a Keras model and its files.

One pass over the test data runs the Keras model and every .tflite file of
it (in LiteRT, inputs quantized and outputs dequantized with the file's own
scales) on the same batches, and gives per row: the user's loss and metrics
(per output), the user's score on the whole test set, and per output the
file's fidelity to its Keras model (SNR, cosine similarity, and top-1
agreement where the output is class scores), size and latency.
"""

import dataclasses
import math
import os
from typing import Dict, List, Optional

import numpy as np

from tfopt.keras_io.macs import macs_if_known, parameter_counts
from tfopt.litert import evaluate, int8_fidelity
from tfopt.task.definition import Task, TaskError

__all__ = ["OutputFidelity", "Measured", "measure", "file_outputs", "is_class_scores"]


@dataclasses.dataclass
class OutputFidelity:
  """How closely a file's output follows its Keras model's, on the test data."""
  output: str
  snr_db: Optional[float]
  cosine: Optional[float]
  agreement: Optional[float] = None  # top-1, for class-score outputs


@dataclasses.dataclass
class Measured(evaluate.FileRow):
  """One row of a task run: a Keras model (path and file figures None) or one
  of its .tflite files. FileRow's fields (accuracy None: a task's quality is
  its metrics and score; params, nonzero_params and macs of the Keras
  model), then the task's own."""
  metrics: Dict[str, float]
  score: Optional[float] = None
  fidelity: List[OutputFidelity] = dataclasses.field(default_factory=list)
  examples: int = 0


# FileRow's figures (its fields after name and path), filled in by measure()
# once the pass over the data is done.
_FIGURES = tuple(field.name for field in dataclasses.fields(evaluate.FileRow)
                 if field.name not in ("name", "path"))


def is_class_scores(task: Task, output: str) -> bool:
  """Whether an output is class scores: its loss is a categorical cross-entropy."""
  loss = task.losses[output]
  name = str(getattr(loss, "name", None) or getattr(loss, "__name__", "")
             or type(loss).__name__).lower()
  return "categorical" in name and len(task.output(output).shape) >= 1


class _Row:
  """Running sums of one row over the test batches."""

  def __init__(self, task: Task, name: str, path: Optional[str], with_score: bool = True):
    self.task, self.name, self.path = task, name, path
    self.metrics = {output.name: [make() for make in task.metrics[output.name]]
                    for output in task.outputs}
    self.loss_sum, self.examples = 0.0, 0
    self.sums = {output.name: int8_fidelity.Sums() for output in task.outputs}
    self.agreeing = {output.name: 0 for output in task.outputs}
    self.kept = {"y": [], "out": []} if task.score is not None and with_score else None

  def add(self, targets: dict, outputs: dict, weights, reference: Optional[dict]):
    count = len(next(iter(outputs.values())))
    for name, values in outputs.items():
      for metric in self.metrics[name]:
        _call(self.name, metric.name, metric.update_state, targets[name], values, weights)
      loss = _call(self.name, f"loss of {name}", self.task.losses[name], targets[name], values)
      self.loss_sum += float(np.mean(np.asarray(loss))) * count
      if reference is not None:
        self.sums[name].add(reference[name], values)
        if is_class_scores(self.task, name):
          self.agreeing[name] += int(np.sum(np.argmax(values, -1) == np.argmax(reference[name], -1)))
    self.examples += count
    if self.kept is not None:
      self.kept["y"].append(targets)
      self.kept["out"].append(outputs)

  def result(self, with_fidelity: bool) -> Measured:
    metrics = {"loss": self.loss_sum / max(1, self.examples)}
    for name, objects in self.metrics.items():
      for metric in objects:
        key = metric.name if len(self.task.outputs) == 1 else f"{name}/{metric.name}"
        metrics[key] = float(np.asarray(metric.result()))
    for key, value in metrics.items():
      if not math.isfinite(value):
        raise TaskError(f"The {key} of {self.name} is {value} on the test data: a metric "
                        "or loss that is not finite cannot rank the files. Check that "
                        "function (and the data it gets).")
    fidelity = [self._fidelity(output.name) for output in self.task.outputs] if with_fidelity else []
    path = os.path.basename(self.path) if self.path else None  # as every row names it
    return Measured(name=self.name, path=path, metrics=metrics, score=self._score(),
                    fidelity=fidelity, examples=self.examples, **dict.fromkeys(_FIGURES))

  def _fidelity(self, name: str) -> OutputFidelity:
    sums = self.sums[name]
    agreement = (self.agreeing[name] / (self.examples * _positions(self.task.output(name)))
                 if is_class_scores(self.task, name) else None)
    return OutputFidelity(name, sums.snr_db(), sums.cosine(), agreement)

  def _score(self) -> Optional[float]:
    if self.kept is None:
      return None
    joined = {key: {name: np.concatenate([part[name] for part in parts])
                    for name in parts[0]} for key, parts in self.kept.items()}
    value = _call(self.name, self.task.score_name, self.task.score,
                  self.task.user_targets(joined["y"]), self.task.user_targets(joined["out"]))
    try:
      value = float(value)
    except (TypeError, ValueError) as error:
      raise TaskError(f"{self.task.score_name} returned {value!r} for {self.name}; it "
                      "must return one number.") from error
    if not math.isfinite(value):
      raise TaskError(f"{self.task.score_name} of {self.name} is {value}: it must be "
                      "finite. Check that function (and the outputs it gets).")
    return value


def _positions(output) -> int:
  """Class-score vectors per example (1 for (classes,), H*W for a map)."""
  return int(np.prod([size or 1 for size in output.shape[:-1]], dtype=np.int64)) or 1


def _call(row: str, what: str, function, *arguments):
  """The user's function, its errors turned into one TaskError naming it."""
  try:
    return function(*arguments)
  except TaskError:
    raise
  except Exception as error:  # the user's code may raise anything
    raise TaskError(f"{what} raised {type(error).__name__} on {row}: {error}. Fix that "
                    "function, or the data it gets.") from error


def file_outputs(runner: int8_fidelity.FileRunner, keras_names: List[str]) -> List[int]:
  """For each Keras output name, its position among the file's outputs.

  By the file's signature (output names are the Keras output names); else
  by the converter's tensor names (StatefulPartitionedCall:N is output N).
  """
  names = list(keras_names)
  try:
    by_name = runner.interpreter.get_signature_runner().get_output_details()
    indices = [by_name[name]["index"] for name in names]
  except (ValueError, KeyError):
    indices = None
  positions = {detail["index"]: number for number, detail in enumerate(runner.outputs)}
  if indices is not None and all(index in positions for index in indices):
    return [positions[index] for index in indices]
  suffixes = [detail["name"].rpartition(":")[2] for detail in runner.outputs]
  if all(suffix.isdigit() for suffix in suffixes) and len(suffixes) == len(names):
    return [suffixes.index(str(number)) for number in range(len(names))]
  return list(range(len(names)))


def measure(keras_model, task: Task, files: Dict[str, str], keras_name: str,
            num_threads: int = 1, latency_runs: int = 100, data=None,
            with_score: bool = True) -> List[Measured]:
  """The Keras model's row and a row per file ({row name: path}), in one pass
  over the test data (or `data`, batched as the task's; the score left out
  without `with_score`)."""
  runners = {name: int8_fidelity.FileRunner(_read(path), num_threads=num_threads)
             for name, path in files.items()}
  keras_names = [output.keras_name for output in task.outputs]
  orders = {name: file_outputs(runner, keras_names) for name, runner in runners.items()}
  rows = {keras_name: _Row(task, keras_name, None, with_score)}
  rows.update({name: _Row(task, name, path, with_score) for name, path in files.items()})
  first = None
  for batch in task.test if data is None else data:
    x, targets = batch[0], {key: value.numpy() for key, value in batch[1].items()}
    weights = batch[2].numpy() if len(batch) == 3 else None
    first = x[:1].numpy() if first is None else first
    reference = _by_output(task, keras_model.predict_on_batch(x))
    rows[keras_name].add(targets, reference, weights, None)
    for name, runner in runners.items():
      with evaluate.litert_errors(files[name]):
        runner.invoke([x.numpy()])
        values = runner.output_values()
      rows[name].add(targets, {output.name: values[position] for output, position
                               in zip(task.outputs, orders[name])}, weights, reference)
  if first is None:
    raise TaskError(f"The {'test' if data is None else 'measured'} data is empty; "
                    "give at least one batch.")
  measured = [rows[keras_name].result(False)]
  for name, path in files.items():
    row = rows[name].result(True)
    file = evaluate.measure_file(path, first[0], num_threads=num_threads, runs=latency_runs)
    row.tflite_bytes, row.gzip_bytes, row.latency_us = (
        file.tflite_bytes, file.gzip_bytes, file.latency_us)
    measured.append(row)
  params, nonzero_params = parameter_counts(keras_model)
  macs = macs_if_known(keras_model)
  for row in measured:
    row.params, row.nonzero_params, row.macs = params, nonzero_params, macs
  return measured


def _by_output(task: Task, values) -> dict:
  values = values if isinstance(values, (list, tuple)) else [values]
  return {output.name: np.asarray(value) for output, value in zip(task.outputs, values)}


def _read(path: str) -> bytes:
  with open(path, "rb") as stream:
    return stream.read()
