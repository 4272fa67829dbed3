"""A task is the user's: data (train / val / test), a loss, metrics, a score.

`make_task` takes them in the forms `keras.Model.fit` / `compile` take:

  data     a tf.data.Dataset of (x, y) or (x, y, sample_weight), batched or
           not; a numpy (x, y) tuple; a keras.utils.PyDataset (or tf_keras
           Sequence) of batches. y is one array for a one-output model, else
           a dict {output name: array} (or a tuple in the model's output order).
  loss     what compile takes: a name, a Keras loss, fn(y_true, y_pred), or a
           dict per output; None: the loss the model was compiled with.
  metrics  names, Keras metric objects or fn(y_true, y_pred): a list (for
           every output) or a dict per output.
  score    optional fn(y_true, y_pred) -> float on the whole test set as
           numpy (mAP, ROC AUC), y_* as the data gives them (dict per output
           for several outputs); the test set is read once, in order.

Data is streamed: it is never copied whole into memory. Everything is
checked against the model before any training or file is written: a target
with no output, an output with no target, shapes that disagree (the error
shows both structures).
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfopt.core.errors import TfoptError

__all__ = ["TaskError", "Output", "Task", "make_task", "outputs_of"]


class TaskError(TfoptError, ValueError):
  """The task's data, loss or metrics do not fit the model, or cannot be used."""


@dataclasses.dataclass(frozen=True)
class Output:
  """One model output: the user's name for it, tf_keras' name, its shape."""
  name: str
  keras_name: str
  shape: Tuple[Optional[int], ...]  # without the batch dimension

  @property
  def describe(self) -> str:
    return f"{self.name}: {_shape_text(self.shape)}"


@dataclasses.dataclass(frozen=True)
class Task:
  """The user's data, loss and metrics, fitted to one model's outputs.

  train / val / test: batched tf.data.Datasets of (x, {output name: y}) or
  (x, y, sample_weight) with x cast to the model's input dtype. losses:
  {output name: fn(y_true, y_pred)}. metrics: {output name: [Keras 3 metric
  factories]}: each call makes a fresh metric object.
  """
  outputs: Tuple[Output, ...]
  train: tf.data.Dataset
  val: Optional[tf.data.Dataset]
  test: tf.data.Dataset
  losses: Dict[str, Callable]
  metrics: Dict[str, List[Callable]]
  score: Optional[Callable] = None
  score_name: str = "score"
  higher_is_better: bool = True
  batch_size: int = 32

  def output(self, name: str) -> Output:
    return next(output for output in self.outputs if output.name == name)

  def user_targets(self, targets: Dict[str, np.ndarray]):
    """Targets (or outputs) as the user's data gives them: one array or a dict."""
    return targets[self.outputs[0].name] if len(self.outputs) == 1 else dict(targets)


def outputs_of(keras2_model, user_names: Optional[List[str]] = None) -> Tuple[Output, ...]:
  """The model's outputs, named as the user knows them (Keras 3 names of a
  rebuilt model, position by position), else by tf_keras' output names."""
  keras_names = list(keras2_model.output_names)
  names = list(user_names) if user_names else keras_names
  return tuple(Output(name, keras_name, tuple(tensor.shape[1:]))
               for name, keras_name, tensor in zip(names, keras_names,
                                                   keras2_model.outputs))


def make_task(model, train, test, val=None, loss=None, metrics=None, score=None,
              score_name: Optional[str] = None, higher_is_better: bool = True,
              batch_size: int = 32, user_output_names=None, compiled=None) -> Task:
  """The task for `model` (a tf_keras model), its data checked against it.

  compiled: (loss, metrics) the model was compiled with, used where `loss` /
  `metrics` are None.

  Raises:
    TaskError: what does not fit, with both structures where they disagree.
  """
  if len(model.inputs) != 1:
    raise TaskError(f"Model {model.name!r} has {len(model.inputs)} inputs; tfopt "
                    "takes models with one input (images, audio features, sensor windows).")
  outputs = outputs_of(model, user_output_names)
  compiled_loss, compiled_metrics = compiled or (None, None)
  loss = loss if loss is not None else compiled_loss
  if loss is None:
    raise TaskError("No loss: give loss= (as compile takes it), or save the model "
                    "compiled with its loss.")
  input_spec = model.inputs[0]
  splits = {name: _batches(data, name, input_spec, outputs, batch_size)
            for name, data in (("train", train), ("val", val), ("test", test))
            if data is not None}
  if score is not None and not callable(score):
    raise TaskError(f"score must be a function fn(y_true, y_pred) -> float, got "
                    f"{type(score).__name__}.")
  return Task(outputs, splits["train"], splits.get("val"), splits["test"],
              _losses(loss, outputs), _metrics(metrics if metrics is not None
                                               else compiled_metrics, outputs),
              score, score_name or getattr(score, "__name__", "score"),
              bool(higher_is_better), batch_size)


