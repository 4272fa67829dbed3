"""Fuzzing --model: random models of every Keras layer type, and damaged files.

Each random model (Keras 3, or Keras 2 as tf_keras writes it) is saved and
goes through what the CLI does with --model before training: read, rebuild
(Keras 3), shape and class checks, the rebuild compared with the original,
every stage's preflight. It either passes, or stops with tfopt's own error
(a ModelLoadError naming the layer it cannot carry) — never another
exception. Damaged .keras zips and .h5 files likewise.
"""

import contextlib
import functools
import io
import json
import os
import shutil
import signal
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from test_fuzz import damaged
from tfopt.config import PipelineConfig
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset
from tfopt.keras_io import model_io
from tfopt.run import preflight

# Keras warns of every Masking layer's mask that a later layer drops: noise here.
pytestmark = pytest.mark.filterwarnings("ignore:Layer .* was passed an input with a mask")

MODELS = settings(max_examples=int(os.environ.get("TFOPT_FUZZ_MODELS", "150")),
                  deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FILES = settings(max_examples=50, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])
STAGES = ("teacher", "slim", "prune", "cluster", "qat")

# Layers on an image tensor (batch, height, width, channels) keeping its rank:
# name -> builder(layers module) -> layer. Names missing from a Keras version
# are skipped there.
IMAGE_LAYERS = {
    "Conv2D": lambda L: L.Conv2D(4, 3, padding="same"),
    "Conv2D_strided": lambda L: L.Conv2D(4, 3, strides=2, padding="same", use_bias=False),
    "Conv2DTranspose": lambda L: L.Conv2DTranspose(3, 3, padding="same"),
    "DepthwiseConv2D": lambda L: L.DepthwiseConv2D(3, padding="same"),
    "SeparableConv2D": lambda L: L.SeparableConv2D(4, 3, padding="same"),
    "BatchNormalization": lambda L: L.BatchNormalization(),
    "LayerNormalization": lambda L: L.LayerNormalization(),
    "GroupNormalization": lambda L: L.GroupNormalization(groups=1),
    "UnitNormalization": lambda L: L.UnitNormalization(),
    "RMSNormalization": lambda L: L.RMSNormalization(),
    "Normalization": lambda L: L.Normalization(mean=0.5, variance=0.25),
    "ReLU": lambda L: L.ReLU(max_value=6.0),
    "LeakyReLU": lambda L: L.LeakyReLU(),
    "ELU": lambda L: L.ELU(),
    "PReLU": lambda L: L.PReLU(shared_axes=[1, 2]),
    "Softmax": lambda L: L.Softmax(),
    "relu6": lambda L: L.Activation("relu6"),
    "swish": lambda L: L.Activation("swish"),
    "gelu": lambda L: L.Activation("gelu"),
    "hard_sigmoid": lambda L: L.Activation("hard_sigmoid"),
    "hard_silu": lambda L: L.Activation("hard_silu"),
    "tanh": lambda L: L.Activation("tanh"),
    "selu": lambda L: L.Activation("selu"),
    "mish": lambda L: L.Activation("mish"),
    "MaxPooling2D": lambda L: L.MaxPooling2D(2, padding="same"),
    "AveragePooling2D": lambda L: L.AveragePooling2D(2, padding="same"),
    "AdaptiveAveragePooling2D": lambda L: L.AdaptiveAveragePooling2D(2),
    "ZeroPadding2D": lambda L: L.ZeroPadding2D(1),
    "Cropping2D": lambda L: L.Cropping2D(1),
    "UpSampling2D": lambda L: L.UpSampling2D(2),
    "Resizing": lambda L: L.Resizing(6, 6),
    "CenterCrop": lambda L: L.CenterCrop(4, 4),
    "Rescaling": lambda L: L.Rescaling(1 / 255.0, -0.5),
    "Dropout": lambda L: L.Dropout(0.2),
    "SpatialDropout2D": lambda L: L.SpatialDropout2D(0.2),
    "GaussianNoise": lambda L: L.GaussianNoise(0.1),
    "GaussianDropout": lambda L: L.GaussianDropout(0.1),
    "AlphaDropout": lambda L: L.AlphaDropout(0.1),
    "ActivityRegularization": lambda L: L.ActivityRegularization(l1=0.01),
    "Identity": lambda L: L.Identity(),
    "Permute": lambda L: L.Permute((2, 1, 3)),
    "Masking": lambda L: L.Masking(),
    "RandomFlip": lambda L: L.RandomFlip(),
    "RandomRotation": lambda L: L.RandomRotation(0.1),
    "RandomZoom": lambda L: L.RandomZoom(0.1),
    "RandomTranslation": lambda L: L.RandomTranslation(0.1, 0.1),
    "RandomContrast": lambda L: L.RandomContrast(0.1),
    "RandomBrightness": lambda L: L.RandomBrightness(0.1),
    "RandomCrop": lambda L: L.RandomCrop(4, 4),
    "RandomGrayscale": lambda L: L.RandomGrayscale(),
    "RandomErasing": lambda L: L.RandomErasing(),
    "TimeDistributed": lambda L: L.TimeDistributed(L.Dense(3)),
    "SpectralNormalization": lambda L: L.SpectralNormalization(L.Conv2D(3, 3, padding="same")),
    "Dense_on_channels": lambda L: L.Dense(5),
    "EinsumDense": lambda L: L.EinsumDense("abcd,de->abce", output_shape=(8, 8, 4)),
}
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate")
# From an image to (batch, features): the head before the classifier.
HEADS = {
    "GlobalAveragePooling2D": lambda L, x: L.GlobalAveragePooling2D()(x),
    "GlobalMaxPooling2D": lambda L, x: L.GlobalMaxPooling2D()(x),
    "Flatten": lambda L, x: L.Flatten()(x),
    # Excursions through sequence and volume layers (rank 3 and 5).
    "Conv1D": lambda L, x: L.GlobalAveragePooling1D()(L.Conv1D(4, 3)(_sequence(L, x))),
    "LSTM": lambda L, x: L.LSTM(4)(_sequence(L, x)),
    "GRU": lambda L, x: L.GRU(4)(_sequence(L, x)),
    "SimpleRNN": lambda L, x: L.SimpleRNN(4)(_sequence(L, x)),
    "Bidirectional": lambda L, x: L.Flatten()(L.Bidirectional(L.LSTM(2))(_sequence(L, x))),
    "MultiHeadAttention": lambda L, x: L.GlobalMaxPooling1D()(
        L.MultiHeadAttention(2, 4)(_sequence(L, x), _sequence(L, x))),
    "Attention": lambda L, x: L.GlobalAveragePooling1D()(
        L.Attention()([_sequence(L, x), _sequence(L, x)])),
    "Conv3D": lambda L, x: L.GlobalAveragePooling3D()(
        L.Conv3D(2, 3, padding="same")(L.Reshape(tuple(x.shape[1:]) + (1,))(x))),
    "UpSampling1D": lambda L, x: L.Flatten()(L.UpSampling1D(2)(_sequence(L, x))),
    "RepeatVector": lambda L, x: L.Flatten()(L.RepeatVector(2)(L.GlobalAveragePooling2D()(x))),
}
CLASSIFIERS = {
    "Dense": lambda L, x, classes: L.Dense(classes)(x),
    "Dense_softmax": lambda L, x, classes: L.Dense(classes, activation="softmax")(x),
    "Dense_then_Softmax": lambda L, x, classes: L.Softmax()(L.Dense(classes)(x)),
    "EinsumDense": lambda L, x, classes: L.EinsumDense("ab,bc->ac", output_shape=classes)(x),
}


