"""Images that stay on disk until a batch needs them (image folders).

`ImageFiles` stands where a float32 image array would: it has a length, a
shape and numpy indexing (`images[i]`, `images[a:b]`, `images[indices]`
decode just those files), so calibration, LiteRT evaluation and latency
read a folder as they read MNIST. Training reads it through `tf_dataset`:
tf.data shuffles indices, decodes each batch in parallel, augments (random
flip and translation, optional) and prefetches, so memory holds a few
batches, not 224x224 float32 copies of every photo.

Decoding is Pillow's, the same as the in-memory loader and
examples/edge_infer.py use, so training, calibration and deployment see the
same pixels. A split whose decoded uint8 pixels fit in `CACHE_BYTES` keeps
them in memory after the first read (small folders stay as fast as
arrays); larger ones decode from disk each epoch. A file that cannot be
decoded mid-stream stops the run with an ImageFolderError naming it.
"""

import concurrent.futures
import contextlib
import hashlib
import os
from typing import Optional, Sequence, Tuple

import numpy as np

from PIL import Image

from tfopt.core.errors import ImageFolderError

__all__ = ["ImageFiles", "CACHE_BYTES", "augmenter", "reading_errors", "is_image_files", "bounded_batch",
           "read_image", "fit_image", "unreadable", "GRAY_MODES"]

CACHE_BYTES = 1 << 30  # decoded uint8 pixels kept in memory per split, at most
BATCH_BYTES = 32 << 20  # float32 input per inference batch, at most
_THREADS = max(2, os.cpu_count() or 2)
_failures = []  # decode errors met inside tf.data, re-raised by reading_errors


