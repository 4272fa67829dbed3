"""Fuzzing the parsers of untrusted files with hypothesis.

Each parser, fed arbitrary or damaged bytes, either returns a well-formed
result or raises tfopt's own error for that file; nothing else (no numpy,
zip, PIL or LiteRT exception, no crash).
"""

import gzip
import io
import os
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import synthetic_images
from tfopt.cli import measure
from tfopt.config import DataConfig
from tfopt.data import datasets as data, image_folder
from tfopt.litert import evaluate

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


def _file(content: bytes, suffix: str) -> str:
  handle, path = tempfile.mkstemp(suffix=suffix)
  with os.fdopen(handle, "wb") as stream:
    stream.write(content)
  return path


def damaged(content: bytes):
  """`content` cut short, with bytes overwritten, or both."""
  return st.tuples(
      st.integers(0, len(content)),
      st.lists(st.tuples(st.integers(0, max(0, len(content) - 1)), st.integers(0, 255)),
               max_size=12)).map(lambda cut_flips: _damage(content, *cut_flips))


def _damage(content, cut, flips):
  result = bytearray(content[:cut] if cut else content)
  for position, value in flips:
    if position < len(result):
      result[position] = value
  return bytes(result)


def idx_bytes():
  """Plausible IDX files: a random header (ndims, dtype, shape) and any body."""
  return st.builds(
      lambda type_code, dims, body: bytes([0, 0, type_code, len(dims)])
      + struct.pack(f">{len(dims)}I", *dims) + body,
      st.sampled_from([0x08, 0x08, 0x09, 0x0D]),
      st.lists(st.integers(0, 40), min_size=0, max_size=4),
      st.binary(max_size=400))


@FUZZ
@given(st.one_of(st.binary(max_size=300), idx_bytes()), st.booleans())
def test_read_idx_returns_its_declared_shape_or_refuses(content, gzipped):
  path = _file(gzip.compress(content) if gzipped else content,
               ".gz" if gzipped else "")
  try:
    array = data.read_idx(path)
  except data.DataError:
    return
  finally:
    os.remove(path)
  declared = struct.unpack(f">{content[3]}I", content[4:4 + 4 * content[3]])
  assert array.dtype == np.uint8 and array.shape == declared


def _valid_npz() -> bytes:
  images, labels = synthetic_images(20)
  buffer = io.BytesIO()
  np.savez(buffer, x_train=(images[..., 0] * 255).astype(np.uint8), y_train=labels,
           x_test=(images[:5, ..., 0] * 255).astype(np.uint8), y_test=labels[:5])
  return buffer.getvalue()


@FUZZ
@given(st.one_of(st.binary(max_size=300), damaged(_valid_npz())))
def test_npz_loads_or_refuses(content):
  path = _file(content, ".npz")
  try:
    arrays = data._load_npz(path)  # pylint: disable=protected-access
    assert set(arrays) == {"x_train", "y_train", "x_test", "y_test"}
  except data.DataError:
    pass
  finally:
    os.remove(path)


numeric_dtypes = st.sampled_from([np.uint8, np.int32, np.int64, np.float32, np.float64,
                                  np.int8, np.bool_])


@FUZZ
@given(st.tuples(st.integers(0, 6), st.integers(1, 6), st.integers(1, 6)),
       st.tuples(st.integers(0, 6)), numeric_dtypes, numeric_dtypes,
       st.sampled_from([0.0, 0.5, 1.0, 255.0, -1.0, np.nan, np.inf]),
       st.integers(-3, 12))
def test_arbitrary_arrays_become_a_dataset_or_a_data_error(
    image_shape, label_shape, image_dtype, label_dtype, pixel, label):
  if not (np.isfinite(pixel) or np.issubdtype(image_dtype, np.floating)):
    pixel = 0.0  # integer arrays cannot hold NaN / Inf
  images = np.full(image_shape, pixel).astype(image_dtype)
  labels = np.full(label_shape, label).astype(label_dtype)
  with tempfile.TemporaryDirectory() as directory:
    np.savez(os.path.join(directory, "mnist.npz"), x_train=images, y_train=labels,
             x_test=images, y_test=labels)
    try:
      dataset = data.load_dataset(DataConfig(data_dir=directory))
    except data.DataError:
      return
  assert np.isfinite(dataset.x_train).all()
  assert 0 <= dataset.x_train.min() and dataset.x_train.max() <= 1
  assert ((0 <= dataset.y_train) & (dataset.y_train < 10)).all()


def _valid_png() -> bytes:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buffer, "PNG")
  return buffer.getvalue()


@FUZZ
@given(st.one_of(st.binary(max_size=200), damaged(_valid_png())),
       st.sampled_from([".png", ".jpg", ".bmp"]))
def test_image_folder_reads_or_names_the_bad_file(content, suffix):
  with tempfile.TemporaryDirectory() as root:
    for label in ("cat", "dog"):
      os.makedirs(os.path.join(root, label))
      with open(os.path.join(root, label, f"good{suffix}"), "wb") as stream:
        stream.write(_valid_png())
    with open(os.path.join(root, "dog", f"fuzzed{suffix}"), "wb") as stream:
      stream.write(content)
    try:
      folder = image_folder.load_image_folder(root)
    except image_folder.ImageFolderError as error:
      assert "fuzzed" in str(error)
      return
  assert folder.images["train"].shape[0] == 3


@pytest.fixture(scope="module")
def tflite_bytes():
  from tfopt.keras_io import models
  from tfopt.litert import convert
  images, _ = synthetic_images(10)
  return convert.to_tflite(models.build_model("student", (28, 28, 1), 10), "int8",
                           images, 10)


@FUZZ
@given(data_strategy=st.data())
def test_damaged_tflite_is_read_or_refused(tflite_bytes, data_strategy):
  content = data_strategy.draw(st.one_of(st.binary(max_size=200), damaged(tflite_bytes)))
  path = _file(content, ".tflite")
  try:
    contents = evaluate.inspect_tflite(path)
    outputs = evaluate.TFLiteClassifier(path).predict(np.zeros((2, 28, 28, 1), np.float32))
    assert contents.input_dtype and outputs.shape[0] == 2
  except evaluate.TFLiteError:
    pass
  finally:
    os.remove(path)


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 st.sampled_from([b'{"preprocessing": {}}', b'{"model": 1}', b"[]"])))
def test_bundle_description_is_read_or_refused(content):
  with tempfile.TemporaryDirectory() as bundle:
    with open(os.path.join(bundle, "model.json"), "wb") as stream:
      stream.write(content)
    try:
      measure._bundle_file(bundle)  # pylint: disable=protected-access
    except evaluate.TFLiteError as error:
      assert "model.json" in str(error)


def test_npz_whose_array_header_holds_a_null_byte_is_refused(tmp_path):
  """numpy parses a .npy header as a Python literal: a damaged one raised
  tokenize.TokenError through tfopt (found by the fuzzing above)."""
  buffer = io.BytesIO()
  np.savez(buffer, x_train=np.zeros((20, 28, 28), np.uint8), y_train=np.zeros(20, np.uint8),
           x_test=np.zeros((5, 28, 28), np.uint8), y_test=np.zeros(5, np.uint8))
  content = buffer.getvalue().replace(b"(20, 28, 28)", b"(20, 28, 28\x00", 1)
  path = tmp_path / "damaged.npz"
  path.write_bytes(content)
  with pytest.raises(data.DataError, match="truncated or corrupt"):
    data._load_npz(str(path))  # pylint: disable=protected-access