# --- data -----------------------------------------------------------------


def _batches(data, split: str, input_spec, outputs, batch_size: int) -> tf.data.Dataset:
  """`data` as batches of (x, {output: y}[, w]), checked against the model."""
  dataset = _as_dataset(data, split, batch_size)
  spec = dataset.element_spec
  if not isinstance(spec, tuple) or len(spec) not in (2, 3):
    raise TaskError(f"The {split} data gives {_spec_text(spec)}; it must give (x, y) "
                    "or (x, y, sample_weight) pairs, as model.fit takes them.")
  rank = len(input_spec.shape)
  x_rank = spec[0].shape.rank if isinstance(spec[0], tf.TensorSpec) else None
  if x_rank == rank - 1:
    dataset, spec = dataset.batch(batch_size), dataset.batch(batch_size).element_spec
  elif x_rank != rank:
    raise TaskError(f"The {split} data's x is {_spec_text(spec[0])}; the model takes "
                    f"{_shape_text(tuple(input_spec.shape[1:]))} (one input, batch "
                    "first or unbatched).")
  _check_input(spec[0], input_spec, split)
  keyed = _keyed_targets(spec[1], outputs, split)
  dtype = input_spec.dtype

  def fitted(x, y, *weight):
    return (tf.cast(x, dtype), keyed(y)) + tuple(weight)
  return dataset.map(fitted, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def _as_dataset(data, split: str, batch_size: int) -> tf.data.Dataset:
  if isinstance(data, tf.data.Dataset):
    return data
  if isinstance(data, tuple) and len(data) in (2, 3) and all(
      isinstance(part, (np.ndarray, dict, list, tuple)) for part in data):
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)
  if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
    return _from_sequence(data, split)
  raise TaskError(f"The {split} data is a {type(data).__name__}; give a tf.data.Dataset, "
                  "a numpy (x, y) tuple or a keras.utils.PyDataset.")


def _from_sequence(sequence, split: str) -> tf.data.Dataset:
  """A PyDataset / Sequence of batches, read batch by batch (never all at once)."""
  try:
    count = len(sequence)
    first = sequence[0] if count else None
  except Exception as error:  # the user's code: any error means unreadable
    raise TaskError(f"The {split} data ({type(sequence).__name__}) cannot be read: "
                    f"{type(error).__name__}: {error}.") from error
  if first is None:
    raise TaskError(f"The {split} data ({type(sequence).__name__}) is empty.")
  first = tuple(first) if isinstance(first, (list, tuple)) else first
  signature = tf.nest.map_structure(
      lambda value: tf.TensorSpec((None,) + np.shape(value)[1:],
                                  tf.as_dtype(np.asarray(value).dtype)), first)

  def batches():
    for index in range(count):
      item = sequence[index]
      yield tuple(item) if isinstance(item, (list, tuple)) else item
  return tf.data.Dataset.from_generator(batches, output_signature=signature)


def _check_input(x_spec, input_spec, split: str):
  if not isinstance(x_spec, tf.TensorSpec):
    raise TaskError(f"The {split} data's x is {_spec_text(x_spec)}; the model takes one "
                    f"tensor of {_shape_text(tuple(input_spec.shape[1:]))}.")
  if not (x_spec.dtype.is_floating or x_spec.dtype.is_integer):
    raise TaskError(f"The {split} data's x is {x_spec.dtype.name}; the model takes "
                    "numbers (decode and scale them in the pipeline).")
  given, wanted = tuple(x_spec.shape[1:]), tuple(input_spec.shape[1:])
  if any(a is not None and b is not None and a != b for a, b in zip(given, wanted)):
    raise TaskError(f"The {split} data's x has shape {_shape_text(given)}; the model "
                    f"takes {_shape_text(wanted)}.")


