"""Data sets: MNIST, Fashion-MNIST, CIFAR-10 from a local directory or a keras
download, or a folder of the user's own images (tfopt.data.image_folder).

A local directory may hold the original IDX files (``train-images-idx3-ubyte.gz``
and its three siblings, gzipped or not; MNIST and Fashion-MNIST) or one
``<name>.npz`` with ``x_train, y_train, x_test, y_test`` (any of the three, e.g.
CIFAR-10 as keras.datasets returns it); either directly or in a subfolder
named after the data set.
Without a directory the TFOPT_DATA_DIR environment variable is tried, then
``keras.datasets`` (download + cache).
"""

import dataclasses
import gzip
import os
import struct
import tokenize
import zipfile
import zlib
from typing import Optional, Tuple

import numpy as np

from tfopt.config import DataConfig
from tfopt.core.errors import TfoptError
from tfopt.data import image_folder
from tfopt.data.image_files import is_image_files

__all__ = ["DataError", "Dataset", "load_dataset", "read_idx", "take_images", "DATA_DIR_ENV"]

DATA_DIR_ENV = "TFOPT_DATA_DIR"
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                "horse", "ship", "truck"],
}
_IDX_UBYTE = 0x08


# Named data sets whose images a horizontal flip changes (augmentation translates only).
NO_FLIP = ("mnist",)


class DataError(TfoptError, ValueError):
  """Data files are missing, unreadable or inconsistent."""


@dataclasses.dataclass
class Dataset:
  """Images as float32 NHWC in the model's input range, integer labels.

  x_train / x_val / x_test are numpy arrays, or for image folders
  tfopt.data.image_files.ImageFiles: the same shape and indexing, decoded from
  disk when read (train.fit streams them through tf.data).

  Pixel value p (0..255) is stored as low + p / 255 * (high - low), with
  (low, high) = input_range; (0, 1) unless a model asks for another range.
  The validation split comes from the training set unless the data has its
  own; the test set is kept for the final measurements only.
  """
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  class_names: list
  source: str
  input_range: Tuple[float, float] = (0.0, 1.0)
  augment: bool = False
  augment_flip: bool = True  # augmentation flips too (not for digits)

  @property
  def input_shape(self) -> Tuple[int, ...]:
    return tuple(self.x_train.shape[1:])

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def describe(self) -> str:
    """Split sizes, image shape, pixel range, and how folder images are read."""
    text = (f"{len(self.x_train)} train / {len(self.x_val)} validation / "
            f"{len(self.x_test)} test images, {'x'.join(map(str, self.input_shape))}, "
            f"pixels 0..255 -> {self.input_range[0]:g}..{self.input_range[1]:g}")
    if is_image_files(self.x_train):
      text += (", decoded from disk per batch" + (" (kept in memory after the first "
               "epoch)" if self.x_train.cached else ""))
    return text + ((", training images randomly flipped and translated" if self.augment_flip
                    else ", training images randomly translated") if self.augment else "")


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file of unsigned bytes (gzipped if the name ends in .gz).

  Raises:
    DataError: the file is not a valid unsigned-byte IDX file.
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as stream:
      content = stream.read()
  except (OSError, EOFError) as error:
    raise DataError(f"Cannot read {path}: {error}. Replace it with an intact "
                    "copy of the original file.") from error
  if len(content) < 4 or content[0:2] != b"\x00\x00" or content[2] != _IDX_UBYTE:
    raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic "
                    f"number {content[:4].hex() or 'empty'}); replace it with "
                    "an intact copy of the original file.")
  ndims = content[3]
  header_size = 4 + 4 * ndims
  if ndims == 0 or len(content) < header_size:
    raise DataError(f"{path} has a truncated or invalid IDX header.")
  shape = struct.unpack(f">{ndims}I", content[4:header_size])
  expected = int(np.prod(shape, dtype=np.int64))
  if len(content) - header_size != expected:
    raise DataError(f"{path} declares shape {shape} ({expected} bytes) but "
                    f"holds {len(content) - header_size} bytes of data: the "
                    "file is truncated or corrupt.")
  return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def _find_idx_files(directory: str) -> Optional[dict]:
  found = {}
  for key, stem in IDX_FILES.items():
    candidates = [os.path.join(directory, stem + ext) for ext in (".gz", "")]
    existing = [path for path in candidates if os.path.isfile(path)]
    if not existing:
      return None
    found[key] = existing[0]
  return found


