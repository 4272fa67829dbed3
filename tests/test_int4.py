"""Real 4-bit files from LiteRT's quantizer, run in LiteRT, and `tfopt inspect`
on pruned, clustered, int8 and int4 files read back from the files."""

import json
import os

import numpy as np
import pytest

from tfopt.cli import console
from tfopt.config import ClusterConfig, ConfigError, ConvertConfig, PruneConfig
from tfopt.core.artifacts import write_bytes_atomic
from tfopt.litert import convert, evaluate, int4
from tfopt.techniques.cluster import algorithm as cluster
from tfopt.techniques.prune import algorithm as prune


@pytest.fixture(scope="module")
def pruned_and_clustered(dataset, trained_teacher):
  """The small trained model pruned to 60 % (tfmot), then clustered to 8 values."""
  pruned = prune.prune(trained_teacher, dataset,
                       PruneConfig(target_sparsity=0.6, epochs=1, batch_size=32),
                       verbose=0).model
  clustered = cluster.cluster(pruned, dataset, ClusterConfig(number_of_clusters=8, epochs=1,
                                                             batch_size=32),
                              preserve_sparsity=True, verbose=0).model
  return pruned, clustered


def write(tmp_path, name, model, mode, dataset, **options) -> str:
  return write_bytes_atomic(str(tmp_path / f"{name}_{mode}.tflite"), convert.to_tflite(
      model, mode, dataset.x_train, 100, **options))


def inspected(capsys, path) -> dict:
  assert console.main(["inspect", path, "--json"]) == 0
  found = json.loads(capsys.readouterr().out)
  found["by_layer"] = {kernel["name"].split("/")[1]: kernel for kernel in found["kernels"]}
  return found


@pytest.mark.parametrize("mode", ["int4", "dynamic_int4"])
def test_int4_files_hold_4_bit_kernels_and_keep_accuracy(mode, trained_teacher, dataset,
                                                         tmp_path, capsys):
  int8_path = write(tmp_path, "model", trained_teacher, "int8", dataset)
  path = write(tmp_path, "model", trained_teacher, mode, dataset)
  found = inspected(capsys, path)
  assert set(found["weight_dtypes"]) == {"int4"} and len(found["kernels"]) == 4
  # Signed 4-bit, symmetric: at most 15 levels (-7..7) in any output channel.
  assert all(kernel["max_distinct_per_channel"] <= 15 for kernel in found["kernels"])
  assert max(kernel["max_distinct_per_channel"] for kernel in found["kernels"]) >= 10
  float_accuracy = evaluate.accuracy(write(tmp_path, "model", trained_teacher, "float32",
                                           dataset), dataset.x_test, dataset.y_test)
  accuracy = evaluate.accuracy(path, dataset.x_test, dataset.y_test)
  assert accuracy > float_accuracy - 0.05 and accuracy > 0.8
  assert os.path.getsize(path) < 0.75 * os.path.getsize(int8_path)  # weights packed in 4 bits


def test_mixed_precision_gives_4_bits_only_to_the_chosen_ops(trained_teacher, dataset,
                                                             tmp_path, capsys):
  path = write(tmp_path, "mixed", trained_teacher, "int4", dataset, int4_layers="logits")
  dtypes = {name: kernel["dtype"] for name, kernel in inspected(capsys, path)["by_layer"].items()}
  assert dtypes == {"block1_conv": "int8", "block2_conv": "int8", "block3_conv": "int8",
                    "logits": "int4"}
  with pytest.raises(ConfigError, match="int4_layers"):
    ConvertConfig(int4_layers="block[")


def test_validation_names_each_tensor_with_its_snr_and_cosine(trained_teacher, dataset):
  float_file = convert.to_tflite(trained_teacher, "float32")
  quantized = int4.quantize(float_file, "int4", dataset.x_train[:50])
  rows = int4.validate(float_file, quantized, dataset.x_test)
  assert len(rows) >= 5
  snrs = [row["snr_db"] for row in rows]
  assert snrs == sorted(snrs) and all(0 < snr < 100 for snr in snrs), snrs
  assert "StatefulPartitionedCall:0" in {row["tensor"] for row in rows}  # the logits
  assert all(-1 <= row["cosine"] <= 1.0001 for row in rows if row["cosine"] is not None)


