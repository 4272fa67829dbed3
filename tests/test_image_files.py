"""Image folders stream from disk: numpy-like reading, tf.data batches, errors."""

import os

import numpy as np
import pytest
from PIL import Image

from tfopt.config import DataConfig
from tfopt.core._keras import keras
from tfopt.core.errors import ImageFolderError
from tfopt.data import image_files
from tfopt.data.datasets import load_dataset
from tfopt.run import resume
from tfopt.training import train

COLORS = ((220, 30, 30), (30, 220, 30), (30, 30, 220))


def _folder(root, per_class=8, size=(20, 14)):
  """Class subfolders of noisy JPEGs whose color is the class; one per label."""
  rng = np.random.default_rng(0)
  for label, color in enumerate(COLORS):
    os.makedirs(root / f"class{label}", exist_ok=True)
    for index in range(per_class):
      pixels = rng.integers(0, 60, (size[1], size[0], 3)) + np.array(color) * 0.7
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
          root / f"class{label}" / f"{index}.jpg", quality=90)
  return str(root)


def _files(root):
  return sorted(os.path.join(folder, name) for folder, _, names in os.walk(root)
                for name in names if name.endswith(".jpg"))


def test_indexing_decodes_like_pillow_and_scales_to_the_input_range(tmp_path):
  files = _files(_folder(tmp_path))
  images = image_files.ImageFiles(files, (10, 12), "rgb", input_range=(-1.0, 1.0))
  assert images.shape == (24, 10, 12, 3) and len(images) == 24
  with Image.open(files[5]) as image:
    expected = np.asarray(image.convert("RGB").resize((12, 10), Image.BILINEAR))
  np.testing.assert_allclose(images[5], expected / 127.5 - 1, atol=1e-6)
  mask = np.zeros(24, bool)
  mask[[1, 5]] = True
  np.testing.assert_array_equal(images[mask], images[np.array([1, 5])])
  assert images[2:6].shape == (4, 10, 12, 3) and images[2:6].dtype == np.float32
  gray = image_files.ImageFiles(files, (10, 12), "grayscale")
  assert gray[0].shape == (10, 12, 1)


def test_large_splits_are_not_kept_in_memory(tmp_path, monkeypatch):
  files = _files(_folder(tmp_path))
  assert image_files.ImageFiles(files, (10, 12), "rgb").cached
  monkeypatch.setattr(image_files, "CACHE_BYTES", 100)
  streamed = image_files.ImageFiles(files, (10, 12), "rgb")
  assert not streamed.cached and streamed._pixels is None  # pylint: disable=protected-access
  streamed[:]
  assert streamed._pixels is None  # pylint: disable=protected-access


def test_tf_dataset_batches_every_file_once_per_epoch_with_its_label(tmp_path):
  files = _files(_folder(tmp_path))
  labels = np.array([int(path.split("class")[1][0]) for path in files])
  images = image_files.ImageFiles(files, (10, 12), "rgb")
  keras.utils.set_random_seed(0)
  stream = images.tf_dataset(5, labels, shuffle=True)
  epochs = []
  for _ in range(2):
    seen = [(x.numpy(), y.numpy()) for x, y in stream]
    assert [len(y) for _, y in seen] == [5, 5, 5, 5, 4]
    batch_images = np.concatenate([x for x, _ in seen])
    batch_labels = np.concatenate([y for _, y in seen])
    # Each image comes with its own label: the dominant channel is the class.
    dominant = np.argmax(batch_images.mean(axis=(1, 2)), axis=-1)
    np.testing.assert_array_equal(dominant, batch_labels)
    epochs.append(batch_labels)
  assert sorted(epochs[0]) == sorted(labels)
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
  plain = np.concatenate(list(images.tf_dataset(8).as_numpy_iterator()))
  np.testing.assert_allclose(plain, images[:], atol=1e-6)


def test_augmentation_changes_images_but_not_labels(tmp_path):
  files = _files(_folder(tmp_path))
  labels = np.arange(len(files)) % 3
  images = image_files.ImageFiles(files, (10, 12), "rgb")
  augmented = [(x.numpy(), y.numpy()) for x, y in images.tf_dataset(
      len(files), labels, augment=True)][0]
  assert augmented[0].shape == (24, 10, 12, 3)
  np.testing.assert_array_equal(augmented[1], labels)
  assert np.abs(augmented[0] - images[:]).max() > 0.05


def test_folder_dataset_streams_and_is_fingerprinted_by_its_files(tmp_path):
  root = _folder(tmp_path / "photos")
  config = DataConfig(dataset="folder", data_dir=root, image_size=(10, 12))
  dataset = load_dataset(config)
  assert isinstance(dataset.x_train, image_files.ImageFiles) and dataset.augment
  assert "decoded from disk per batch" in dataset.describe()
  assert "randomly flipped" in dataset.describe()
  assert not load_dataset(DataConfig(dataset="folder", data_dir=root, image_size=(10, 12),
                                     augment=False)).augment
  before = resume.data_fingerprint(dataset)
  assert resume.data_fingerprint(load_dataset(config)) == before
  changed = dataset.x_test.files[0]
  Image.new("RGB", (20, 14), (1, 2, 3)).save(changed)
  assert resume.data_fingerprint(load_dataset(config)) != before


def _truncate(path):
  with open(path, "rb") as stream:
    content = stream.read()
  with open(path, "wb") as stream:
    stream.write(content[:int(len(content) * 0.6)])


def test_an_image_corrupt_past_its_header_stops_training_with_its_name(tmp_path):
  root = _folder(tmp_path / "photos", per_class=10, size=(64, 64))
  dataset = load_dataset(DataConfig(dataset="folder", data_dir=root, image_size=(10, 12),
                                    test_fraction=0.1))
  broken = dataset.x_train.files[3]
  _truncate(broken)
  with Image.open(broken) as image:
    assert image.size == (64, 64)  # the header still reads
  model = keras.Sequential([keras.Input((10, 12, 3)), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
  model.compile("adam", train.classifier_loss())
  with pytest.raises(ImageFolderError, match=os.path.basename(broken) + " is not a readable"):
    train.fit(model, dataset, epochs=1, batch_size=4, verbose=0)
  with pytest.raises(ImageFolderError, match="is not a readable image"):
    train.accuracy(model, dataset.x_train, dataset.y_train)