def _keyed_targets(y_spec, outputs, split: str) -> Callable:
  """A function y -> {output name: y} for the data's target structure."""
  names = [output.name for output in outputs]
  if isinstance(y_spec, dict):
    keyed = dict(y_spec)
    missing = [name for name in names if name not in keyed]
    extra = [name for name in keyed if name not in names]
    if missing or extra:
      raise TaskError(_structure_error(split, y_spec, outputs, (
          f"outputs with no target: {missing}; " if missing else "") + (
          f"targets with no output: {extra}" if extra else "")))
    pick = lambda y: {name: y[name] for name in names}
  elif isinstance(y_spec, (tuple, list)):
    if len(y_spec) != len(names):
      raise TaskError(_structure_error(split, y_spec, outputs,
                                       f"{len(y_spec)} targets for {len(names)} outputs"))
    keyed = dict(zip(names, y_spec))
    pick = lambda y: dict(zip(names, y))
  else:
    if len(names) != 1:
      raise TaskError(_structure_error(split, y_spec, outputs, "one target for "
                                       f"{len(names)} outputs; give a dict per output"))
    keyed = {names[0]: y_spec}
    pick = lambda y: {names[0]: y}
  for output in outputs:
    _check_target(keyed[output.name], output, split, y_spec, outputs)
  return pick


def _check_target(target, output: Output, split: str, y_spec, outputs):
  """A target fits its output when the shapes agree, or as sparse class
  indices: the output's shape without its last axis (or with it as 1)."""
  if not isinstance(target, tf.TensorSpec) or target.shape.rank is None:
    return
  given, wanted = tuple(target.shape[1:]), output.shape
  if not (_compatible(given, wanted) or _compatible(given, wanted[:-1])
          or _compatible(given, wanted[:-1] + (1,))):
    raise TaskError(_structure_error(split, y_spec, outputs,
                                     f"output {output.name!r} and its target disagree"))


def _compatible(given, wanted) -> bool:
  return len(given) == len(wanted) and all(
      a is None or b is None or a == b for a, b in zip(given, wanted))


def _structure_error(split: str, y_spec, outputs, what: str) -> str:
  model = "{" + ", ".join(output.describe for output in outputs) + "}"
  return (f"The {split} data's targets do not match the model's outputs ({what}). "
          f"Model outputs: {model}. Data targets: {_spec_text(y_spec)}. Give y as "
          "{output name: array} (or one array for a one-output model).")


def _shape_text(shape) -> str:
  return "(" + ", ".join("None" if size is None else str(size) for size in shape) + ")"


def _spec_text(spec) -> str:
  if isinstance(spec, dict):
    return "{" + ", ".join(f"{key}: {_spec_text(value)}" for key, value in spec.items()) + "}"
  if isinstance(spec, (tuple, list)):
    return "(" + ", ".join(_spec_text(value) for value in spec) + ")"
  if isinstance(spec, tf.TensorSpec):
    return f"{spec.dtype.name}{_shape_text(tuple(spec.shape))}"
  return type(spec).__name__


# --- loss and metrics -----------------------------------------------------


def _per_output(value, outputs, what: str) -> dict:
  """{output name: value} from one value (every output) or a dict."""
  names = [output.name for output in outputs]
  if isinstance(value, dict) and not _is_serialized(value):
    unknown = [key for key in value if key not in names]
    if unknown:
      raise TaskError(f"{what} names outputs the model does not have: {unknown}; "
                      f"its outputs are {names}.")
    return {name: value[name] for name in names if name in value}
  if isinstance(value, (list, tuple)) and what == "loss":
    if len(value) != len(names):
      raise TaskError(f"loss gives {len(value)} losses for {len(names)} outputs.")
    return dict(zip(names, value))
  return {name: value for name in names}


def _is_serialized(value: dict) -> bool:
  """A Keras object as compile_config saves it ({"class_name", "config"})."""
  return "class_name" in value and "config" in value


def _losses(loss, outputs) -> Dict[str, Callable]:
  losses = _per_output(loss, outputs, "loss")
  missing = [output.name for output in outputs if output.name not in losses]
  if missing:
    raise TaskError(f"loss gives no loss for the outputs {missing}; give one per output.")
  return {name: _loss_function(value, name) for name, value in losses.items()}