def _sequence(L, x):  # pylint: disable=invalid-name
  return L.Reshape((-1, x.shape[-1]))(x)


def keras_of(version):
  if version == 3:
    import keras  # pylint: disable=g-import-not-at-top
    return keras
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  return keras


@st.composite
def model_plans(draw):
  """A random small functional model: a chain, maybe a merged branch, a head."""
  version = draw(st.sampled_from([3, 3, 2]))
  return {
      "version": version,
      "size": draw(st.sampled_from([8, 9])),
      "channels": draw(st.sampled_from([1, 3])),
      "trunk": draw(st.lists(st.sampled_from(sorted(IMAGE_LAYERS)), max_size=4)),
      "branch": draw(st.one_of(st.none(), st.tuples(
          st.sampled_from(MERGES), st.lists(st.sampled_from(sorted(IMAGE_LAYERS)),
                                            min_size=1, max_size=2)))),
      "nested": draw(st.booleans()),
      "head": draw(st.sampled_from(sorted(HEADS))),
      "classifier": draw(st.sampled_from(sorted(CLASSIFIERS))),
      "classes": draw(st.integers(2, 5)),
      "format": draw(st.sampled_from([".keras", ".keras", ".h5"])),
  }


def build(plan):
  """The plan's model, or None when Keras refuses the combination itself."""
  keras = keras_of(plan["version"])
  L = keras.layers  # pylint: disable=invalid-name
  try:
    inputs = keras.Input((plan["size"], plan["size"], plan["channels"]))
    x = inputs
    for name in plan["trunk"]:
      x = IMAGE_LAYERS[name](L)(x)
    if plan["branch"]:
      merge, names = plan["branch"]
      y = x
      for name in names:
        y = IMAGE_LAYERS[name](L)(y)
      if merge != "Concatenate":  # the same shape on both sides
        y = L.Conv2D(x.shape[-1], 1)(L.Resizing(x.shape[1], x.shape[2])(y))
      x = getattr(L, merge)()([x, y])
    if plan["nested"]:  # the trunk as a model called as a layer
      x = keras.Model(inputs, x, name="backbone")(inputs)
    x = HEADS[plan["head"]](L, x)
    outputs = CLASSIFIERS[plan["classifier"]](L, x, plan["classes"])
    return keras.Model(inputs, outputs, name="fuzzed")
  except (AttributeError, ValueError, TypeError):  # this Keras lacks it, or refuses it
    return None


