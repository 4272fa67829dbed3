"""A user's image folder: both layouts, class names, and errors naming the file."""

import os

import numpy as np
import pytest
from PIL import Image

from tfopt.config import ConfigError, DataConfig
from tfopt.data.datasets import load_dataset
from tfopt.data.image_folder import ImageFolderError, load_image_folder


def _save(path, color=(200, 0, 0), size=(12, 10), mode="RGB"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = np.zeros((size[1], size[0], 3), np.uint8)
  pixels[...] = color
  Image.fromarray(pixels).convert(mode).save(path)


def _food11(root, counts=(("training", 12), ("validation", 6), ("evaluation", 6)),
            classes=3):
  for split, count in counts:
    for index in range(count):
      label = index % classes
      color = [0, 0, 0]
      color[label % 3] = 220
      _save(os.path.join(root, split, f"{label}_{index}.jpg"), tuple(color))
  return str(root)


def _class_folders(root, names=("cat", "dog", "owl"), per_class=5):
  for label, name in enumerate(names):
    for index in range(per_class):
      color = [0, 0, 0]
      color[label % 3] = 220
      _save(os.path.join(root, name, f"{index}.png"), tuple(color))
  return str(root)


def test_food11_layout_reads_labels_from_names_and_keeps_the_splits(tmp_path):
  folder = load_image_folder(_food11(tmp_path))
  assert folder.class_names == ["0", "1", "2"]
  assert {split: len(images) for split, images in folder.images.items()} == {
      "train": 12, "val": 6, "test": 6}
  assert folder.images["train"].shape[1:] == (10, 12, 3)
  # The label in the name is the class: red images are class 0.
  red = folder.images["train"].pixels(np.flatnonzero(folder.labels["train"] == 0))
  assert red.dtype == np.uint8
  assert red[..., 0].mean() > 150 and red[..., 1].mean() < 60
  # Indexed like an array, the files read as float32 in the input range.
  as_array = folder.images["train"][folder.labels["train"] == 0]
  np.testing.assert_allclose(as_array, red / 255.0, atol=1e-6)


def test_labels_file_names_the_classes(tmp_path):
  root = _food11(tmp_path / "food")
  labels = tmp_path / "labels.txt"
  labels.write_text("Bread\nDairy\nDessert\n")
  folder = load_image_folder(root, labels_file=str(labels))
  assert folder.class_names == ["Bread", "Dairy", "Dessert"]


def test_class_subfolders_sorted_and_test_split_held_out(tmp_path):
  root = _class_folders(tmp_path)
  dataset = load_dataset(DataConfig(dataset="folder", data_dir=root,
                                    test_fraction=0.2, validation_fraction=0.25))
  assert dataset.class_names == ["cat", "dog", "owl"]
  assert len(dataset.x_test) == 3 and len(dataset.x_val) == 3
  assert len(dataset.x_train) == 9
  assert dataset.x_train.dtype == np.float32 and dataset.x_train[:].max() <= 1.0


def test_size_color_and_input_range_are_applied(tmp_path):
  root = _food11(tmp_path)
  dataset = load_dataset(DataConfig(dataset="folder", data_dir=root, image_size=(8, 8),
                                    color_mode="grayscale", input_range=(-1.0, 1.0)))
  assert dataset.input_shape == (8, 8, 1)
  assert dataset.input_range == (-1.0, 1.0)
  images = dataset.x_train[:]
  assert -1.0 <= images.min() and images.max() <= 1.0
  assert images.min() < -0.5  # black stays near -1


def test_gray_images_stay_one_channel(tmp_path):
  for label in range(2):
    for index in range(3):
      _save(str(tmp_path / f"{label}_{index}.png"), (40 + 150 * label,) * 3, mode="L")
  folder = load_image_folder(str(tmp_path))
  assert folder.images["train"].shape[-1] == 1


def test_unreadable_image_is_named(tmp_path):
  root = _food11(tmp_path)
  bad = os.path.join(root, "training", "1_99.jpg")
  with open(bad, "wb") as stream:
    stream.write(b"not a jpeg at all")
  with pytest.raises(ImageFolderError, match="1_99.jpg is not a readable image"):
    load_image_folder(root)


def test_empty_class_folder_is_named(tmp_path):
  root = _class_folders(tmp_path)
  os.makedirs(os.path.join(root, "yak"))
  with pytest.raises(ImageFolderError, match="yak holds no images"):
    load_image_folder(root)


def test_class_in_labels_file_without_training_images_is_named(tmp_path):
  root = _food11(tmp_path / "food")
  labels = tmp_path / "labels.txt"
  labels.write_text("Bread\nDairy\nDessert\nEgg\n")
  with pytest.raises(ImageFolderError, match="no images of the class.*Egg"):
    load_image_folder(root, labels_file=str(labels))


def test_label_outside_known_classes_is_named(tmp_path):
  root = _food11(tmp_path)
  _save(os.path.join(root, "evaluation", "7_1000.jpg"))
  with pytest.raises(ImageFolderError, match="7_1000.jpg: label '7' is outside"):
    load_image_folder(root)


def test_unknown_class_folder_in_test_split_is_named(tmp_path):
  _class_folders(tmp_path / "train")
  _class_folders(tmp_path / "test", names=("cat", "dog", "emu"))
  with pytest.raises(ImageFolderError, match="label 'emu' is outside"):
    load_image_folder(str(tmp_path))


def test_mismatched_sizes_are_named_unless_a_size_is_given(tmp_path):
  root = _food11(tmp_path)
  _save(os.path.join(root, "training", "2_500.jpg"), size=(20, 20))
  with pytest.raises(ImageFolderError, match="2_500.jpg is 20x20 pixels.*--image_size"):
    load_image_folder(root)
  folder = load_image_folder(root, image_size=(16, 16))
  assert folder.images["train"].shape[1:3] == (16, 16)


def test_bad_flat_name_and_mixed_layouts_are_refused(tmp_path):
  _save(str(tmp_path / "a" / "photo.jpg"))
  with pytest.raises(ImageFolderError, match="photo.jpg: a flat image name"):
    load_image_folder(str(tmp_path / "a"))
  _class_folders(tmp_path / "b")
  _save(str(tmp_path / "b" / "0_1.jpg"))
  with pytest.raises(ImageFolderError, match="use one layout"):
    load_image_folder(str(tmp_path / "b"))


def test_missing_folder_and_bad_settings(tmp_path):
  with pytest.raises(ImageFolderError, match="does not exist"):
    load_image_folder(str(tmp_path / "nope"))
  with pytest.raises(ConfigError, match="data_dir"):
    DataConfig(dataset="folder")
  with pytest.raises(ConfigError, match="image_size"):
    DataConfig(dataset="folder", data_dir="x", image_size=(0, 4))
  with pytest.raises(ConfigError, match="input_range"):
    DataConfig(input_range=(1.0, 0.0))
  with pytest.raises(ConfigError, match="labels_file"):
    DataConfig(labels_file="labels.txt")