def _loss_function(value, output: str) -> Callable:
  """The loss for one output; a name or plain function aligned to the
  output's rank first, as compile does (labels (batch,) for (batch, 1))."""
  import keras as keras3  # pylint: disable=g-import-not-at-top
  if isinstance(value, str):
    try:
      return _rank_aligned(keras3.losses.get(value))
    except ValueError as error:
      raise TaskError(f"Unknown loss {value!r} for output {output!r}; give a Keras loss "
                      "name (e.g. 'mse'), a keras.losses object or fn(y_true, y_pred).") from error
  if isinstance(value, dict):  # a serialized Keras loss, as compile_config holds it
    return keras3.losses.deserialize(value)
  if not callable(value):
    raise TaskError(f"The loss for output {output!r} is a {type(value).__name__}; give a "
                    "Keras loss name, a keras.losses object or fn(y_true, y_pred).")
  return _rank_aligned(value)


def _rank_aligned(function: Callable) -> Callable:
  """`function` with a target one size-1 axis short of (or beyond) the
  output's given that axis, as Keras' Loss objects align them; class ids
  for class scores (sparse targets) are left as they are."""
  import keras as keras3  # pylint: disable=g-import-not-at-top
  if isinstance(function, keras3.losses.Loss):
    return function

  def loss(y_true, y_pred):
    true_rank, predicted_rank = len(y_true.shape), len(y_pred.shape)
    if true_rank == predicted_rank - 1 and y_pred.shape[-1] == 1:
      y_true = keras3.ops.expand_dims(y_true, -1)
    elif true_rank == predicted_rank + 1 and y_true.shape[-1] == 1:
      y_true = keras3.ops.squeeze(y_true, -1)
    return function(y_true, y_pred)
  loss.__name__ = getattr(function, "__name__", "loss")
  return loss


def _metrics(metrics, outputs) -> Dict[str, List[Callable]]:
  if metrics is None:
    return {output.name: [] for output in outputs}
  if isinstance(metrics, str) or callable(metrics) or (
      isinstance(metrics, dict) and _is_serialized(metrics)):
    metrics = [metrics]
  per_output = _per_output(metrics, outputs, "metrics")
  return {output.name: [_metric_factory(value, output)
                        for value in _as_list(per_output.get(output.name, []))]
          for output in outputs}


def _as_list(value) -> list:
  return list(value) if isinstance(value, (list, tuple)) else [value]


def _metric_factory(value, output: Output) -> Callable:
  """A function making a fresh Keras 3 metric object for `value` each call."""
  import keras as keras3  # pylint: disable=g-import-not-at-top
  if isinstance(value, str):
    if value in ("accuracy", "acc"):
      return lambda: _accuracy(output)
    try:
      keras3.metrics.get(value)
    except ValueError as error:
      raise TaskError(f"Unknown metric {value!r} for output {output.name!r}; give a Keras "
                      "metric name, a keras.metrics object or fn(y_true, y_pred).") from error
    return lambda: _metric_object(keras3.metrics.get(value), value)
  if isinstance(value, dict):
    return lambda: keras3.metrics.deserialize(value)
  if isinstance(value, keras3.metrics.Metric):
    return lambda: type(value).from_config(value.get_config())
  if callable(value):
    return lambda: keras3.metrics.MeanMetricWrapper(value, name=getattr(
        value, "__name__", "metric"))
  raise TaskError(f"A metric for output {output.name!r} is a {type(value).__name__}; give "
                  "a Keras metric name, a keras.metrics object or fn(y_true, y_pred).")


def _metric_object(found, name: str):
  import keras as keras3  # pylint: disable=g-import-not-at-top
  if isinstance(found, keras3.metrics.Metric):
    return found
  return keras3.metrics.MeanMetricWrapper(found, name=name)


def _accuracy(output: Output):
  """'accuracy' as compile resolves it: class scores (integer or one-hot
  targets, told apart by their shape), else binary at 0.5."""
  import keras as keras3  # pylint: disable=g-import-not-at-top
  if not output.shape or output.shape[-1] in (None, 1):
    return keras3.metrics.BinaryAccuracy(name="accuracy")

  def accuracy(y_true, y_pred):
    y_true, y_pred = keras3.ops.convert_to_tensor(y_true), keras3.ops.convert_to_tensor(y_pred)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1]:
      y_true = keras3.ops.argmax(y_true, axis=-1)
    elif len(y_true.shape) == len(y_pred.shape):
      y_true = keras3.ops.squeeze(y_true, axis=-1)
    predicted = keras3.ops.argmax(y_pred, axis=-1)
    return keras3.ops.cast(keras3.ops.equal(keras3.ops.cast(y_true, "int64"),
                                            keras3.ops.cast(predicted, "int64")), "float32")
  return keras3.metrics.MeanMetricWrapper(accuracy, name="accuracy")