def _load_npz(path: str) -> dict:
  """x_train, y_train, x_test, y_test from an .npz of plain arrays (never pickle)."""
  try:
    with open(path, "rb") as stream:
      if stream.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DataError(f"{path} is not an .npz archive (not a zip file); "
                        "write it with np.savez.")
    with np.load(path, allow_pickle=False) as archive:
      missing = [key for key in IDX_FILES if key not in archive.files]
      if missing:
        raise DataError(f"{path} lacks the arrays {missing}; it must hold "
                        "x_train, y_train, x_test and y_test.")
      return {key: archive[key] for key in IDX_FILES}
  except DataError:
    raise
  except ValueError as error:
    if "allow_pickle" in str(error):  # object arrays need pickle: refused.
      raise DataError(f"{path} holds pickled objects, which tfopt refuses to "
                      "load; save plain numeric arrays with np.savez.") from error
    raise _corrupt_npz(path, error) from error
  except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, SyntaxError,
          tokenize.TokenError) as error:  # numpy parses a damaged header as Python
    raise _corrupt_npz(path, error) from error


def _corrupt_npz(path: str, error: Exception) -> DataError:
  return DataError(f"Cannot read {path} as an .npz archive ({error}); the file "
                   "is truncated or corrupt: write it again with np.savez.")


def _load_local(name: str, data_dir: str) -> Tuple[dict, str]:
  if not os.path.isdir(data_dir):
    raise DataError(f"Data directory {data_dir!r} does not exist. Point "
                    f"--data_dir or {DATA_DIR_ENV} at a directory holding the "
                    f"{name} IDX files or {name}.npz.")
  searched = []
  for directory in (os.path.join(data_dir, name), data_dir):
    idx_paths = _find_idx_files(directory)
    if idx_paths:
      return {key: read_idx(path) for key, path in idx_paths.items()}, directory
    npz_path = os.path.join(directory, name + ".npz")
    if os.path.isfile(npz_path):
      return _load_npz(npz_path), npz_path
    searched.append(directory)
  raise DataError(
      f"No {name} data found in {' or '.join(searched)}: expected the four "
      f"IDX files ({', '.join(v + '.gz' for v in IDX_FILES.values())}) or "
      f"{name}.npz with x_train, y_train, x_test, y_test.")


def _download(name: str) -> Tuple[dict, str]:
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  loader = getattr(keras.datasets, name)
  try:
    (x_train, y_train), (x_test, y_test) = loader.load_data()
  except Exception as error:  # network failures come in many types.
    raise DataError(
        f"Could not download {name} through keras.datasets ({error}). "
        f"Offline, point --data_dir or the {DATA_DIR_ENV} environment "
        f"variable at a directory holding the original {name} IDX .gz files "
        f"(or {name}.npz with x_train, y_train, x_test, y_test).") from error
  arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  return arrays, f"keras.datasets.{name}"


def _check_arrays(arrays: dict, num_classes: int, source: str):
  for split in ("train", "test"):
    images, labels = arrays["x_" + split], arrays["y_" + split]
    if is_image_files(images):  # checked by the folder reader; labels below
      images = np.zeros((len(images), 1, 1, 1), np.uint8)
    if (images.ndim not in (3, 4) or labels.ndim != 1
        or len(images) != len(labels) or not len(images)):
      raise DataError(f"{source}: x_{split} has shape {images.shape} and "
                      f"y_{split} has shape {labels.shape}; expected N images "
                      "(N, H, W[, C]) and N integer labels (N,) with N > 0 "
                      "(one-hot labels: store their argmax).")
    if not np.issubdtype(labels.dtype, np.integer):
      raise DataError(f"{source}: y_{split} has dtype {labels.dtype}; labels "
                      "must be integers.")
    if labels.min() < 0 or labels.max() >= num_classes:
      raise DataError(f"{source}: y_{split} holds labels in [{labels.min()}, "
                      f"{labels.max()}], outside the {num_classes} classes "
                      f"0..{num_classes - 1}.")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
      raise DataError(f"{source}: x_{split} holds NaN or infinite pixels.")
  if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
    raise DataError(f"{source}: train images {arrays['x_train'].shape[1:]} and "
                    f"test images {arrays['x_test'].shape[1:]} differ in size.")


def _flat_labels(labels: np.ndarray) -> np.ndarray:
  """CIFAR-10 labels come as (N, 1); every other check wants (N,)."""
  return labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels


def _to_float_images(images, input_range: Tuple[float, float]):
  """uint8 pixels (or floats in [0, 1]) -> float32 in input_range; image
  files stay on disk, read in that range."""
  if is_image_files(images):
    return images.with_range(input_range)
  if images.ndim == 3:
    images = images[..., np.newaxis]
  if images.dtype == np.uint8:
    unit = images.astype(np.float32) / 255.0
  else:
    unit = images.astype(np.float32)
    if unit.min() < 0 or unit.max() > 1:
      raise DataError("Float images must already be scaled to [0, 1]; found "
                      f"values in [{unit.min()}, {unit.max()}].")
  low, high = input_range
  return unit if (low, high) == (0, 1) else unit * np.float32(high - low) + np.float32(low)


def take_images(images, indices):
  """images[indices]; image files give the chosen files, still undecoded."""
  return images.subset(indices) if is_image_files(images) else images[indices]


def _load_folder(config: DataConfig, seed: int) -> Tuple[dict, str, list]:
  """A user's image folder as arrays; a seeded test share if it has no test split."""
  folder = image_folder.load_image_folder(config.data_dir, config.labels_file,
                                          config.image_size, config.color_mode)
  arrays = {f"{key}_{split}": value for key, by_split in
            (("x", folder.images), ("y", folder.labels))
            for split, value in by_split.items()}
  if "test" not in folder.images:
    order = np.random.default_rng(seed + 1).permutation(len(arrays["x_train"]))
    test_count = max(1, int(round(len(order) * config.test_fraction)))
    if test_count >= len(order):
      raise DataError(f"{config.data_dir} holds {len(order)} images: too few "
                      "to hold out a test split.")
    for key in ("x", "y"):
      whole = arrays[f"{key}_train"]
      arrays[f"{key}_test"], arrays[f"{key}_train"] = (take_images(whole, order[:test_count]),
                                                       take_images(whole, order[test_count:]))
  return arrays, f"{config.data_dir} ({folder.layout})", folder.class_names


def load_dataset(config: DataConfig, seed: int = 0) -> Dataset:
  """Loads, checks, scales and splits a data set.

  Args:
    config: which data set and where from (see DataConfig).
    seed: seeds the shuffle that picks the validation split.

  Returns:
    A Dataset.

  Raises:
    DataError: the data is missing, unreadable or inconsistent.
  """
  data_dir = config.data_dir or os.environ.get(DATA_DIR_ENV) or None
  if config.dataset == "folder":
    arrays, source, class_names = _load_folder(config, seed)
  else:
    if data_dir:
      arrays, source = _load_local(config.dataset, data_dir)
    else:
      arrays, source = _download(config.dataset)
    class_names = CLASS_NAMES[config.dataset]
  arrays = {key: _flat_labels(value) if key.startswith("y_") else value
            for key, value in arrays.items()}
  _check_arrays(arrays, len(class_names), source)

  x_train, y_train = arrays["x_train"], arrays["y_train"]
  order = np.random.default_rng(seed).permutation(len(x_train))
  if config.max_train_examples:
    order = order[:config.max_train_examples]
  if "x_val" in arrays:  # the data's own validation split
    train_index, x_val, y_val = order, arrays["x_val"], arrays["y_val"]
  else:
    val_count = max(1, int(round(len(order) * config.validation_fraction)))
    if val_count >= len(order):
      raise DataError(f"{len(order)} training examples leave nothing to train "
                      f"on after a validation fraction of "
                      f"{config.validation_fraction}.")
    train_index, val_index = order[val_count:], order[:val_count]
    x_val, y_val = take_images(x_train, val_index), y_train[val_index]
  test_count = min(config.max_test_examples or len(arrays["x_test"]), len(arrays["x_test"]))
  input_range = tuple(float(value) for value in (config.input_range or (0.0, 1.0)))
  return Dataset(
      name=config.dataset,
      x_train=_to_float_images(take_images(x_train, train_index), input_range),
      y_train=y_train[train_index].astype(np.int32),
      x_val=_to_float_images(x_val, input_range),
      y_val=y_val.astype(np.int32),
      x_test=_to_float_images(take_images(arrays["x_test"], np.arange(test_count)), input_range),
      y_test=arrays["y_test"][:test_count].astype(np.int32),
      class_names=class_names,
      source=source,
      input_range=input_range,
      augment=bool(config.augment) or (config.dataset == "folder" and config.augment is None),
      augment_flip=config.dataset not in NO_FLIP,
  )