@contextlib.contextmanager
def no_hang(seconds=60):
  """Fails the example instead of hanging the suite (tf_keras can loop forever)."""
  def stop(*_):
    raise TimeoutError(f"loading took more than {seconds} s: a hang")
  previous = signal.signal(signal.SIGALRM, stop)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def through_cli_path(path, classes_hint=None):
  """What the CLI does with --model PATH before training; tfopt errors returned."""
  with no_hang():
    return _through_cli_path(path, classes_hint)


def _through_cli_path(path, classes_hint):
  try:
    loaded = model_io.read_model(path)
    height, width, channels = model_io.image_input_shape(loaded.model)
    classes = loaded.model.outputs[0].shape[-1] if classes_hint is None else classes_hint
    dataset = fitting_dataset(height or 8, width or 8, channels, max(2, classes or 2))
    preflight.check_model_fits_data(loaded, dataset)
    config = PipelineConfig(model=path, stages=STAGES)
    preflight.check_stages(config, dataset, loaded.model)
    model_io.logits_model(loaded.model)
    return loaded
  except TfoptError as error:
    return error


def fitting_dataset(height, width, channels, classes):
  rng = np.random.default_rng(0)

  def split(count):
    return (rng.uniform(0, 1, (count, height, width, channels)).astype(np.float32),
            rng.integers(0, classes, count).astype(np.int32))
  return Dataset("fuzz", *split(16), *split(8), *split(64),
                 [str(index) for index in range(classes)], "random")


@MODELS
@given(plan=model_plans())
def test_any_model_loads_or_gets_a_load_error_naming_its_layer(plan):
  model = build(plan)
  assume(model is not None)
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "model" + plan["format"])
    try:
      model.save(path)
    except Exception:  # pylint: disable=broad-except  (Keras cannot save it: not ours)
      assume(False)
    result = through_cli_path(path)
  if isinstance(result, model_io.LoadedModel):
    return
  message = str(result)
  assert isinstance(result, TfoptError), repr(result)
  if "cannot be carried over" in message:  # names each layer, with its class
    assert "(" in message and ")" in message


def test_the_layer_catalogue_builds_in_keras_3():
  """Every catalogue entry is a real Keras 3 layer here (so the fuzzing uses it)."""
  for name, layer in IMAGE_LAYERS.items():
    plan = {"version": 3, "size": 8, "channels": 3, "trunk": [name], "branch": None,
            "nested": False, "head": "Flatten", "classifier": "Dense", "classes": 3}
    assert build(plan) is not None, name
  for name in HEADS:
    plan = {"version": 3, "size": 8, "channels": 3, "trunk": [], "branch": None,
            "nested": False, "head": name, "classifier": "Dense", "classes": 3}
    assert build(plan) is not None, name


