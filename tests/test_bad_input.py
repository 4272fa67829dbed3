"""Bad input, tried like an attacker would: one row per BUILD_NOTES table row.

Every row goes through the CLI (in process: flags parsed, cli.main called) and
must end with exit code 2, one "tfopt: error:" line naming the problem and the
fix, no traceback, and no output directory.
"""

import errno
import gzip
import os

import numpy as np
import pytest
from absl import flags

from conftest import synthetic_images, write_idx, write_idx_dataset
from tfopt import pipeline
from tfopt.cli import compress as cli, measure
from tfopt.config import ConvertConfig, DataConfig, EvaluateConfig, recipe
from tfopt.core import artifacts

FLAGS = flags.FLAGS


def run_pipeline_cli(capsys, *args) -> str:
  """Runs `python -m tfopt.pipeline ARGS` in process; returns its stderr."""
  FLAGS.unparse_flags()
  FLAGS(["tfopt.pipeline", "--quick", *args])
  code = cli.main(["tfopt.pipeline"])
  error = capsys.readouterr().err
  assert code == 2, error
  assert error.startswith("tfopt: error: ") and "Traceback" not in error
  return error


def mnist_files(tmp_path) -> str:
  """Writes a small MNIST-named IDX set in tmp_path/data/mnist; returns that dir."""
  return str(write_idx_dataset(tmp_path / "data" / "mnist", train=120, test=40))


def rewrite_gz(path, change):
  with gzip.open(path, "rb") as stream:
    content = stream.read()
  with gzip.open(path, "wb") as stream:
    stream.write(change(content))


def npz(tmp_path, **arrays):
  images, labels = synthetic_images(60)
  content = dict(x_train=(images[..., 0] * 255).astype(np.uint8), y_train=labels,
                 x_test=(images[:20, ..., 0] * 255).astype(np.uint8), y_test=labels[:20])
  content.update(arrays)
  content = {key: value for key, value in content.items() if value is not None}
  os.makedirs(tmp_path / "data", exist_ok=True)
  np.savez(tmp_path / "data" / "mnist.npz", **content)


def float_images(value):
  images = np.full((60, 28, 28), 0.5, np.float32)
  images[3, 4, 5] = value
  return images


DATA_ROWS = {
    "IDX with a bad magic number": (
        lambda tmp: rewrite_gz(mnist_files(tmp) + "/train-images-idx3-ubyte.gz",
                               lambda content: b"\x00\x00\x0d\x03" + content[4:]),
        "not an unsigned-byte IDX file (bad magic number 00000d03); replace it"),
    "IDX cut short": (
        lambda tmp: rewrite_gz(mnist_files(tmp) + "/train-images-idx3-ubyte.gz",
                               lambda content: content[:-100]),
        "the file is truncated or corrupt"),
    "IDX header declaring 4 billion images": (
        lambda tmp: rewrite_gz(mnist_files(tmp) + "/train-images-idx3-ubyte.gz",
                               lambda content: content[:4] + b"\xff\xff\xff\xff" + content[8:]),
        "declares shape (4294967295, 28, 28)"),
    "empty IDX file": (
        lambda tmp: rewrite_gz(mnist_files(tmp) + "/t10k-labels-idx1-ubyte.gz",
                               lambda content: b""),
        "bad magic number empty"),
    "gzip cut in half": (
        lambda tmp: _truncate(mnist_files(tmp) + "/train-images-idx3-ubyte.gz"),
        "Replace it with an intact copy"),
    "random bytes named .gz": (
        lambda tmp: _write(mnist_files(tmp) + "/train-labels-idx1-ubyte.gz", os.urandom(64)),
        "Replace it with an intact copy"),
    "one IDX file missing": (
        lambda tmp: os.remove(mnist_files(tmp) + "/t10k-images-idx3-ubyte.gz"),
        "expected the four IDX files"),
    "fewer labels than images": (
        lambda tmp: write_idx(mnist_files(tmp) + "/train-labels-idx1-ubyte.gz",
                              np.zeros(100)),
        "x_train has shape (120, 28, 28) and y_train has shape (100,)"),
    "label 10 in a 10-class set": (
        lambda tmp: write_idx(mnist_files(tmp) + "/t10k-labels-idx1-ubyte.gz",
                              np.full(40, 10)),
        "y_test holds labels in [10, 10], outside the 10 classes 0..9"),
    "npz holding pickled objects": (
        lambda tmp: npz(tmp, y_test=np.array([{"label": 1}] * 20, dtype=object)),
        "holds pickled objects, which tfopt refuses to load"),
    "npz without x_test": (lambda tmp: npz(tmp, x_test=None), "lacks the arrays ['x_test']"),
    "npz of random bytes": (
        lambda tmp: _write(str(tmp / "data" / "mnist.npz"), os.urandom(300)),
        "is not an .npz archive (not a zip file)"),
    "NaN pixels": (lambda tmp: npz(tmp, x_train=float_images(np.nan)),
                   "x_train holds NaN or infinite pixels"),
    "infinite pixels": (lambda tmp: npz(tmp, x_train=float_images(np.inf)),
                        "x_train holds NaN or infinite pixels"),
    "float pixels outside 0..1": (lambda tmp: npz(tmp, x_train=float_images(3.0)),
                                  "Float images must already be scaled to [0, 1]"),
    "float labels": (lambda tmp: npz(tmp, y_train=np.zeros(60, np.float32)),
                     "labels must be integers"),
}


