"""A user's own images: a folder of image files, read with Pillow.

Two layouts, as users bring them:

    one subfolder per class            flat files, label in the name (Food-11)
    root/cat/001.jpg                   root/training/0_12.jpg
    root/dog/002.png                   root/validation/3_7.jpg
                                       root/evaluation/10_5.jpg

Either may sit directly in the root (then a seeded share of it becomes the
test split) or be split into training/ (or train/), validation/ (or val/,
optional) and evaluation/ (or test/) folders. A flat name is
``<label>_<index>.<ext>``; the label is a class index (Food-11) or a class
name. Class names come from a labels file (one per line, in output order)
or else from the folder names (sorted, as
``keras.utils.image_dataset_from_directory`` orders them) or the labels
found in the training names.

Every problem names the file: unreadable images, empty classes, labels
outside the known classes, image sizes that differ without a target size.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from tfopt.errors import TfoptError

__all__ = ["ImageFolderError", "FolderData", "load_image_folder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
SPLIT_FOLDERS = {"train": ("training", "train"),
                 "val": ("validation", "val", "valid"),
                 "test": ("evaluation", "test", "eval")}
COLOR_MODES = ("grayscale", "rgb")


class ImageFolderError(TfoptError, ValueError):
  """An image folder cannot be read as a labelled data set."""


@dataclasses.dataclass
class FolderData:
  """uint8 NHWC images and int labels per split ("val" may be missing)."""
  images: Dict[str, np.ndarray]
  labels: Dict[str, np.ndarray]
  class_names: List[str]
  layout: str


def _image_files(directory: str) -> List[str]:
  return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
                and os.path.isfile(os.path.join(directory, name)))


def _subfolders(directory: str) -> List[str]:
  return sorted(name for name in os.listdir(directory)
                if not name.startswith(".")
                and os.path.isdir(os.path.join(directory, name)))


def _find_splits(root: str) -> Dict[str, str]:
  """{"train": path, ...} for the split folders under `root` (may be empty)."""
  present = set(_subfolders(root))
  splits = {}
  for split, names in SPLIT_FOLDERS.items():
    found = [name for name in names if name in present]
    if len(found) > 1:
      raise ImageFolderError(f"{root} holds both {found[0]}/ and {found[1]}/; "
                             f"keep one {split} folder.")
    if found:
      splits[split] = os.path.join(root, found[0])
  if splits and "train" not in splits:
    raise ImageFolderError(f"{root} has {', '.join(os.path.basename(path) + '/' for path in splits.values())} "
                           "but no training/ (or train/) folder.")
  return splits


def _list_split(directory: str) -> Tuple[str, List[Tuple[str, str]]]:
  """("subfolders" | "flat", [(file, label text)]) for one split folder."""
  classes = _subfolders(directory)
  files = _image_files(directory)
  if classes and files:
    raise ImageFolderError(
        f"{directory} holds both class subfolders ({', '.join(classes[:3])}) and "
        f"image files ({os.path.basename(files[0])}, ...); use one layout: "
        "one subfolder per class, or flat <label>_<index>.jpg names.")
  if classes:
    entries = []
    for name in classes:
      class_files = _image_files(os.path.join(directory, name))
      if not class_files:
        raise ImageFolderError(f"Class folder {os.path.join(directory, name)} "
                               f"holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
      entries += [(path, name) for path in class_files]
    return "subfolders", entries
  if not files:
    raise ImageFolderError(f"{directory} holds no images ({', '.join(IMAGE_EXTENSIONS)}) "
                           "and no class subfolders.")
  entries = []
  for path in files:
    stem = os.path.splitext(os.path.basename(path))[0]
    label, separator, _ = stem.rpartition("_")
    if not separator or not label:
      raise ImageFolderError(
          f"{path}: a flat image name must be <label>_<index>.<ext> (e.g. "
          "3_117.jpg), or put the images in one subfolder per class.")
    entries.append((path, label))
  return "flat", entries


def _read_labels_file(path: str) -> List[str]:
  try:
    with open(path, encoding="utf-8") as stream:
      names = [line.strip() for line in stream if line.strip()]
  except (OSError, UnicodeDecodeError) as error:
    raise ImageFolderError(f"Cannot read the labels file {path}: {error}.") from error
  if len(names) < 2 or len(set(names)) != len(names):
    raise ImageFolderError(f"The labels file {path} must list at least two "
                           "distinct class names, one per line.")
  return names


def _class_names(layout: str, train_labels: List[str],
                 labels_file: Optional[str]) -> Tuple[List[str], bool]:
  """(class names, whether flat labels are indices into them)."""
  names = _read_labels_file(labels_file) if labels_file else None
  numeric = layout == "flat" and all(label.isdigit() for label in train_labels)
  if names:
    return names, numeric and not set(train_labels) <= set(names)
  if numeric:
    return [str(index) for index in range(max(map(int, train_labels)) + 1)], True
  return sorted(set(train_labels)), False


def _label_index(path: str, label: str, class_names: List[str], numeric: bool,
                 source: str) -> int:
  if numeric and label.isdigit() and int(label) < len(class_names):
    return int(label)
  if not numeric and label in class_names:
    return class_names.index(label)
  known = (f"0..{len(class_names) - 1}" if numeric else ", ".join(class_names[:12])
           + (" ..." if len(class_names) > 12 else ""))
  raise ImageFolderError(
      f"{path}: label {label!r} is outside the known classes ({known}, from "
      f"{source}). Add it to the labels file, or move the file away.")


def _read_image(path: str) -> np.ndarray:
  """One image as uint8 (H, W, 1) or (H, W, 3)."""
  try:
    with Image.open(path) as image:
      image.load()
      grayscale = image.mode in ("1", "L", "I", "I;16", "F", "LA")
      image = image.convert("L" if grayscale else "RGB")
      pixels = np.asarray(image, dtype=np.uint8)
  except (OSError, ValueError, Image.DecompressionBombError) as error:
    raise ImageFolderError(f"{path} is not a readable image ({error}); "
                           "replace or remove it.") from error
  return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def _fit(pixels: np.ndarray, size: Tuple[int, int],
         color_mode: str) -> np.ndarray:
  """Converts one image to `color_mode` and resizes it (bilinear) to `size`."""
  channels = 1 if color_mode == "grayscale" else 3
  if pixels.shape[-1] != channels:
    mode = "L" if channels == 1 else "RGB"
    pixels = np.asarray(Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1
                                        else pixels).convert(mode), dtype=np.uint8)
    pixels = pixels[..., np.newaxis] if pixels.ndim == 2 else pixels
  if pixels.shape[:2] != tuple(size):
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
    # The same resize as examples/edge_infer.py, so deployment sees what
    # training saw.
    pixels = np.asarray(image.resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)
    pixels = pixels[..., np.newaxis] if pixels.ndim == 2 else pixels
  return pixels


def _read_split(files: List[str], size: Optional[Tuple[int, int]],
                color_mode: Optional[str], first: Tuple[str, tuple]
                ) -> Tuple[np.ndarray, str]:
  """The images of one split, converted and resized alike, and the color mode.

  A color_mode of None becomes rgb unless every image is gray.

  `first` is (file, (height, width)) of the image that fixed the size when
  `size` was not given; the images of every split must match it.
  """
  raw = [_read_image(path) for path in files]
  if size is None:
    reference, expected = first if first else (files[0], raw[0].shape[:2])
    for path, pixels in zip(files, raw):
      if pixels.shape[:2] != tuple(expected):
        raise ImageFolderError(
            f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels but "
            f"{reference} is {expected[1]}x{expected[0]}: give --image_size "
            "HEIGHT,WIDTH (or a model) to resize them all to one size.")
    size = expected
  if color_mode is None:
    color_mode = "rgb" if any(pixels.shape[-1] == 3 for pixels in raw) else "grayscale"
  return np.stack([_fit(pixels, size, color_mode) for pixels in raw]), color_mode


def load_image_folder(root: str, labels_file: Optional[str] = None,
                      image_size: Optional[Tuple[int, int]] = None,
                      color_mode: Optional[str] = None) -> FolderData:
  """Reads a labelled image folder (see the module docstring).

  Args:
    root: the folder.
    labels_file: class names, one per line, in the model's output order.
    image_size: (height, width) to resize every image to; None: the images'
      own size, which must then be the same for all.
    color_mode: "grayscale" or "rgb"; None: rgb unless every image is gray.

  Raises:
    ImageFolderError: naming the file or folder at fault.
  """
  if not os.path.isdir(root):
    raise ImageFolderError(f"Image folder {root!r} does not exist.")
  if color_mode is not None and color_mode not in COLOR_MODES:
    raise ImageFolderError(f"color_mode={color_mode!r} is invalid: it must be "
                           "grayscale or rgb.")
  split_dirs = _find_splits(root) or {"train": root}
  listed = {split: _list_split(directory) for split, directory in split_dirs.items()}
  layouts = {layout for layout, _ in listed.values()}
  if len(layouts) > 1:
    raise ImageFolderError(f"{root}: the split folders mix class subfolders and "
                           "flat <label>_<index> names; use one layout for all.")
  layout = layouts.pop()
  train_entries = listed["train"][1]
  class_names, numeric = _class_names(layout, [label for _, label in train_entries],
                                      labels_file)
  source = labels_file or ("the class folders of " + split_dirs["train"]
                           if layout == "subfolders" else
                           "the labels in " + split_dirs["train"])
  # Labels first (cheap), so a wrong label fails before any image is read.
  labels = {split: np.asarray([_label_index(path, label, class_names, numeric, source)
                               for path, label in entries], dtype=np.int64)
            for split, (_, entries) in listed.items()}
  counts = np.bincount(labels["train"], minlength=len(class_names))
  empty = [name for name, count in zip(class_names, counts) if count == 0]
  if empty:
    raise ImageFolderError(
        f"{split_dirs['train']} has no images of the class(es) "
        f"{', '.join(empty[:8])} (from {source}); every class needs training "
        "images. Add some, or remove the class from the labels file.")
  images, first = {}, None
  for split, (_, entries) in listed.items():  # training first
    files = [path for path, _ in entries]
    # The training split decides the color mode and (without image_size)
    # the size; the other splits follow it.
    images[split], color_mode = _read_split(files, image_size, color_mode, first)
    first = first or (files[0], images[split].shape[1:3])
  splits = ("no split folders" if split_dirs["train"] == root else ", ".join(
      os.path.basename(path) + "/" for path in split_dirs.values()))
  return FolderData(images, labels, class_names, f"{layout} layout, {splits}")
