"""4-bit weight QAT: kernels trained on LiteRT's int4 grid reach the int4 file
unchanged, pruned zeros stay zero, and the pipeline writes the QAT4 row."""

import numpy as np
import pytest
from absl import flags

from tfopt import pipeline
from tfopt.cli import compress as cli
from tfopt.config import recipe
from tfopt.config import ConfigError, ConvertConfig, DataConfig, PruneConfig, QatConfig, TrainConfig
from tfopt.core.artifacts import write_bytes_atomic
from tfopt.litert import convert
from tfopt.techniques.prune import algorithm as prune
from tfopt.techniques.qat import int4 as qat_int4

from conftest import write_idx_dataset

ONE_EPOCH = QatConfig(bits=4, epochs=1, batch_size=32)


def test_on_grid_is_litert_int4_per_channel():
  kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 6)).astype(np.float32)
  kernel[..., 2] = 0.0  # a dead channel stays zero
  rounded = qat_int4.on_grid(kernel)
  bound = np.abs(kernel).max(axis=(0, 1, 2))
  for channel in range(6):
    values = rounded[..., channel]
    if bound[channel] == 0:
      assert not values.any()
      continue
    codes = values / (bound[channel] / 7)
    assert np.allclose(codes, np.round(codes), atol=1e-4) and np.abs(codes).max() <= 7 + 1e-4
    assert np.isclose(np.abs(values).max(), bound[channel])  # the largest keeps its value
    assert len(np.unique(values)) <= 15
  assert np.array_equal(qat_int4.on_grid(rounded), rounded)


def _file_dense_kernel(path: str) -> np.ndarray:
  """The int4 file's FULLY_CONNECTED kernel, dequantized, as Keras lays it out."""
  from ai_edge_litert.interpreter import Interpreter
  interpreter = Interpreter(model_path=path)
  interpreter.allocate_tensors()
  ops = interpreter._get_ops_details()  # pylint: disable=protected-access
  index = next(op["inputs"][1] for op in ops if op["op_name"] == "FULLY_CONNECTED")
  detail = interpreter.get_tensor_details()[index]
  scales = detail["quantization_parameters"]["scales"]
  return (interpreter.get_tensor(index).astype(np.float32) * scales[:, None]).T


@pytest.fixture(scope="module")
def pruned_model(dataset, trained_teacher):
  return prune.prune(trained_teacher, dataset,
                     PruneConfig(target_sparsity=0.6, epochs=1, batch_size=32),
                     verbose=0).model


def test_trained_kernels_reach_the_int4_file_unchanged(pruned_model, dataset, tmp_path):
  result = qat_int4.qat_int4(pruned_model, dataset, ONE_EPOCH, keep_zeros=True, verbose=0)
  trained = result.model
  assert result.scheme == "pqat4"
  assert [type(layer) for layer in trained.layers] == [type(layer)
                                                      for layer in pruned_model.layers]
  for name in qat_int4.grid_layers(trained):
    kernel, before = trained.get_layer(name).kernel.numpy(), pruned_model.get_layer(
        name).kernel.numpy()
    assert np.array_equal(qat_int4.on_grid(kernel), kernel)
    assert np.all(kernel[before == 0] == 0)  # the zeros kept
    assert not np.array_equal(kernel, qat_int4.on_grid(before))  # it trained

  def file_kernel(model, name):
    path = write_bytes_atomic(str(tmp_path / f"{name}.tflite"), convert.to_tflite(
        model, "int4", dataset.x_train, 100))
    return _file_dense_kernel(path)

  keras_kernel = trained.get_layer("logits").kernel.numpy()
  assert np.allclose(file_kernel(trained, "qat4"), keras_kernel, rtol=1e-5, atol=1e-7)
  # Without the training, the file's kernel is not the Keras one.
  ptq = pruned_model.get_layer("logits").kernel.numpy()
  assert not np.allclose(file_kernel(pruned_model, "ptq"), ptq, rtol=1e-5, atol=1e-7)


def test_only_the_chosen_layers_are_trained_on_the_grid(trained_teacher, dataset):
  trained = qat_int4.qat_int4(trained_teacher, dataset, ONE_EPOCH, layers="logits",
                              verbose=0).model
  assert qat_int4.grid_layers(trained, "logits") == ["logits"]
  logits = trained.get_layer("logits").kernel.numpy()
  conv = trained.get_layer("block1_conv").kernel.numpy()
  assert np.array_equal(qat_int4.on_grid(logits), logits)
  assert not np.array_equal(qat_int4.on_grid(conv), conv)
  with pytest.raises(qat_int4.QatInt4Error, match="matches none"):
    qat_int4.qat_int4(trained_teacher, dataset, ONE_EPOCH, layers="nothing_here", verbose=0)


def test_qat_bits_is_validated():
  with pytest.raises(ConfigError, match="qat_bits=2 is invalid"):
    QatConfig(bits=2)
  with pytest.raises(ConfigError, match="keeps zeros, not clusters"):
    QatConfig(bits=4, scheme="pcqat")


def test_pipeline_writes_the_pqat4_int4_row(tmp_path):
  write_idx_dataset(tmp_path / "data" / "mnist", train=400, test=80)
  config = recipe.quick(
      data=DataConfig(data_dir=str(tmp_path / "data")),
      teacher=TrainConfig("student", epochs=2, batch_size=32),
      convert=ConvertConfig(modes=("int8", "int4"), representative_examples=50),
      qat=QatConfig(bits=4, epochs=1, batch_size=32),
      stages=("teacher", "prune", "qat"), output_dir=str(tmp_path / "out"))
  result = pipeline.run(config)
  names = [row.name for row in result.models]
  assert "pruned, PQAT4 teacher int4" in names and "pruned, PQAT4 teacher int8" not in names
  (run,) = result.qat
  assert run["scheme"] == "pqat4" and run["mode"] == "int4"
  assert run["base_ptq_accuracy"] == result.row("pruned teacher int4").accuracy
  assert abs(run["file_sparsity"] - 0.7) < 0.01
  report = (tmp_path / "out" / "report.md").read_text()
  assert "| pruned, PQAT4 teacher int4 | PQAT4 | int4 |" in report
  again = pipeline.run(config)
  assert "qat" in again.resumed_stages and again.models == result.models


def test_int4_layers_that_match_no_kernel_stop_the_run_before_training(tmp_path):
  write_idx_dataset(tmp_path / "data" / "mnist")
  config = recipe.quick(
      data=DataConfig(data_dir=str(tmp_path / "data")),
      convert=ConvertConfig(modes=("int4",), int4_layers="nothing_here"),
      qat=QatConfig(bits=4), stages=("teacher", "distill", "qat"),
      output_dir=str(tmp_path / "out"))
  with pytest.raises(qat_int4.QatInt4Error, match="matches none of 'student'"):
    pipeline.run(config)
  assert not (tmp_path / "out").exists()


def test_qat_bits_4_after_cluster_is_refused(tmp_path):
  with pytest.raises(ConfigError, match="undoes a clustered model"):
    recipe.quick(qat=QatConfig(bits=4), stages=("teacher", "prune", "cluster", "qat"))


@pytest.mark.parametrize("more, modes", [([], ("int8", "int4")),
                                         (["--quant_modes=int4"], ("int4",))])
def test_qat_bits_flag_adds_the_int4_mode_unless_modes_are_given(more, modes):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["tfopt compress", "--stages=teacher,distill,prune,qat", "--qat_bits=4",
               *more])
  try:
    config = cli.config_from_flags()
  finally:
    flags.FLAGS.unparse_flags()
  assert config.qat.bits == 4 and config.convert.modes == modes
