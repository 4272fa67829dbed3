import numpy as np
import pytest
import tensorflow as tf

from tfopt.core import artifacts
from tfopt.core._keras import keras
from tfopt.litert import convert, evaluate
from tfopt.techniques.binary import algorithm as binary
from tfopt.techniques.distill.algorithm import fine_tune
from tfopt.training import train


@pytest.fixture(scope="module")
def trained_bwn(dataset, trained_teacher):
  model = binary.binarize(trained_teacher, "bwn")
  fine_tune(model, dataset, 2, 32, 1e-3, verbose=0)
  return model


def test_binarize_kernel_formulas():
  kernel = np.array([[0.5, -0.2], [-0.1, 0.0], [0.3, -0.6]], np.float32)
  np.testing.assert_array_equal(binary.binarize_kernel(kernel, "binaryconnect"),
                                [[1, -1], [-1, 1], [1, -1]])
  alpha = np.mean(np.abs(kernel), axis=0)  # per output channel (last axis)
  np.testing.assert_allclose(binary.binarize_kernel(kernel, "bwn"),
                             np.where(kernel >= 0, 1, -1) * alpha)
  np.testing.assert_allclose(binary.binarize_kernel(tf.constant(kernel), "bwn"),
                             binary.binarize_kernel(kernel, "bwn"))


def test_straight_through_gradient_is_identity():
  layer = binary.BinaryDense(3, binarization="binaryconnect", use_bias=False)
  inputs = tf.ones((1, 4))
  layer.build(inputs.shape)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(inputs) * tf.constant([[1.0, 2.0, 3.0]]))
  # d loss / d w_b = inputs^T @ upstream, passed to w unchanged.
  np.testing.assert_allclose(tape.gradient(loss, layer.kernel),
                             np.ones((4, 1)) @ [[1.0, 2.0, 3.0]])


def test_weights_are_clipped_and_forward_is_binary(trained_bwn):
  for layer in trained_bwn.layers:
    if isinstance(layer, (binary.BinaryConv2D, binary.BinaryDense)):
      assert np.abs(layer.kernel.numpy()).max() <= 1.0
  assert {type(layer).__name__ for layer in trained_bwn.layers} >= {
      "BinaryConv2D", "BinaryDense"}


def test_binary_model_learns(trained_bwn, dataset):
  assert train.accuracy(trained_bwn, dataset.x_test, dataset.y_test) > 0.8


def test_save_and_reload(trained_bwn, dataset, tmp_path):
  path = artifacts.save_keras_atomic(trained_bwn, str(tmp_path / "bwn.keras"))
  reloaded = keras.models.load_model(path)
  np.testing.assert_allclose(reloaded.predict(dataset.x_test[:8], verbose=0),
                             trained_bwn.predict(dataset.x_test[:8], verbose=0),
                             atol=1e-5)


def test_export_runs_in_litert_with_two_values_per_channel(trained_bwn, dataset, tmp_path):
  plain = binary.export_binary(trained_bwn)
  assert not any("Binary" in type(layer).__name__ for layer in plain.layers)
  np.testing.assert_allclose(plain.predict(dataset.x_test[:16], verbose=0),
                             trained_bwn.predict(dataset.x_test[:16], verbose=0),
                             atol=1e-4)
  path = artifacts.write_bytes_atomic(str(tmp_path / "bwn.tflite"), convert.to_tflite(
      plain, "int8", dataset.x_train, 50))
  kernels = evaluate.inspect_tflite(path).kernels
  assert len(kernels) == 4
  assert all(kernel.max_distinct_per_channel <= 2 for kernel in kernels)
  assert evaluate.agreement(path, plain, dataset.x_test) >= 0.97


def test_effective_size_counts_one_bit_per_weight(trained_bwn):
  size = binary.effective_size(trained_bwn)
  kernels = [layer.kernel.shape for layer in trained_bwn.layers
             if isinstance(layer, (binary.BinaryConv2D, binary.BinaryDense))]
  assert size["binary_weights"] == sum(int(np.prod(shape)) for shape in kernels)
  assert size["scales"] == sum(int(shape[-1]) for shape in kernels)
  assert size["binary_weights"] + size["other_params"] == trained_bwn.count_params()
  assert size["effective_bytes"] == (-(-size["binary_weights"] // 8)
                                     + 4 * (size["scales"] + size["other_params"]))
  assert size["effective_bytes"] < size["float32_bytes"] / 15


def test_chosen_layers_and_bad_input(trained_teacher):
  model = binary.binarize(trained_teacher, "binaryconnect", layers=["logits"])
  assert isinstance(model.get_layer("logits"), binary.BinaryDense)
  assert type(model.get_layer("block1_conv")).__name__ == "Conv2D"
  with pytest.raises(binary.BinaryError, match="only"):
    binary.binarize(trained_teacher, layers=["block1_bn"])
  with pytest.raises(binary.BinaryError, match="no layer"):
    binary.binarize(trained_teacher, layers=["nope"])
  with pytest.raises(binary.BinaryError, match="Unknown binarization"):
    binary.binarize(trained_teacher, "ternary")
