import numpy as np
import pytest

from tfopt.core._keras import keras
from tfopt.core.artifacts import write_bytes_atomic
from tfopt.keras_io import models
from tfopt.litert import convert, evaluate
from tfopt.techniques.lowrank import algorithm as lowrank


def _mlp(seed=0):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((28, 28, 1))
  x = keras.layers.Flatten()(inputs)
  x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
  outputs = keras.layers.Dense(10, name="logits")(x)
  return keras.Model(inputs, outputs)


def test_full_rank_reproduces_the_layer_output(dataset):
  model = _mlp()
  factorized, report = lowrank.apply_lowrank(model, ranks={"hidden": 64})
  # Full rank saves no parameters for 784x64, so force it on the layer itself:
  kernel = model.get_layer("hidden").kernel.numpy()
  first, second, energy = lowrank.factorize_kernel(kernel, 64)
  np.testing.assert_allclose(first @ second, kernel, atol=1e-4)
  assert energy == pytest.approx(1.0)
  layer = lowrank.LowRankDense(64, 64, activation="relu")
  layer.build((None, 784))
  layer.set_weights([first, second, model.get_layer("hidden").bias.numpy()])
  flat = dataset.x_test.reshape(len(dataset.x_test), -1)
  expected = model.get_layer("hidden")(flat).numpy()
  np.testing.assert_allclose(layer(flat).numpy(), expected, atol=1e-4)
  assert report == []  # rank 64 would not save parameters: layer left alone
  assert isinstance(factorized.get_layer("hidden"), keras.layers.Dense)


def test_rank_by_energy_and_ratio():
  singular = np.array([10.0, 5.0, 1.0, 0.1])
  assert lowrank.choose_rank(singular, (100, 100), energy=0.5) == 1
  assert lowrank.choose_rank(singular, (100, 100), energy=0.99) == 2
  assert lowrank.choose_rank(singular, (100, 100), energy=1.0) == 4
  assert lowrank.choose_rank(singular, (100, 100), param_ratio=0.1) == 5


def test_factorized_model_is_smaller_close_and_converts(dataset, tmp_path):
  model = _mlp()
  factorized, report = lowrank.apply_lowrank(model, param_ratio=0.3,
                                             layers=["hidden"])
  assert [entry.layer for entry in report] == ["hidden"]
  entry = report[0]
  assert entry.params_after < 0.35 * entry.params_before
  assert factorized.count_params() < model.count_params()
  assert isinstance(factorized.get_layer("hidden"), lowrank.LowRankDense)
  np.testing.assert_array_equal(factorized.get_layer("logits").kernel.numpy(),
                                model.get_layer("logits").kernel.numpy())
  path = str(tmp_path / "lowrank.tflite")
  write_bytes_atomic(path, convert.to_tflite(factorized, "int8", dataset.x_train, 50))
  assert evaluate.inspect_tflite(path).ops.get("FULLY_CONNECTED", 0) == 3
  keras_top1 = np.argmax(factorized.predict(dataset.x_test, verbose=0), -1)
  tflite_top1 = np.argmax(evaluate.TFLiteClassifier(path).predict(dataset.x_test), -1)
  assert np.mean(keras_top1 == tflite_top1) > 0.9


def test_layer_round_trips_through_get_config(tmp_path):
  factorized, _ = lowrank.apply_lowrank(_mlp(), param_ratio=0.2)
  layer = factorized.get_layer("hidden")
  restored = lowrank.LowRankDense.from_config(layer.get_config())
  assert restored.get_config() == layer.get_config()
  path = str(tmp_path / "model.keras")
  factorized.save(path)
  loaded = keras.models.load_model(path)
  sample = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
  np.testing.assert_allclose(loaded(sample).numpy(), factorized(sample).numpy(),
                             atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(ranks={"hidden": 0}), "rank=0"),
    (dict(ranks={"hidden": 1000}), "rank=1000"),
    (dict(energy=1.5), "energy=1.5"),
    (dict(param_ratio=1.0), "param_ratio=1.0"),
    (dict(energy=0.9, param_ratio=0.5), "exactly one"),
    (dict(), "Give energy"),
    (dict(energy=0.9, layers=["flatten"]), "only Dense"),
])
def test_invalid_settings_are_refused(kwargs, message):
  model = _mlp()
  if "layers" in kwargs:
    kwargs["layers"] = [model.layers[1].name]
  with pytest.raises(lowrank.LowRankError, match=message):
    lowrank.apply_lowrank(model, **kwargs)


def test_teacher_dense_layer_factorizes():
  teacher = models.build_model("teacher", (28, 28, 1), 10)
  factorized, report = lowrank.apply_lowrank(teacher, param_ratio=0.3,
                                             layers=["fc"])
  assert report[0].params_before >= 3 * report[0].params_after
  assert factorized.output_shape == (None, 10)


@pytest.mark.parametrize("strides, padding", [((1, 1), "same"), ((2, 2), "valid"),
                                              ((2, 1), "same")])
def test_spatial_svd_at_full_rank_reproduces_the_conv(strides, padding, dataset):
  keras.utils.set_random_seed(3)
  inputs = keras.Input((28, 28, 1))
  x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
  x = keras.layers.Conv2D(12, (3, 5), strides=strides, padding=padding,
                          activation="relu", name="conv")(x)
  outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
  model = keras.Model(inputs, outputs)
  conv = model.get_layer("conv")
  full_rank = min(3 * 8, 5 * 12)
  vertical, horizontal, energy = lowrank.factorize_conv_kernel(conv.kernel.numpy(),
                                                               full_rank)
  assert vertical.shape == (3, 1, 8, full_rank)
  assert horizontal.shape == (1, 5, full_rank, 12)
  assert energy == pytest.approx(1.0)
  layer = lowrank.SpatialSVDConv2D(12, (3, 5), full_rank, strides, padding,
                                   activation="relu")
  features = model.get_layer("stem")(dataset.x_test[:16])
  layer.build(features.shape)
  layer.set_weights([vertical, horizontal, conv.bias.numpy()])
  np.testing.assert_allclose(layer(features).numpy(), conv(features).numpy(),
                             atol=1e-4)


def test_conv_factorization_in_a_model_converts_and_saves(dataset, tmp_path):
  teacher = models.build_model("teacher", (28, 28, 1), 10)
  factorized, report = lowrank.apply_lowrank(teacher, param_ratio=0.4,
                                             layers=["block2b_conv"])
  entry = report[0]
  assert entry.shape == (3, 3, 64, 64)
  assert entry.params_after <= 0.4 * entry.params_before
  assert 0 < entry.retained_energy < 1
  assert isinstance(factorized.get_layer("block2b_conv"), lowrank.SpatialSVDConv2D)
  path = str(tmp_path / "conv.tflite")
  write_bytes_atomic(path, convert.to_tflite(factorized, "float32"))
  reference = teacher.predict(dataset.x_test[:8], verbose=0)
  assert evaluate.TFLiteClassifier(path).predict(dataset.x_test[:8]).shape == reference.shape
  assert evaluate.inspect_tflite(path).ops["CONV_2D"] == 5
  factorized.save(str(tmp_path / "conv.keras"))
  loaded = keras.models.load_model(str(tmp_path / "conv.keras"))
  np.testing.assert_allclose(loaded.predict(dataset.x_test[:8], verbose=0),
                             factorized.predict(dataset.x_test[:8], verbose=0),
                             atol=1e-5)