def bounded_batch(image_shape, batch_size: int) -> int:
  """`batch_size`, lowered so a batch of float32 inputs stays under BATCH_BYTES.

  Inference on 224x224 photos in batches of 1000 holds gigabytes of
  activations; MNIST-sized images keep their batch of 1000.
  """
  per_image = 4 * int(np.prod([int(size) for size in image_shape]))
  return max(1, min(batch_size, BATCH_BYTES // max(1, per_image)))


GRAY_MODES = ("1", "L", "I", "I;16", "F", "LA")


def unreadable(path: str, error: Exception) -> ImageFolderError:
  return ImageFolderError(f"{path} is not a readable image ({error}); "
                          "replace or remove it.")


def read_image(path: str) -> np.ndarray:
  """One image as uint8 (H, W, 1) or (H, W, 3)."""
  try:
    with Image.open(path) as image:
      image.load()
      image = image.convert("L" if image.mode in GRAY_MODES else "RGB")
      pixels = np.asarray(image, dtype=np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    raise unreadable(path, error) from error
  return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def fit_image(pixels: np.ndarray, size: Tuple[int, int],
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


class ImageFiles:
  """A lazy (N, H, W, C) float32 array of image files, in an input range."""

  ndim = 4
  dtype = np.dtype(np.float32)

  def __init__(self, files: Sequence[str], size: Tuple[int, int], color_mode: str,
               input_range: Tuple[float, float] = (0.0, 1.0), cache: Optional[bool] = None):
    self.files = tuple(files)
    self.size = (int(size[0]), int(size[1]))
    self.color_mode = color_mode
    self.input_range = tuple(float(value) for value in input_range)
    channels = 1 if color_mode == "grayscale" else 3
    self.shape = (len(self.files),) + self.size + (channels,)
    decoded = int(np.prod(self.shape, dtype=np.int64))
    self.cached = decoded <= CACHE_BYTES if cache is None else cache
    self._pixels = np.zeros(self.shape, np.uint8) if self.cached else None
    self._filled = np.zeros(len(self.files), bool) if self.cached else None

  def __len__(self) -> int:
    return len(self.files)

  def __repr__(self) -> str:
    return (f"ImageFiles({len(self)} files, {self.shape[1:]}, {self.color_mode}, "
            f"{'cached' if self.cached else 'streamed'})")

  # --- numpy-like reading ---------------------------------------------------

  def __getitem__(self, key) -> np.ndarray:
    if isinstance(key, (int, np.integer)):
      return self[np.array([key])][0]
    if isinstance(key, slice):
      indices = np.arange(len(self))[key]
    else:
      key = np.asarray(key)
      indices = np.flatnonzero(key) if key.dtype == bool else key.astype(np.int64)
    return self._scaled(self.pixels(indices))

  def __array__(self, dtype=None, copy=None):
    array = self[:]
    return array if dtype is None else array.astype(dtype)

  def pixels(self, indices: np.ndarray) -> np.ndarray:
    """uint8 (k, H, W, C) pixels of the files at `indices`, decoded in threads."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if self.cached and self._filled[indices].all():
      return self._pixels[indices]
    with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
      decoded = list(pool.map(self._decode, indices))
    batch = np.stack(decoded) if decoded else np.zeros((0,) + self.shape[1:], np.uint8)
    if self.cached:
      self._pixels[indices], self._filled[indices] = batch, True
    return batch

  def _decode(self, index: int) -> np.ndarray:
    path = self.files[index]
    pixels = read_image(path)
    return fit_image(pixels, self.size, self.color_mode)

  def _scaled(self, pixels: np.ndarray) -> np.ndarray:
    low, high = self.input_range
    unit = pixels.astype(np.float32) / np.float32(255.0)
    return unit if (low, high) == (0.0, 1.0) else unit * np.float32(high - low) + np.float32(low)

  # --- derived views --------------------------------------------------------

  def subset(self, indices) -> "ImageFiles":
    """The files at `indices`, as a new ImageFiles (nothing is decoded)."""
    files = [self.files[index] for index in np.asarray(indices, dtype=np.int64)]
    return ImageFiles(files, self.size, self.color_mode, self.input_range)

  def with_range(self, input_range) -> "ImageFiles":
    copy = ImageFiles(self.files, self.size, self.color_mode, input_range, self.cached)
    copy._pixels, copy._filled = self._pixels, self._filled  # share decoded pixels
    return copy

  def fingerprint(self, digest: "hashlib._Hash"):
    """Adds the file list, sizes and contents, target size and mode to `digest`."""
    digest.update(repr((self.size, self.color_mode, self.input_range)).encode())
    for path in self.files:
      digest.update(f"{os.path.basename(path)}:{os.path.getsize(path)}:".encode())
      with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):  # pylint: disable=cell-var-from-loop
          digest.update(block)

  # --- tf.data ----------------------------------------------------------------

  def tf_dataset(self, batch_size: int, labels: Optional[np.ndarray] = None,
                 shuffle: bool = False, augment: bool = False):
    """Batches of float32 images (and labels), decoded in parallel, prefetched.

    The shuffle and the augmentation follow the global seeds
    (keras.utils.set_random_seed): the same seeds, the same batches.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    indices = tf.data.Dataset.range(len(self))
    if shuffle:
      indices = indices.shuffle(len(self), reshuffle_each_iteration=True)
    batches = indices.batch(batch_size)
    # Labels, or a tuple of per-image targets (labels, a teacher's logits).
    label_array = None if labels is None else (
        tuple(map(np.asarray, labels)) if isinstance(labels, tuple) else np.asarray(labels))
    augment_batch = augmenter(self.shape[1:], np.random.randint(2 ** 30)) if augment else None

    def load(batch_indices):
      images = tf.numpy_function(self._recorded_batch, [batch_indices], tf.float32)
      images.set_shape((None,) + self.shape[1:])
      if label_array is None:
        return images
      return images, tf.nest.map_structure(
          lambda array: tf.gather(tf.constant(array), batch_indices), label_array)

    def augmented(images, *labels):
      return (augment_batch(images, training=True),) + labels

    loaded = batches.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if augment_batch is not None:  # one batch after the other: its random stream is fixed
      loaded = loaded.map(augmented)
    return loaded.prefetch(2)

  def _recorded_batch(self, indices: np.ndarray) -> np.ndarray:
    try:
      return self._scaled(self.pixels(indices))
    except ImageFolderError as error:
      _failures.append(error)
      raise


def is_image_files(images) -> bool:
  return isinstance(images, ImageFiles)


def augmenter(shape, seed: int, flip: bool = True, fill_value: Optional[float] = None):
  """Random horizontal flip (if `flip`) and translation by up to 10 % (Keras'
  own layers). What the shift uncovers is reflected, or `fill_value` (the
  background of digits) when given."""
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  fill = dict(fill_mode="reflect") if fill_value is None else dict(
      fill_mode="constant", fill_value=fill_value)
  return keras.Sequential(
      [keras.Input(shape)] + [keras.layers.RandomFlip("horizontal", seed=seed)] * flip
      + [keras.layers.RandomTranslation(0.1, 0.1, seed=seed + 1, **fill)],
      name="augmentation")


@contextlib.contextmanager
def reading_errors():
  """Turns a tf.data error caused by an undecodable image into its ImageFolderError."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  del _failures[:]
  try:
    yield
  except tf.errors.OpError as error:
    if _failures:
      raise _failures[0] from error
    raise