def test_inspect_reads_pruned_and_clustered_files_back(pruned_and_clustered, dataset, tmp_path,
                                                       capsys):
  pruned, clustered = pruned_and_clustered
  for name, model, mode in (("pruned", pruned, "int8"), ("clustered", clustered, "int8"),
                            ("clustered", clustered, "int4")):
    found = inspected(capsys, write(tmp_path, name, model, mode, dataset))
    expected_dtype = "int4" if mode == "int4" else "int8"
    for layer, kernel in found["by_layer"].items():
      assert kernel["dtype"] == expected_dtype, (name, mode, layer)
      assert 0.59 <= kernel["sparsity"] <= 0.62, (name, mode, layer)  # tfmot's 60 %
      if name == "clustered":  # 8 shared values (+ the zeros) per kernel
        assert kernel["max_distinct_per_channel"] <= 9, (mode, layer)
    if name == "pruned":  # not clustered: many values in the larger kernels
      assert found["by_layer"]["block3_conv"]["max_distinct_per_channel"] > 30
    assert console.main(["inspect", write(tmp_path, name, model, mode, dataset)]) == 0
    table = capsys.readouterr().out
    assert "weights: " in table and ("% zeros" in table)
    row = next(line for line in table.splitlines() if line.endswith("logits/MatMul"))
    assert row.split()[1] == expected_dtype


def test_a_quantization_aware_model_is_refused_for_int4(dataset, trained_teacher):
  from tfopt.techniques.qat import algorithm as qat  # pylint: disable=g-import-not-at-top
  model = qat.apply_qat(trained_teacher)
  with pytest.raises(convert.ConversionError, match="int8 only, not int4"):
    convert.to_tflite(model, "int4", dataset.x_train, 10)


def test_a_run_with_int4_rows_reports_them_and_their_validation(tmp_path, capsys):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from conftest import write_idx_dataset  # pylint: disable=g-import-not-at-top
  from tfopt.cli import compress as cli  # pylint: disable=g-import-not-at-top
  write_idx_dataset(tmp_path / "data" / "mnist", train=160, test=40)
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["tfopt compress", "--quick", "--stages", "teacher", "--quant_modes",
               "int8,int4", "--data_dir", str(tmp_path / "data"),
               "--output_dir", str(tmp_path / "run")])
  assert cli.main(["tfopt compress"]) == 0
  report = json.loads((tmp_path / "run" / "report.json").read_text())
  rows = {row["name"]: row for row in report["models"]}
  assert rows["baseline int4"]["weight_dtypes"] == {"int4": 6}  # the teacher's 6 kernels
  assert rows["baseline int4"]["tflite_bytes"] < 0.6 * rows["baseline int8"]["tflite_bytes"]
  tensors = report["int4_validation"]["baseline int4"]
  assert tensors and all(row["snr_db"] > 0 for row in tensors)
  markdown = (tmp_path / "run" / "report.md").read_text()
  assert "## int4 files against their float file" in markdown
  assert json.loads((tmp_path / "run" / "deploy" / "model.json").read_text())  # int8 first
  capsys.readouterr()


def test_depthwise_kernels_in_an_int4_file_stay_int8_not_float(tmp_path, capsys):
  # A MobileNet-style block: LiteRT's quantizer has no 4-bit DEPTHWISE_CONV_2D,
  # so those kernels fall back to int8 (they were left float before).
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  layers = keras.layers
  inputs = keras.Input((16, 16, 3))
  x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
  x = layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
  x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
  x = layers.SeparableConv2D(24, 3, padding="same", activation="relu", name="separable")(x)
  x = layers.GlobalAveragePooling2D()(x)
  model = keras.Model(inputs, layers.Dense(4, name="logits")(x))
  images = np.random.default_rng(0).random((20, 16, 16, 3), dtype=np.float32)
  path = write_bytes_atomic(str(tmp_path / "mobile_int4.tflite"),
                            convert.to_tflite(model, "int4", images, 20))
  found = inspected(capsys, path)
  dtypes = {op: {kernel["dtype"] for kernel in found["kernels"] if kernel["op"] == op}
            for op in {kernel["op"] for kernel in found["kernels"]}}
  assert dtypes == {"CONV_2D": {"int4"}, "DEPTHWISE_CONV_2D": {"int8"},
                    "FULLY_CONNECTED": {"int4"}}
  assert len(found["kernels"]) == 5  # stem, depthwise, separable's two, logits
  assert evaluate.top1(path, images[:4]).shape == (4,)  # it runs in LiteRT