def _truncate(path):
  with open(path, "r+b") as stream:
    stream.truncate(os.path.getsize(path) // 2)


def _write(path, content):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as stream:
    stream.write(content)


@pytest.mark.parametrize("row", DATA_ROWS)
def test_bad_data_file(row, tmp_path, capsys):
  make_bad, message = DATA_ROWS[row]
  make_bad(tmp_path)
  before = {name: os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(tmp_path / "data") for name in names}
  error = run_pipeline_cli(capsys, f"--data_dir={tmp_path / 'data'}",
                           f"--output_dir={tmp_path / 'out'}")
  assert message in error
  assert not (tmp_path / "out").exists()
  assert before == {name: os.path.getsize(os.path.join(root, name))
                    for root, _, names in os.walk(tmp_path / "data") for name in names}


@pytest.mark.parametrize("make_model, message", [
    (lambda tmp: _write(str(tmp / "m.keras"), os.urandom(500)),
     "m.keras is not a readable .keras file (File is not a zip file); it is truncated"),
    (lambda tmp: _write(str(tmp / "m.keras"), b""), "save it again with model.save"),
    (lambda tmp: _write(str(tmp / "m.h5"), b"\x89HDF\r\n\x1a\n" + os.urandom(200)),
     "m.h5 is not a readable .h5 file"),
])
def test_corrupt_model_file(make_model, message, tmp_path, capsys):
  make_model(tmp_path)
  model = next(name for name in os.listdir(tmp_path) if name.startswith("m."))
  error = run_pipeline_cli(capsys, f"--model={tmp_path / model}",
                           f"--data_dir={mnist_files(tmp_path)}/..",
                           f"--output_dir={tmp_path / 'out'}")
  assert message in error
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("output_dir, message", [
    ("/sys/tfopt-out", "Cannot create the output directory '/sys/tfopt-out'"),
    ("{tmp}/a_file/out", "Cannot create the output directory"),
    ("{tmp}/a_file", "is a file; give a directory path"),
])
def test_unusable_output_dir(output_dir, message, tmp_path, capsys):
  (tmp_path / "a_file").write_text("mine")
  error = run_pipeline_cli(capsys, f"--data_dir={mnist_files(tmp_path)}/..",
                           f"--output_dir={output_dir.format(tmp=tmp_path)}")
  assert message in error
  assert (tmp_path / "a_file").read_text() == "mine"


def test_multi_worker_without_tf_config(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  error = run_pipeline_cli(capsys, "--strategy=multi_worker",
                           f"--data_dir={mnist_files(tmp_path)}/..",
                           f"--output_dir={tmp_path / 'out'}")
  assert "reads the cluster from the TF_CONFIG environment variable" in error
  assert not (tmp_path / "out").exists()


def test_disk_full_mid_run_keeps_finished_work_and_resumes(tmp_path, monkeypatch):
  """The disk fills up while distill writes: teacher's work survives."""
  data_dir = mnist_files(tmp_path) + "/.."
  config = recipe.quick(
      data=DataConfig(data_dir=data_dir), stages=("teacher", "distill"),
      output_dir=str(tmp_path / "out"), convert=ConvertConfig(representative_examples=20),
      evaluate=EvaluateConfig(latency_runs=2, latency_warmup=1, latency_breakdown=False))
  from tfopt.config import registry  # pylint: disable=g-import-not-at-top
  real_fsync, distill = os.fsync, registry.get("distill")
  full = []

  def fsync(descriptor):
    if full:
      raise OSError(errno.ENOSPC, "No space left on device")
    real_fsync(descriptor)

  def distill_on_a_full_disk(context):
    full.append(True)
    return type(distill).run(distill, context)

  monkeypatch.setattr(os, "fsync", fsync)
  monkeypatch.setattr(distill, "run", distill_on_a_full_disk)
  with pytest.raises(artifacts.ArtifactWriteError, match="the disk is full: free some space"):
    pipeline.run(config)
  output = tmp_path / "out"
  assert not [name for name in os.listdir(output)
              if name.startswith(artifacts.TEMPORARY_PREFIX)]
  manifest = artifacts.Manifest(str(output))
  assert [stage["stage"] for stage in manifest.stages] == ["teacher"]
  assert manifest.changed_files(manifest.stages[0]) == []
  monkeypatch.undo()
  assert pipeline.run(config).resumed_stages == ["teacher"]


# --- the evaluator: python -m tfopt.cli.measure ---------------------------------

@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
  from tfopt.keras_io import models
  from tfopt.litert import convert
  directory = tmp_path_factory.mktemp("tflite")
  model = models.build_model("student", (28, 28, 1), 10)
  images, _ = synthetic_images(20)
  path = directory / "tiny_int8.tflite"
  path.write_bytes(convert.to_tflite(model, "int8", images, 20))
  return path


def run_measure(capsys, *args):
  code = measure.main([str(arg) for arg in args])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_measure_reports_a_real_file(tiny_tflite, tmp_path, capsys):
  code, out, _ = run_measure(capsys, tiny_tflite, f"--data_dir={mnist_files(tmp_path)}/..",
                             "--latency_runs=3")
  assert code == 0
  assert f"{os.path.getsize(tiny_tflite):,} B" in out and "int8 input" in out
  assert "on 40 mnist test images" in out


@pytest.mark.parametrize("make_file, message", [
    (lambda tmp, tflite: tmp / "none.tflite", "does not exist; give the path of a .tflite"),
    (lambda tmp, tflite: _copy_prefix(tflite, tmp / "cut.tflite", 0.5),
     "is not a valid .tflite model"),
    (lambda tmp, tflite: _copy_prefix(tflite, tmp / "empty.tflite", 0), "not a valid .tflite"),
    (lambda tmp, tflite: _written(tmp / "model.keras", b"PK\x03\x04" + os.urandom(100)),
     "A Keras model must be converted first"),
    (lambda tmp, tflite: _written(tmp / "photo.png", b"\x89PNG\r\n" + os.urandom(100)),
     "not a valid .tflite model"),
    (lambda tmp, tflite: _directory(tmp / "bundle"), "a directory without model.json"),
])
def test_measure_refuses_what_is_not_a_tflite_file(make_file, message, tiny_tflite,
                                                    tmp_path, capsys):
  path = make_file(tmp_path, tiny_tflite)
  code, _, error = run_measure(capsys, path, f"--data_dir={mnist_files(tmp_path)}/..")
  assert code == 2 and message in error and "Traceback" not in error


def test_measure_refuses_data_of_another_shape(tiny_tflite, tmp_path, capsys):
  images = np.zeros((30, 32, 32, 3), np.uint8)
  labels = np.arange(30) % 10
  np.savez(tmp_path / "cifar10.npz", x_train=images, y_train=labels, x_test=images,
           y_test=labels)
  code, _, error = run_measure(capsys, tiny_tflite, "--dataset=cifar10",
                               f"--data_dir={tmp_path}")
  assert code == 2 and "takes images of shape (28, 28, 1), got (32, 32, 3)" in error


def _copy_prefix(source, path, share):
  content = source.read_bytes()
  path.write_bytes(content[:int(len(content) * share)])
  return path


def _written(path, content):
  path.write_bytes(content)
  return path


def _directory(path):
  path.mkdir()
  return path


@pytest.mark.parametrize("args, message", [
    (["--bogus", "x.tflite"], "unrecognized arguments: --bogus"),
    (["x.tflite", "--max_test_examples", "abc"], "--max_test_examples: invalid int value"),
    ([], "the following arguments are required: model"),
])
def test_measure_and_inspect_flags_are_one_error_line(args, message, capsys):
  from tfopt.cli import inspect as inspect_file  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as exited:
    measure.main(args)
  error = capsys.readouterr().err
  assert exited.value.code == 2 and error.count("\n") == 1, error
  assert error.startswith("tfopt: error: ") and message in error and "usage:" not in error
  with pytest.raises(SystemExit) as exited:
    inspect_file.main(["--bogus"])
  error = capsys.readouterr().err
  assert exited.value.code == 2 and error.startswith("tfopt: error: tfopt inspect: ")
