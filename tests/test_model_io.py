"""A user's Keras 3 model, carried over to Keras 2 for tfmot."""

import numpy as np
import pytest

from conftest import keras3_cnn
from tfopt.core._keras import keras as keras2
from tfopt.keras_io import model_io

keras3 = pytest.importorskip("keras")


def _keras3_model():
  model = keras3_cnn()
  # Non-trivial BN statistics, so that copying them is checked.
  bn = model.layers[3]
  bn.set_weights([np.random.default_rng(0).uniform(0.5, 1.5, 8).astype("float32")
                  for _ in range(4)])
  return model


def test_keras3_file_is_rebuilt_in_keras2_with_the_same_outputs(tmp_path, dataset):
  original = _keras3_model()
  path = str(tmp_path / "users.keras")
  original.save(path)
  assert model_io.saved_keras_version(path) == "3"
  images = (dataset.x_test[:16] * 255).astype("float32")
  model = model_io.load_model(path, check_images=images)
  assert isinstance(model, keras2.Model)
  assert [type(layer).__name__ for layer in model.layers][1:] == [
      "Rescaling", "Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D",
      "Flatten", "Dropout", "Dense"]
  np.testing.assert_allclose(model.predict(images, verbose=0),
                             np.asarray(original(images, training=False)), atol=1e-4)


def test_keras2_file_loads_directly(tmp_path, trained_teacher):
  path = str(tmp_path / "k2.keras")
  trained_teacher.save(path)
  assert model_io.saved_keras_version(path) == "2"
  model = model_io.load_model(path)
  np.testing.assert_allclose(model.get_weights()[0], trained_teacher.get_weights()[0])


def test_lambda_is_refused_without_opt_in(tmp_path):
  inputs = keras3.Input((4,))
  outputs = keras3.layers.Lambda(lambda x: x * 2)(inputs)
  path = str(tmp_path / "lambda.keras")
  keras3.Model(inputs, outputs).save(path)
  with pytest.raises(model_io.ModelLoadError, match="allow_unsafe"):
    model_io.load_model(path)


def test_layers_that_cannot_be_carried_are_named(tmp_path):
  inputs = keras3.Input((8, 4))
  outputs = keras3.layers.TimeDistributed(keras3.layers.Dense(2), name="per_step")(inputs)
  path = str(tmp_path / "per_step.keras")
  keras3.Model(inputs, outputs).save(path)
  with pytest.raises(model_io.ModelLoadError, match=r"per_step \(TimeDistributed\)"):
    model_io.load_model(path)


def test_missing_or_foreign_files(tmp_path):
  with pytest.raises(model_io.ModelLoadError, match="does not exist"):
    model_io.load_model(str(tmp_path / "none.keras"))
  bad = tmp_path / "bad.keras"
  bad.write_text("not a zip")
  with pytest.raises(model_io.ModelLoadError, match="not a readable .keras"):
    model_io.load_model(str(bad))


def test_rebuilt_model_prunes_and_converts(tmp_path, dataset):
  from tfopt.core import artifacts  # pylint: disable=g-import-not-at-top
  from tfopt.litert import convert, evaluate
  from tfopt.techniques.prune import algorithm as prune
  from tfopt.config import PruneConfig  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "users.keras")
  _keras3_model().save(path)
  model = model_io.load_model(path)
  pixels = dataset.__class__(**{**dataset.__dict__,
                                **{key: getattr(dataset, key) * 255.0
                                   for key in ("x_train", "x_val", "x_test")}})
  result = prune.prune(model, pixels, PruneConfig(target_sparsity=0.5, epochs=1,
                                                  batch_size=32), verbose=0)
  assert all(entry.sparsity >= 0.49 for entry in result.layers)
  tflite = artifacts.write_bytes_atomic(str(tmp_path / "users_int8.tflite"),
                                        convert.to_tflite(result.model, "int8",
                                                          pixels.x_train, 50))
  assert evaluate.agreement(tflite, result.model, pixels.x_test) >= 0.9


def test_leaky_relu_resizing_and_center_crop_carry_over_and_run_as_int8(tmp_path):
  """The layers of YOLO-style and preprocessing-in-the-model code: Keras 3's
  LeakyReLU (negative_slope, default or set), Resizing and CenterCrop. An
  option Keras 2 lacks (antialias=True) is refused by name."""
  from tfopt.litert import convert, int8_fidelity  # pylint: disable=g-import-not-at-top
  inputs = keras3.Input((20, 20, 3))
  x = keras3.layers.Resizing(16, 16)(inputs)
  x = keras3.layers.CenterCrop(12, 12)(x)
  x = keras3.layers.LeakyReLU(negative_slope=0.1)(keras3.layers.Conv2D(8, 3)(x))
  x = keras3.layers.LeakyReLU()(keras3.layers.Conv2D(8, 3)(x))
  outputs = keras3.layers.Dense(3)(keras3.layers.GlobalAveragePooling2D()(x))
  path = str(tmp_path / "leaky.keras")
  keras3.Model(inputs, outputs).save(path)
  images = np.random.default_rng(0).random((32, 20, 20, 3)).astype(np.float32)
  model = model_io.load_model(path, check_images=images)
  assert [type(layer).__name__ for layer in model.layers][1:4] == [
      "Resizing", "CenterCrop", "Conv2D"]
  assert [layer.alpha for layer in model.layers if type(layer).__name__ == "LeakyReLU"
          ] == pytest.approx([0.1, 0.3])
  content = convert.to_tflite(model, "int8", images, 32)
  expected = model.predict(images, verbose=0)
  got = int8_fidelity.FileRunner(content).predict(images)[0]
  assert np.corrcoef(expected.ravel(), got.ravel())[0, 1] > 0.99
  inputs = keras3.Input((20, 20, 3))
  path = str(tmp_path / "antialias.keras")
  keras3.Model(inputs, keras3.layers.Resizing(8, 8, antialias=True)(inputs)).save(path)
  with pytest.raises(model_io.ModelLoadError, match="antialias=True.*antialias=False"):
    model_io.load_model(path)


def test_sequence_and_volume_layers_carry_over_with_the_same_outputs():
  """1-D layers of sensor-window and audio-feature models, and 3-D ones."""
  from tfopt.keras_io import keras3 as carry  # pylint: disable=g-import-not-at-top
  layers = keras3.layers
  inputs = keras3.Input((32, 3))
  x = layers.ZeroPadding1D(2)(layers.Conv1D(8, 5, dilation_rate=2, activation="relu")(inputs))
  x = layers.MaxPooling1D(2)(layers.DepthwiseConv1D(3, padding="same")(x))
  x = layers.UpSampling1D(2)(layers.SeparableConv1D(8, 3)(layers.AveragePooling1D(2)(x)))
  x = layers.Cropping1D(1)(layers.Conv1DTranspose(4, 3, strides=2)(x))
  x = layers.Reshape((4, 19, 1, 1))(x)
  x = layers.UpSampling3D(1)(layers.ZeroPadding3D(1)(layers.Conv3D(2, 3, padding="same")(x)))
  x = layers.GlobalAveragePooling3D()(layers.MaxPooling3D(2)(x))
  model = keras3.Model(inputs, layers.Dense(3)(x))
  rebuilt = carry.rebuild_in_keras2(model)
  signals = np.random.default_rng(0).normal(size=(4, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(rebuilt.predict(signals, verbose=0), np.asarray(model(signals)),
                             atol=1e-5)
