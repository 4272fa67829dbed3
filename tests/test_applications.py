"""keras.applications backbones, as users nest them, carried over from Keras 3.

Each family is built the way the Keras transfer-learning guide teaches:
`weights=None` here (no downloads), a small input size, the backbone called
as a layer after an augmentation layer, then pooling, Dropout and a Dense
head; and flat (`input_tensor=`). Saved as .keras, loaded through
model_io, and checked against the Keras 3 original on images.
"""

import functools
import os
import tempfile

import numpy as np
import pytest

from tfopt.config import PruneConfig
from tfopt.core._keras import keras as keras2
from tfopt.data.datasets import Dataset
from tfopt.keras_io import model_io
from tfopt.litert import convert, evaluate
from tfopt.techniques.prune import algorithm as prune
from tfopt.techniques.slim import algorithm as slim

FAMILIES = ["MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large",
            "EfficientNetB0", "EfficientNetV2B0", "ResNet50", "ResNet50V2",
            "DenseNet121", "NASNetMobile"]
SIZE = 32


def images(count=8, seed=0):
  return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype(
      np.float32)


def user_model(family: str, nested: bool = True, classes: int = 5):
  """A Keras 3 transfer model around keras.applications.<family>."""
  import keras  # pylint: disable=g-import-not-at-top
  make = getattr(keras.applications, family)
  inputs = keras.Input((SIZE, SIZE, 3))
  if nested:
    base = make(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = base(x, training=False)
  else:
    x = make(include_top=False, weights=None, input_tensor=inputs).output
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(0.2)(x)
  return keras.Model(inputs, keras.layers.Dense(classes)(x), name=f"users_{family}")


@functools.lru_cache(maxsize=None)
def carried(family: str) -> model_io.LoadedModel:
  """user_model(family) saved as .keras and read back (once per session)."""
  path = os.path.join(tempfile.mkdtemp(), "model.keras")
  user_model(family).save(path)
  return model_io.read_model(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_nested_backbone_is_flattened_with_the_same_outputs(family):
  loaded = carried(family)
  model_io.outputs_match(loaded.original, loaded.model, images())
  assert not any(isinstance(layer, keras2.Model) for layer in loaded.model.layers)
  backbone = next(layer for layer in loaded.original.layers if hasattr(layer, "layers"))
  # Every weight of the backbone is in the flat Keras 2 model.
  assert loaded.model.count_params() == loaded.original.count_params()
  assert len(loaded.model.layers) >= len(backbone.layers)


@pytest.mark.parametrize("family", ["MobileNetV3Small", "EfficientNetB0", "ResNet50V2"])
def test_flat_backbone_carries_over(family, tmp_path):
  path = str(tmp_path / "model.keras")
  user_model(family, nested=False).save(path)
  model = model_io.load_model(path, check_images=images())
  assert model.count_params() > 0


# MobileNetV3Small has every new path (hard_silu, relu6(x + 3) / 6 arithmetic,
# squeeze-excite Multiply, Rescaling); the other families take ~40-60 s each on
# a fast host and run with `pytest -m slow`.
@pytest.mark.parametrize("family", ["MobileNetV3Small"] + [
    pytest.param(family, marks=pytest.mark.slow) for family in FAMILIES
    if family != "MobileNetV3Small"])
def test_prune_and_int8_on_a_carried_backbone(family, tmp_path):
  model = carried(family).model
  x_train, labels = images(64, seed=1), np.arange(64) % 5
  data = Dataset("tiny", x_train, labels, x_train[:16], labels[:16], x_train[:16],
                 labels[:16], [str(index) for index in range(5)], "random pixels")
  result = prune.prune(model, data, PruneConfig(target_sparsity=0.5, epochs=1,
                                                 batch_size=32), verbose=0)
  assert result.layers and all(prune.reached(entry, 0.5) for entry in result.layers)
  int8 = tmp_path / "model_int8.tflite"
  int8.write_bytes(convert.to_tflite(result.model, "int8", x_train, 8))
  contents = evaluate.inspect_tflite(str(int8))
  assert contents.input_dtype == "int8" and contents.weight_sparsity > 0.3
  assert evaluate.top1(str(int8), x_train[:4]).shape == (4,)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_slim_and_int8_on_a_carried_backbone(family, tmp_path):
  from tfopt.config import SlimConfig  # pylint: disable=g-import-not-at-top
  model = carried(family).model
  x_train, labels = images(64, seed=1), np.arange(64) % 5
  data = Dataset("tiny", x_train, labels, x_train[:16], labels[:16], x_train[:16],
                 labels[:16], [str(index) for index in range(5)], "random pixels")
  result = slim.slim(model, data, SlimConfig(rate=0.5, prune_count=1, finetune_epochs=1,
                                             sparsity_epochs=0, criterion="l2",
                                             batch_size=32), verbose=0)
  assert result.steps[-1].params < 0.75 * model.count_params()
  before = convert.to_tflite(model, "int8", x_train, 8)
  after = convert.to_tflite(result.model, "int8", x_train, 8)
  assert len(after) < 0.75 * len(before)
  (tmp_path / "slim.tflite").write_bytes(after)
  assert evaluate.top1(str(tmp_path / "slim.tflite"), x_train[:4]).shape == (4,)


def test_a_layer_that_cannot_be_carried_is_named_by_its_path(tmp_path):
  import keras  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((SIZE, SIZE, 3))
  x = keras.layers.Conv2D(4, 3)(inputs)
  x = keras.layers.RMSNormalization(name="odd_norm")(x)  # Keras 3 only
  backbone = keras.Model(inputs, x, name="backbone")
  outer_inputs = keras.Input((SIZE, SIZE, 3))
  x = keras.layers.GlobalAveragePooling2D()(backbone(outer_inputs))
  keras.Model(outer_inputs, keras.layers.Dense(3)(x)).save(str(tmp_path / "m.keras"))
  with pytest.raises(model_io.ModelLoadError, match=r"backbone/odd_norm \(RMSNormalization\)"):
    model_io.read_model(str(tmp_path / "m.keras"))


@pytest.mark.parametrize("activation", ["hard_silu", "hard_sigmoid", "silu"])
def test_keras3_activations_keep_their_meaning_in_standard_layers(activation, tmp_path):
  import keras  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((SIZE, SIZE, 3))
  x = keras.layers.Conv2D(4, 3)(inputs)
  x = keras.layers.Activation(activation)(x)
  x = keras.layers.GlobalAveragePooling2D()(x * 2.0 - 1.0)
  keras.Model(inputs, keras.layers.Dense(3)(x)).save(str(tmp_path / "m.keras"))
  model = model_io.load_model(str(tmp_path / "m.keras"), check_images=images() / 40)
  kinds = {type(layer).__name__ for layer in model.layers}
  assert kinds <= {"InputLayer", "Conv2D", "Activation", "Rescaling", "ReLU", "Multiply",
                   "GlobalAveragePooling2D", "Dense"}


def _randomize_batch_norms(model, seed=0):
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras2.layers.BatchNormalization):
      size = layer.moving_mean.shape[0]
      values = [rng.normal(1, 0.3, size), rng.normal(0, 0.3, size),
                rng.normal(0, 0.1, size), rng.uniform(0.5, 1.5, size)]
      layer.set_weights([value for value, present in zip(
          values, [layer.scale, layer.center, True, True]) if present])


def _silence(model, group, channels):
  """Zeroes `channels` of a group everywhere: producers' filters and biases,
  gamma and beta of every BatchNorm on them. They then carry zeros only."""
  for name in group.producers:
    layer = model.get_layer(name)
    weights = layer.get_weights()
    out = 1 if isinstance(layer, keras2.layers.SeparableConv2D) else 0
    for weight in weights[out:]:
      weight[..., channels] = 0
    layer.set_weights(weights)
  for name, positions, members in group.norms:
    layer = model.get_layer(name)
    weights = layer.get_weights()
    for weight in weights[:int(layer.scale) + int(layer.center)]:
      weight[positions[np.isin(members, channels)]] = 0
    layer.set_weights(weights)


def _randomized_copy(model):
  copy = keras2.models.clone_model(model)
  copy.set_weights(model.get_weights())
  _randomize_batch_norms(copy)
  return copy


# NASNetMobile and DenseNet121 (120+ groups) take 5-20 s each: `pytest -m slow`.
@pytest.mark.parametrize("family", [
    pytest.param(family, marks=pytest.mark.slow) if family in ("NASNetMobile", "DenseNet121")
    else family for family in FAMILIES])
def test_dependency_groups_cover_the_convs_and_removal_is_exact(family):
  model = _randomized_copy(carried(family).model)
  convs = [layer.name for layer in model.layers if type(layer) is keras2.layers.Conv2D]
  groups, skipped = slim.slimmable_groups(model, criterion="l2")
  grouped = {name for group in groups for name in group.producers}
  if family == "NASNetMobile":  # Adds of a Concatenate and one conv stay whole
    assert len(grouped & set(convs)) >= 0.7 * len(convs) and skipped
  else:  # residual Adds, squeeze-excite and concatenations all followed
    assert set(convs) <= grouped and skipped == {}
    assert any(len(group.producers) > 1 for group in groups) == (
        family not in ("MobileNet", "DenseNet121"))
  keep = {}
  for group in groups:
    dropped = np.arange(0, group.width, 3)
    _silence(model, group, dropped)
    keep.update({name: np.setdiff1d(np.arange(group.width), dropped)
                 for name in group.producers})
  small = slim.remove_channels(model, keep)
  assert small.count_params() < 0.7 * model.count_params()
  x = images(4)
  np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), atol=1e-5)
  # Silencing is what makes removal exact: the same removal from live
  # weights changes the outputs.
  live = _randomized_copy(carried(family).model)
  change = np.abs(slim.remove_channels(live, keep)(x).numpy() - live(x).numpy())
  assert np.max(change) > 1e-3 * np.max(np.abs(live(x).numpy()))


