"""Writing run artifacts safely, and measuring them.

Every file is written to a temporary name in the same directory and renamed
into place, so a killed run never leaves a half-written file under the real name.
"""

import gzip
import hashlib
import json
import os
import tempfile

from tfopt.errors import TfoptError

__all__ = ["ManifestError", "write_bytes_atomic", "write_text_atomic", "save_keras_atomic",
           "sha256_of", "gzip_size", "Manifest"]


class ManifestError(TfoptError, ValueError):
  """An output directory's manifest.json cannot be read."""


def _temporary_path(path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory,
                                       suffix=os.path.splitext(path)[1])
  os.close(handle)
  return temporary


def write_bytes_atomic(path: str, content: bytes) -> str:
  """Writes `content` to `path` via a temporary file and a rename."""
  temporary = _temporary_path(path)
  try:
    with open(temporary, "wb") as stream:
      stream.write(content)
      stream.flush()
      os.fsync(stream.fileno())
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
  return path


def write_text_atomic(path: str, text: str) -> str:
  return write_bytes_atomic(path, text.encode("utf-8"))


def save_keras_atomic(model, path: str) -> str:
  """Saves a Keras model via a temporary file; the extension picks the format.

  `.keras` is the default; quantization-aware models go to `.h5`, since tfmot's
  quantize layer does not reload from `.keras`.
  """
  temporary = _temporary_path(path)
  try:
    model.save(temporary)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
  return path


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as stream:
    for block in iter(lambda: stream.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def gzip_size(path: str) -> int:
  """Bytes of the file after gzip at the highest level (as tfmot reports)."""
  with open(path, "rb") as stream:
    return len(gzip.compress(stream.read(), compresslevel=9, mtime=0))


class Manifest:
  """manifest.json of an output directory: what each stage wrote.

  A file is listed only after it has been written completely.
  """

  FILENAME = "manifest.json"

  def __init__(self, output_dir: str):
    self.output_dir = output_dir
    self.path = os.path.join(output_dir, self.FILENAME)
    self.entries = []
    if os.path.isfile(self.path):
      try:
        with open(self.path, encoding="utf-8") as stream:
          self.entries = list(json.load(stream)["artifacts"])
      except (OSError, ValueError, KeyError, TypeError) as error:
        raise ManifestError(
            f"{self.path} is not a readable tfopt manifest ({error}); tfopt "
            "cannot tell which files in that directory are its own. Choose "
            "a new --output_dir.") from error

  def owns(self, filename: str) -> bool:
    """True for a listed file (a path relative to the output dir, "/"-separated)."""
    return any(entry["path"] == filename for entry in self.entries)

  def record(self, stage: str, path: str):
    """Lists the finished file `path` (inside the output dir) under `stage`."""
    filename = os.path.relpath(path, self.output_dir).replace(os.sep, "/")
    self.entries = [entry for entry in self.entries if entry["path"] != filename]
    self.entries.append({"stage": stage, "path": filename,
                         "bytes": os.path.getsize(path), "sha256": sha256_of(path)})
    write_text_atomic(self.path, json.dumps(
        {"tool": "tfopt", "artifacts": self.entries}, indent=2) + "\n")
