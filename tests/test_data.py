import gzip

import numpy as np
import pytest

from conftest import write_idx, write_idx_dataset
from tfopt.config import DataConfig
from tfopt.data import datasets as data
from tfopt.data.datasets import DataError, load_dataset, read_idx


def test_read_idx_gzip_and_raw(tmp_path):
  array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  write_idx(tmp_path / "a.gz", array)
  write_idx(tmp_path / "b", array)
  np.testing.assert_array_equal(read_idx(str(tmp_path / "a.gz")), array)
  np.testing.assert_array_equal(read_idx(str(tmp_path / "b")), array)


def test_read_idx_bad_magic(tmp_path):
  path = tmp_path / "bad.gz"
  with gzip.open(path, "wb") as stream:
    stream.write(b"\x12\x34\x08\x01" + b"\x00" * 8)
  with pytest.raises(DataError, match="bad magic"):
    read_idx(str(path))


def test_read_idx_truncated(tmp_path):
  path = tmp_path / "short"
  write_idx(path, np.zeros((10, 4, 4)))
  content = path.read_bytes()
  path.write_bytes(content[:-5])
  with pytest.raises(DataError, match="truncated or corrupt"):
    read_idx(str(path))


def test_read_idx_not_gzip(tmp_path):
  path = tmp_path / "fake.gz"
  path.write_bytes(b"this is not gzip at all")
  with pytest.raises(DataError, match="Cannot read"):
    read_idx(str(path))


def test_local_idx_dir_loads_and_splits(tmp_path):
  write_idx_dataset(tmp_path / "mnist", train=100, test=30)
  loaded = load_dataset(DataConfig(data_dir=str(tmp_path), validation_fraction=0.2))
  assert loaded.x_train.shape == (80, 28, 28, 1)
  assert loaded.x_val.shape == (20, 28, 28, 1)
  assert loaded.x_test.shape == (30, 28, 28, 1)
  assert loaded.x_train.dtype == np.float32
  assert 0.0 <= loaded.x_train.min() and loaded.x_train.max() <= 1.0
  assert loaded.num_classes == 10


def test_env_var_is_used(tmp_path, monkeypatch):
  write_idx_dataset(tmp_path / "mnist", train=50, test=10)
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
  assert load_dataset(DataConfig()).source == str(tmp_path / "mnist")


def test_npz_loads(tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "mnist.npz",
           x_train=rng.integers(0, 255, (50, 28, 28), dtype=np.uint8),
           y_train=rng.integers(0, 10, 50), x_test=rng.integers(
               0, 255, (10, 28, 28), dtype=np.uint8),
           y_test=rng.integers(0, 10, 10))
  loaded = load_dataset(DataConfig(data_dir=str(tmp_path)))
  assert len(loaded.x_train) + len(loaded.x_val) == 50
  assert len(loaded.x_test) == 10


def test_npz_with_pickled_objects_is_refused(tmp_path):
  objects = np.array([{"evil": 1}] * 4, dtype=object)
  np.savez(tmp_path / "mnist.npz", x_train=objects, y_train=objects,
           x_test=objects, y_test=objects)
  with pytest.raises(DataError, match="pickled objects"):
    load_dataset(DataConfig(data_dir=str(tmp_path)))


def test_labels_out_of_range_are_refused(tmp_path):
  write_idx_dataset(tmp_path / "mnist", train=20, test=10)
  write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.full(20, 12))
  with pytest.raises(DataError, match="outside the 10 classes"):
    load_dataset(DataConfig(data_dir=str(tmp_path)))


def test_mismatched_counts_are_refused(tmp_path):
  write_idx_dataset(tmp_path / "mnist", train=20, test=10)
  write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.zeros(19))
  with pytest.raises(DataError, match="expected N images"):
    load_dataset(DataConfig(data_dir=str(tmp_path)))


def test_missing_files_message_says_what_to_supply(tmp_path):
  with pytest.raises(DataError) as error:
    load_dataset(DataConfig(data_dir=str(tmp_path)))
  assert "train-images-idx3-ubyte.gz" in str(error.value)
  assert "mnist.npz" in str(error.value)


def test_missing_directory(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    load_dataset(DataConfig(data_dir=str(tmp_path / "nowhere")))


def test_download_failure_explains_offline_option(monkeypatch):
  from tfopt.core._keras import keras

  def fail():
    raise OSError("network is unreachable")
  monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
  monkeypatch.setattr(keras.datasets.mnist, "load_data", fail)
  with pytest.raises(DataError) as error:
    load_dataset(DataConfig())
  assert "TFOPT_DATA_DIR" in str(error.value)
  assert "--data_dir" in str(error.value)


def test_real_mnist_slice(mnist_dir):
  loaded = load_dataset(DataConfig(data_dir=mnist_dir, max_train_examples=1000,
                                   max_test_examples=500))
  assert loaded.x_train.shape == (900, 28, 28, 1)
  assert loaded.x_val.shape == (100, 28, 28, 1)
  assert loaded.x_test.shape == (500, 28, 28, 1)
  assert set(np.unique(loaded.y_test)) == set(range(10))
  # The validation split comes from the training set, never from the test set.
  full = load_dataset(DataConfig(data_dir=mnist_dir))
  assert len(full.x_train) + len(full.x_val) == 60000
  assert len(full.x_test) == 10000


def test_fashion_mnist_from_its_own_folder(tmp_path):
  write_idx_dataset(tmp_path / "fashion_mnist", train=50, test=10)
  loaded = load_dataset(DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path)))
  assert loaded.class_names[0] == "T-shirt/top" and loaded.num_classes == 10
  assert loaded.source == str(tmp_path / "fashion_mnist")


def test_mnist_folder_is_not_taken_for_fashion_mnist(tmp_path):
  write_idx_dataset(tmp_path / "mnist", train=50, test=10)
  with pytest.raises(DataError, match="No fashion_mnist data"):
    load_dataset(DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path)))


def _cifar_like(count, seed):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8),
          rng.integers(0, 10, size=(count, 1)).astype(np.uint8))


def test_cifar10_npz_as_keras_saves_it(tmp_path):
  (tmp_path / "cifar10").mkdir()
  x_train, y_train = _cifar_like(50, 0)
  x_test, y_test = _cifar_like(20, 1)
  np.savez(tmp_path / "cifar10" / "cifar10.npz", x_train=x_train, y_train=y_train,
           x_test=x_test, y_test=y_test)
  dataset = load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
  assert dataset.input_shape == (32, 32, 3) and dataset.num_classes == 10
  assert dataset.y_train.shape == (45,) and dataset.y_test.shape == (20,)
  assert dataset.class_names[0] == "airplane"
  assert 0.0 <= dataset.x_test.min() and dataset.x_test.max() <= 1.0


def test_one_hot_labels_are_refused(tmp_path):
  x_train, _ = _cifar_like(30, 0)
  one_hot = np.eye(10, dtype=np.uint8)[np.arange(30) % 10]
  np.savez(tmp_path / "cifar10.npz", x_train=x_train, y_train=one_hot,
           x_test=x_train, y_test=one_hot)
  with pytest.raises(DataError, match="one-hot labels"):
    load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