# --- damaged files -------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def saved_model(version: int, suffix: str) -> bytes:
  """The bytes of a small valid model saved by Keras `version` as `suffix`."""
  model = build({"version": version, "size": 8, "channels": 1,
                 "trunk": ["Conv2D", "BatchNormalization", "ReLU"], "branch": None,
                 "nested": False, "head": "GlobalAveragePooling2D",
                 "classifier": "Dense", "classes": 3})
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "model" + suffix)
    model.save(path)
    with open(path, "rb") as stream:
      return stream.read()


def _check_file(content: bytes, suffix: str):
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "model" + suffix)
    with open(path, "wb") as stream:
      stream.write(content)
    result = through_cli_path(path)
  assert isinstance(result, (model_io.LoadedModel, TfoptError)), repr(result)


KINDS = [(3, ".keras"), (2, ".keras"), (2, ".h5"), (3, ".h5")]


@FILES
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_damaged_model_files_load_or_are_refused(kind, data):
  _check_file(data.draw(damaged(saved_model(*kind))), kind[1])


def _mutated_json(draw, text: str) -> str:
  """The JSON with one value replaced, one key dropped, or cut short."""
  value = json.loads(text)
  paths = list(_leaves(value, ()))
  path = draw(st.sampled_from(paths))
  action = draw(st.sampled_from(["replace", "drop", "cut"]))
  if action == "cut":
    return text[:draw(st.integers(0, len(text) - 1))]
  parent = value
  for key in path[:-1]:
    parent = parent[key]
  if action == "drop" and isinstance(parent, dict):
    del parent[path[-1]]
  else:
    parent[path[-1]] = draw(st.one_of(st.none(), st.integers(-3, 99), st.text(max_size=8),
                                      st.just([]), st.just({}), st.booleans()))
  return json.dumps(value)


def _leaves(value, path):
  if isinstance(value, dict):
    for key, item in value.items():
      yield path + (key,)
      yield from _leaves(item, path + (key,))
  elif isinstance(value, list):
    for index, item in enumerate(value):
      yield path + (index,)
      yield from _leaves(item, path + (index,))


@FILES
@given(version=st.sampled_from([3, 2]), data=st.data())
def test_keras_zips_with_a_wrong_config_or_missing_weights_are_refused(version, data):
  """.keras zips: config.json changed, a member dropped."""
  source = zipfile.ZipFile(io.BytesIO(saved_model(version, ".keras")))
  names = source.namelist()
  dropped = data.draw(st.sampled_from([None] + names))
  target = io.BytesIO()
  with zipfile.ZipFile(target, "w") as archive:
    for name in names:
      content = source.read(name)
      if name == dropped:
        continue
      if name == "config.json" and dropped is None:
        content = _mutated_json(data.draw, content.decode()).encode()
      archive.writestr(name, content)
  _check_file(target.getvalue(), ".keras")


@FILES
@given(version=st.sampled_from([3, 2]), data=st.data())
def test_h5_files_with_a_wrong_config_or_missing_weights_are_refused(version, data):
  """.h5 files: model_config changed, a weight dataset deleted."""
  import h5py  # pylint: disable=g-import-not-at-top
  directory = tempfile.mkdtemp()
  path = os.path.join(directory, "model.h5")
  with open(path, "wb") as stream:
    stream.write(saved_model(version, ".h5"))
  with h5py.File(path, "r+") as handle:
    datasets = []
    handle.visititems(lambda name, item: datasets.append(name)
                      if isinstance(item, h5py.Dataset) else None)
    victim = data.draw(st.sampled_from([None] + sorted(datasets)))
    if victim is None:
      config = handle.attrs["model_config"]
      config = config.decode() if isinstance(config, bytes) else config
      handle.attrs["model_config"] = _mutated_json(data.draw, config)
    else:
      del handle[victim]
  with open(path, "rb") as stream:
    content = stream.read()
  shutil.rmtree(directory)
  _check_file(content, ".h5")
