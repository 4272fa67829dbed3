"""Fuzzing tfopt.compress' checks: random multi-output and non-image models.

Each random Keras 3 (or tf_keras) model has one input (an image, a sequence
of feature frames, or a vector) and one to three outputs (class scores, a
regression, a dense map); its data is random and shaped to fit, or made not
to fit on purpose. task_run.prepare (everything compress checks before it
writes or trains, every stage's preflight included) either passes or stops
with tfopt's own error, never another exception.
"""

import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from test_model_fuzz import keras_of, no_hang
from tfopt.core.errors import TfoptError
from tfopt.run import task_run

tf = pytest.importorskip("tensorflow")

MODELS = settings(max_examples=int(os.environ.get("TFOPT_FUZZ_TASKS", "40")), deadline=None,
                  derandomize=True, suppress_health_check=[HealthCheck.too_slow])
STAGES = ("slim", "prune", "cluster", "qat", "strided", "binary", "sensitivity", "search")

# Input kind -> (shape, trunk builder(layers, x) -> features keeping the input's rank).
INPUTS = {
    "image": ((8, 8, 2), lambda L, x: L.LeakyReLU(0.1)(L.Conv2D(4, 3, padding="same")(x))),
    "sequence": ((16, 3), lambda L, x: L.ReLU()(L.BatchNormalization()(L.Conv1D(4, 3, padding="same")(x)))),
    "mfcc": ((12, 10, 1), lambda L, x: L.ReLU()(L.DepthwiseConv2D(3, padding="same")(
        L.Conv2D(4, (4, 2), padding="same")(x)))),
    "vector": ((12,), lambda L, x: L.Dense(8, activation="relu")(x)),
}
# Output kind -> builder(layers, features) -> output tensor (None: not for this rank).
OUTPUTS = {
    "classes": lambda L, x: L.Dense(3)(_pooled(L, x)),
    "probabilities": lambda L, x: L.Dense(3, activation="softmax")(_pooled(L, x)),
    "regression": lambda L, x: L.Dense(2)(_pooled(L, x)),
    "map": lambda L, x: L.Conv2D(2, 1)(L.UpSampling2D()(x)) if len(x.shape) == 4 else None,
    "sequence_labels": lambda L, x: L.Conv1D(3, 1)(x) if len(x.shape) == 3 else None,
}
LOSSES = {"classes": "sparse_categorical_crossentropy_logits",
          "probabilities": "sparse_categorical_crossentropy", "regression": "mse",
          "map": "mse", "sequence_labels": "sparse_categorical_crossentropy_logits"}


def _pooled(L, x):  # pylint: disable=invalid-name
  if len(x.shape) == 4:
    return L.GlobalAveragePooling2D()(x)
  if len(x.shape) == 3:
    return L.GlobalMaxPooling1D()(x)
  return x


@st.composite
def task_plans(draw):
  return {"version": draw(st.sampled_from([3, 3, 2])),
          "input": draw(st.sampled_from(sorted(INPUTS))),
          "outputs": draw(st.lists(st.sampled_from(sorted(OUTPUTS)), min_size=1, max_size=3)),
          "named": draw(st.booleans()),  # a dict of outputs (Keras 3), else a list
          "wrong": draw(st.sampled_from([None, None, "missing", "shape", "extra"])),
          "stages": draw(st.lists(st.sampled_from(STAGES), min_size=0, max_size=2,
                                  unique=True))}


def build(plan):
  keras = keras_of(plan["version"])
  L = keras.layers  # pylint: disable=invalid-name
  shape, trunk = INPUTS[plan["input"]]
  inputs = keras.Input(shape)
  features = trunk(L, inputs)
  heads = {}
  for number, kind in enumerate(plan["outputs"]):
    output = OUTPUTS[kind](L, features)
    if output is None:
      return None
    heads[f"{kind}_{number}"] = output
  if plan["named"] and plan["version"] == 3:
    return keras.Model(inputs, heads, name="fuzzed_task")
  return keras.Model(inputs, list(heads.values()), name="fuzzed_task")


def data_for(model, plan, count=8):
  """Random (x, y) shaped for the model's outputs, or wrong as the plan says."""
  rng = np.random.default_rng(0)
  x = rng.random((count,) + tuple(model.inputs[0].shape[1:])).astype("float32")
  targets = {}
  for number, (kind, tensor) in enumerate(zip(plan["outputs"], model.outputs)):
    shape = tuple(tensor.shape[1:])
    if "sequence_labels" == kind or kind in ("classes", "probabilities"):
      targets[f"{kind}_{number}"] = rng.integers(0, 3, (count,) + shape[:-1])
    else:
      targets[f"{kind}_{number}"] = rng.random((count,) + shape).astype("float32")
  names = list(targets)
  if plan["wrong"] == "missing" and len(names) > 1:
    del targets[names[-1]]
  elif plan["wrong"] == "shape":
    targets[names[0]] = rng.random((count, 5, 7)).astype("float32")
  elif plan["wrong"] == "extra":
    targets["not_an_output"] = np.zeros(count, "float32")
  return x, targets


def losses_for(plan):
  import keras as keras3  # pylint: disable=g-import-not-at-top
  chosen = {}
  for number, kind in enumerate(plan["outputs"]):
    loss = LOSSES[kind]
    chosen[f"{kind}_{number}"] = (keras3.losses.SparseCategoricalCrossentropy(from_logits=True)
                                  if loss.endswith("_logits") else loss)
  return chosen


@MODELS
@given(plan=task_plans())
def test_any_task_is_prepared_or_refused_with_a_tfopt_error(plan):
  model = build(plan)
  assume(model is not None)
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "model.keras" if plan["version"] == 3 else "model.h5")
    model.save(path)
    x, targets = data_for(model, plan)
    names = list(losses_for(plan))
    keyed = targets if plan["named"] and plan["version"] == 3 else (
        tuple(targets[name] for name in names if name in targets)
        if plan["wrong"] != "extra" else targets)
    if not (plan["named"] and plan["version"] == 3) and len(names) == 1 and not isinstance(
        keyed, dict):
      keyed = keyed[0] if keyed else np.zeros(8)
    loss = losses_for(plan) if plan["named"] and plan["version"] == 3 else [
        losses_for(plan)[name] for name in names]
    if len(names) == 1 and isinstance(loss, list):
      loss = loss[0]
    try:
      with no_hang():
        prepared = task_run.prepare(path, train=(x, keyed), test=(x, keyed), loss=loss,
                                    stages=plan["stages"])
    except TfoptError as error:
      assert str(error)
      return
  assert plan["wrong"] is None or (plan["wrong"] == "missing" and len(names) == 1)
  assert [output.shape for output in prepared.task.outputs] == [
      tuple(tensor.shape[1:]) for tensor in model.outputs]
