import os

import numpy as np
import pytest

from tfopt.core._keras import keras
from tfopt.core.artifacts import write_bytes_atomic
from tfopt.litert import convert, evaluate
from tfopt.training import train


@pytest.fixture(scope="module")
def tflite_files(trained_teacher, dataset, tmp_path_factory):
  directory = tmp_path_factory.mktemp("tflite")
  files = {}
  for mode in convert.MODES:
    path = str(directory / f"{mode}.tflite")
    write_bytes_atomic(path, convert.to_tflite(trained_teacher, mode,
                                               dataset.x_train, 100))
    files[mode] = path
  return files


def test_int8_is_smaller_than_float32(tflite_files):
  float_size = os.path.getsize(tflite_files["float32"])
  assert os.path.getsize(tflite_files["int8"]) < 0.5 * float_size
  assert os.path.getsize(tflite_files["dynamic_range"]) < 0.5 * float_size


def test_int8_file_has_int8_input_output_and_weights(tflite_files):
  contents = evaluate.inspect_tflite(tflite_files["int8"])
  assert contents.input_dtype == "int8" and contents.output_dtype == "int8"
  assert set(contents.weight_dtypes) == {"int8"}
  assert contents.ops.get("CONV_2D", 0) == 3
  float_contents = evaluate.inspect_tflite(tflite_files["float32"])
  assert float_contents.input_dtype == "float32"
  assert set(float_contents.weight_dtypes) == {"float32"}
  assert float_contents.weight_params == contents.weight_params


def test_float16_and_int16x8_store_what_they_promise(tflite_files, dataset):
  sizes = {mode: os.path.getsize(path) for mode, path in tflite_files.items()}
  assert sizes["float16"] < 0.6 * sizes["float32"]
  half = evaluate.inspect_tflite(tflite_files["float16"])
  assert set(half.weight_dtypes) == {"float16"} and half.input_dtype == "float32"
  wide = evaluate.TFLiteClassifier(tflite_files["int16x8"])
  activation_dtypes = {np.dtype(detail["dtype"]).name
                       for detail in wide.interpreter.get_tensor_details()}
  assert "int16" in activation_dtypes
  assert set(evaluate.inspect_tflite(tflite_files["int16x8"]).weight_dtypes) == {"int8"}


def test_kernel_stats_count_distinct_values_per_channel(tflite_files):
  for kernel in evaluate.inspect_tflite(tflite_files["int8"]).kernels:
    assert 2 <= kernel.max_distinct_per_channel <= kernel.distinct <= 255
    assert kernel.size == int(np.prod(kernel.shape))


def test_tflite_accuracy_matches_keras(tflite_files, trained_teacher, dataset):
  keras_accuracy = train.accuracy(trained_teacher, dataset.x_test, dataset.y_test)
  for mode, path in tflite_files.items():
    measured = evaluate.accuracy(path, dataset.x_test, dataset.y_test, batch_size=64)
    assert abs(measured - keras_accuracy) <= 0.02, mode
    assert evaluate.agreement(path, trained_teacher, dataset.x_test) >= 0.97


def test_batched_run_equals_one_by_one(tflite_files, dataset):
  classifier = evaluate.TFLiteClassifier(tflite_files["int8"])
  batched = classifier.predict(dataset.x_test[:10], batch_size=10)
  single = np.concatenate([classifier.run(dataset.x_test[i:i + 1]) for i in range(10)])
  np.testing.assert_allclose(batched, single, atol=1e-6)


def test_int8_input_uses_the_files_scale_and_zero_point(tflite_files):
  classifier = evaluate.TFLiteClassifier(tflite_files["int8"])
  scale, zero_point = classifier.input["quantization"]
  quantized = classifier.quantize_input(np.array([[0.0, 1.0, 2.0]], np.float32))
  assert quantized.dtype == np.int8
  assert quantized[0, 0] == zero_point
  assert quantized[0, 1] == np.clip(round(1.0 / scale + zero_point), -128, 127)
  assert quantized[0, 2] == 127  # clipped


