"""keras.applications backbones, as users nest them, carried over from Keras 3.

Each family is built the way the Keras transfer-learning guide teaches:
`weights=None` here (no downloads), a small input size, the backbone called
as a layer after an augmentation layer, then pooling, Dropout and a Dense
head; and flat (`input_tensor=`). Saved as .keras, loaded through
model_io, and checked against the Keras 3 original on images.
"""

import numpy as np
import pytest

from tfopt import convert, evaluate, model_io, prune
from tfopt._keras import keras as keras2
from tfopt.config import PruneConfig
from tfopt.data import Dataset

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


@pytest.mark.parametrize("family", FAMILIES)
def test_nested_backbone_is_flattened_with_the_same_outputs(family, tmp_path):
  path = str(tmp_path / "model.keras")
  user_model(family).save(path)
  loaded = model_io.read_model(path)
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
# squeeze-excite Multiply, Rescaling); the others take ~40-60 s each on a fast
# host and run with `pytest -m slow`.
@pytest.mark.parametrize("family", [
    "MobileNetV3Small", pytest.param("MobileNetV2", marks=pytest.mark.slow),
    pytest.param("EfficientNetB0", marks=pytest.mark.slow)])
def test_prune_and_int8_on_a_carried_backbone(family, tmp_path):
  path = str(tmp_path / "model.keras")
  user_model(family).save(path)
  model = model_io.load_model(path, check_images=images())
  x_train, labels = images(64, seed=1), np.arange(64) % 5
  data = Dataset("tiny", x_train, labels, x_train[:16], labels[:16], x_train[:16],
                 labels[:16], [str(index) for index in range(5)], "random pixels")
  result = prune.prune(model, data, PruneConfig(target_sparsity=0.5, epochs=1,
                                                 batch_size=32), verbose=0)
  assert result.layers and all(entry.sparsity >= 0.49 for entry in result.layers)
  int8 = tmp_path / "model_int8.tflite"
  int8.write_bytes(convert.to_tflite(result.model, "int8", x_train, 8))
  contents = evaluate.inspect_tflite(str(int8))
  assert contents.input_dtype == "int8" and contents.weight_sparsity > 0.3
  assert evaluate.top1(str(int8), x_train[:4]).shape == (4,)


def test_a_layer_that_cannot_be_carried_is_named_by_its_path(tmp_path):
  import keras  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((SIZE, SIZE, 3))
  x = keras.layers.Conv2D(4, 3)(inputs)
  x = keras.layers.LayerNormalization(name="odd_norm")(x)
  backbone = keras.Model(inputs, x, name="backbone")
  outer_inputs = keras.Input((SIZE, SIZE, 3))
  x = keras.layers.GlobalAveragePooling2D()(backbone(outer_inputs))
  keras.Model(outer_inputs, keras.layers.Dense(3)(x)).save(str(tmp_path / "m.keras"))
  with pytest.raises(model_io.ModelLoadError, match=r"backbone/odd_norm \(LayerNormalization\)"):
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
