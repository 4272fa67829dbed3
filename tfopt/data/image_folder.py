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

Only the files' headers are read here (size and color mode); pixels are
decoded when a batch needs them (tfopt.data.image_files), so a folder of any size
fits in memory. Every problem names the file: unreadable images, empty
classes, labels outside the known classes, image sizes that differ without a
target size.
"""

import concurrent.futures
import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from tfopt.core.errors import ImageFolderError
from tfopt.data.image_files import GRAY_MODES, ImageFiles, unreadable

__all__ = ["ImageFolderError", "FolderData", "load_image_folder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
SPLIT_FOLDERS = {"train": ("training", "train"),
                 "val": ("validation", "val", "valid"),
                 "test": ("evaluation", "test", "eval")}
COLOR_MODES = ("grayscale", "rgb")


@dataclasses.dataclass
class FolderData:
  """Images (ImageFiles: decoded on demand) and int labels per split ("val" may be missing)."""
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


def _header(path: str) -> Tuple[Tuple[int, int], bool]:
  """((height, width), whether gray) from the file's header; nothing is decoded."""
  try:
    with Image.open(path) as image:
      width, height = image.size
      return (height, width), image.mode in GRAY_MODES
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    raise unreadable(path, error) from error


def _scan_split(files: List[str], size: Optional[Tuple[int, int]],
                color_mode: Optional[str], first: Tuple[str, tuple]
                ) -> Tuple[ImageFiles, str]:
  """One split as ImageFiles (headers read, pixels not), and the color mode.

  A color_mode of None becomes rgb unless every image is gray.

  `first` is (file, (height, width)) of the image that fixed the size when
  `size` was not given; the images of every split must match it.
  """
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    headers = list(pool.map(_header, files))
  if size is None:
    reference, expected = first if first else (files[0], headers[0][0])
    for path, (shape, _) in zip(files, headers):
      if shape != tuple(expected):
        raise ImageFolderError(
            f"{path} is {shape[1]}x{shape[0]} pixels but "
            f"{reference} is {expected[1]}x{expected[0]}: give --image_size "
            "HEIGHT,WIDTH (or a model) to resize them all to one size.")
    size = expected
  if color_mode is None:
    color_mode = "grayscale" if all(gray for _, gray in headers) else "rgb"
  return ImageFiles(files, size, color_mode), color_mode


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
    images[split], color_mode = _scan_split(files, image_size, color_mode, first)
    first = first or (files[0], images[split].shape[1:3])
  splits = ("no split folders" if split_dirs["train"] == root else ", ".join(
      os.path.basename(path) + "/" for path in split_dirs.values()))
  return FolderData(images, labels, class_names, f"{layout} layout, {splits}")