def test_latency_is_measured(tflite_files, dataset):
  latency = evaluate.latency_us(tflite_files["int8"], dataset.x_test[0],
                                warmup=2, runs=10)
  assert 0 < latency < 1e6


def test_one_measurement_of_a_file_gives_what_every_row_reports(tflite_files, dataset):
  from tfopt.core.artifacts import gzip_size  # pylint: disable=g-import-not-at-top
  path = tflite_files["int8"]
  measured = evaluate.measure_file(path, dataset.x_test[0], dataset.x_test, dataset.y_test,
                                   warmup=2, runs=10)
  assert measured.tflite_bytes == os.path.getsize(path)
  assert measured.gzip_bytes == gzip_size(path) < measured.tflite_bytes
  assert measured.accuracy == evaluate.accuracy(path, dataset.x_test, dataset.y_test)
  assert np.array_equal(measured.top1, evaluate.top1(path, dataset.x_test))
  assert 0 < measured.latency_us < 1e6
  timed_only = evaluate.measure_file(path, dataset.x_test[0], warmup=1, runs=3)
  assert timed_only.top1 is None and timed_only.accuracy is None


def test_corrupt_or_missing_file_is_refused(tmp_path, dataset):
  bad = tmp_path / "bad.tflite"
  bad.write_bytes(b"definitely not a flatbuffer" * 10)
  with pytest.raises(evaluate.TFLiteError, match="not a valid .tflite"):
    evaluate.accuracy(str(bad), dataset.x_test, dataset.y_test)
  with pytest.raises(evaluate.TFLiteError, match="does not exist"):
    evaluate.accuracy(str(tmp_path / "nope.tflite"), dataset.x_test, dataset.y_test)


def test_wrong_image_shape_is_refused(tflite_files):
  classifier = evaluate.TFLiteClassifier(tflite_files["float32"])
  with pytest.raises(evaluate.TFLiteError, match="takes images of shape"):
    classifier.predict(np.zeros((2, 32, 32, 3), np.float32))


def test_conversion_errors(trained_teacher):
  with pytest.raises(convert.ConversionError, match="Unknown conversion mode"):
    convert.to_tflite(trained_teacher, "int3")
  for mode in convert.CALIBRATED_MODES:
    with pytest.raises(convert.ConversionError, match="representative"):
      convert.to_tflite(trained_teacher, mode)


def test_quantization_debugger_ranks_the_layer_that_loses_precision_first():
  from tfopt.litert import quant_debug  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(8, 3, padding="same", name="good_conv")(inputs)
  x = keras.layers.Flatten()(keras.layers.ReLU()(x))
  x = keras.layers.Dense(16, name="bad_dense")(x)
  model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
  kernel = model.get_layer("bad_dense").kernel.numpy()
  kernel[0, :] = 200.0  # one huge weight per column: its int8 scale rounds the rest away
  model.get_layer("bad_dense").kernel.assign(kernel)
  images = np.random.default_rng(0).random((64, 8, 8, 3)).astype(np.float32)
  errors = quant_debug.int8_layer_errors(model, images, 64, 32)
  assert errors[0].layer == "bad_dense" and errors[0].op == "FULLY_CONNECTED"
  assert errors[0].rmse_over_scale > quant_debug.ROUNDING_ONLY * 1.5
  assert [error.rmse_over_scale for error in errors] == sorted(
      (error.rmse_over_scale for error in errors), reverse=True)
  assert "good_conv" in {error.layer for error in errors}


def test_int8_conversion_keeps_the_converter_noise_out_of_stderr(capfd, trained_teacher,
                                                                  dataset):
  """TF's per-conversion lines are dropped; the conversion is unchanged."""
  content = convert.to_tflite(trained_teacher, "int8", dataset.x_train, 20)
  assert content[4:8] == b"TFL3"
  err = capfd.readouterr().err
  assert "fully_quantize" not in err and "Statistics for quantized inputs" not in err
