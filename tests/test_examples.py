"""The examples run as written, so they cannot go stale."""

import importlib.util

from conftest import REPO_ROOT


def _load(name):
  spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "examples" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_each_stage_example_runs_on_an_mnist_slice(mnist_dir, tmp_path):
  measured = _load("each_stage").main(data_dir=mnist_dir, max_train=3000,
                                      max_test=500, epochs=2, batch_size=32,
                                      output_dir=str(tmp_path))
  assert measured["accuracy"] > 0.85
  assert measured["agreement"] > 0.95
  assert measured["weight_sparsity"] > 0.6
  assert measured["gzip_bytes"] < measured["tflite_bytes"]
  assert (tmp_path / "student_int8.tflite").is_file()


def test_make_image_folder_writes_a_food11_folder_tfopt_reads(mnist_dir, tmp_path,
                                                              monkeypatch):
  import sys  # pylint: disable=g-import-not-at-top
  from tfopt.data.image_folder import load_image_folder  # pylint: disable=g-import-not-at-top
  out = tmp_path / "digits"
  monkeypatch.setattr(sys, "argv", ["make_image_folder.py", "--data_dir", mnist_dir,
                                    "--out", str(out), "--train", "40", "--val", "10",
                                    "--test", "10", "--size", "20"])
  _load("make_image_folder").main()
  folder = load_image_folder(str(out), labels_file=str(out / "labels.txt"))
  assert folder.class_names[:2] == ["zero", "one"]
  assert folder.images["train"].shape == (40, 20, 20, 3)
  assert len(folder.images["val"]) == 10 and len(folder.images["test"]) == 10