def _keras2_transfer_model(alpha=0.35):
  """The TF 2.x transfer-learning tutorial's model, in Keras 2 (tf_keras)."""
  base = keras2.applications.MobileNetV2(include_top=False, weights=None, alpha=alpha,
                                         input_shape=(SIZE, SIZE, 3))
  inputs = keras2.Input((SIZE, SIZE, 3))
  x = keras2.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
  x = keras2.layers.GlobalAveragePooling2D()(base(x, training=False))
  # A nested Sequential head whose Dense has a name the backbone uses too.
  head = keras2.Sequential([keras2.Input((x.shape[-1],)),
                            keras2.layers.Dense(16, activation="relu", name="Conv1"),
                            keras2.layers.Dense(5)], name="head")
  return keras2.Model(inputs, head(x), name="users_keras2_transfer")


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_keras2_nested_backbone_is_flattened(suffix, tmp_path):
  path = str(tmp_path / f"model{suffix}")
  _keras2_transfer_model().save(path)
  loaded = model_io.read_model(path)
  assert "nested models flattened" in loaded.source
  assert not any(isinstance(layer, keras2.Model) for layer in loaded.model.layers)
  assert model_io.outputs_match(loaded.original, loaded.model, images()) < 1e-4
  assert {"Conv1", "head_Conv1"} <= {layer.name for layer in loaded.model.layers}
  assert loaded.model.count_params() == loaded.original.count_params()
  groups, skipped = slim.slimmable_groups(loaded.model, criterion="l2")
  convs = {layer.name for layer in loaded.model.layers
           if type(layer) is keras2.layers.Conv2D}
  assert convs <= {name for group in groups for name in group.producers} and not skipped


def test_a_shared_nested_backbone_is_refused_by_name(tmp_path):
  inner_inputs = keras2.Input((SIZE, SIZE, 3))
  backbone = keras2.Model(inner_inputs, keras2.layers.Conv2D(4, 3)(inner_inputs),
                          name="twin")
  inputs = keras2.Input((SIZE, SIZE, 3))
  both = keras2.layers.Add()([backbone(inputs), backbone(inputs * 0.5)])
  x = keras2.layers.GlobalAveragePooling2D()(both)
  keras2.Model(inputs, keras2.layers.Dense(3)(x)).save(str(tmp_path / "m.h5"))
  with pytest.raises(model_io.ModelLoadError, match="'twin' is called 2 times"):
    model_io.read_model(str(tmp_path / "m.h5"))
