"""Writing run artifacts safely, and measuring them.

Every file is written to a temporary name in the same directory (".tfopt-tmp-"
prefix) and renamed into place, so a killed run never leaves a half-written
file under the real name. manifest.json lists every file a run wrote, with its
sha256, and every stage that finished, with the key of its inputs; a file or a
stage is listed only once it is complete (see Manifest).
"""

import contextlib
import errno
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, List, Optional, Sequence

from tfopt.core.errors import TfoptError

__all__ = ["ManifestError", "ArtifactWriteError", "TEMPORARY_PREFIX",
           "write_bytes_atomic", "write_text_atomic", "copy_file_atomic",
           "save_keras_atomic", "sha256_of", "gzip_size", "Manifest"]

# Names of files being written; only a killed run leaves one behind.
TEMPORARY_PREFIX = ".tfopt-tmp-"


class ManifestError(TfoptError, ValueError):
  """An output directory's manifest.json cannot be read."""


class ArtifactWriteError(TfoptError, OSError):
  """An artifact could not be written (full disk, no permission, ...)."""


def _temporary_path(path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  handle, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=directory,
                                       suffix=os.path.splitext(path)[1])
  os.close(handle)
  return temporary


def _write_via_temporary(path: str, write) -> str:
  """Calls write(temporary path), then renames it to `path`.

  Raises:
    ArtifactWriteError: the disk is full or the directory is not writable;
      no temporary file is left and `path` keeps its old content.
  """
  temporary = None
  try:
    temporary = _temporary_path(path)
    write(temporary)
    os.replace(temporary, path)
  except OSError as error:
    raise _write_error(path, error) from error
  finally:
    if temporary and os.path.exists(temporary):
      os.remove(temporary)
  return path


def _write_error(path: str, error: OSError) -> ArtifactWriteError:
  if error.errno in (errno.ENOSPC, errno.EDQUOT):
    advice = "the disk is full: free some space, or choose an --output_dir on another disk"
  elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    advice = "the directory is not writable: choose another --output_dir"
  else:
    advice = "check the output directory, or choose another --output_dir"
  return ArtifactWriteError(
      f"Could not write {path} ({error.strerror or error}): {advice}. Files "
      "already finished are kept; run the same command again to resume.")


def write_bytes_atomic(path: str, content: bytes) -> str:
  """Writes `content` to `path` via a temporary file and a rename."""
  def write(temporary):
    with open(temporary, "wb") as stream:
      stream.write(content)
      stream.flush()
      os.fsync(stream.fileno())
  return _write_via_temporary(path, write)


def write_text_atomic(path: str, text: str) -> str:
  return write_bytes_atomic(path, text.encode("utf-8"))


def copy_file_atomic(source: str, path: str) -> str:
  return _write_via_temporary(path, lambda temporary: shutil.copyfile(source, temporary))


def save_keras_atomic(model, path: str) -> str:
  """Saves a Keras model via a temporary file; the extension picks the format.

  `.keras` is the default; quantization-aware models go to `.h5`, since tfmot's
  quantize layer does not reload from `.keras`.
  """
  return _write_via_temporary(path, model.save)


def remove_empty_dirs(top: str, only: Callable[[str], bool] = lambda name: True):
  """Removes the empty folders below and at `top`, deepest first, whose name
  passes `only`; a folder that still holds something stays."""
  for root, _, _ in sorted(os.walk(top), key=lambda item: -len(item[0])):
    if only(os.path.basename(root)):
      with contextlib.suppress(OSError):
        os.rmdir(root)


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
  """manifest.json of an output directory: what each stage wrote and finished.

  "artifacts": every file a run wrote ({stage, path, bytes, sha256}), listed as
  soon as it is complete, so that the files of an unfinished stage are still
  known to be tfopt's. "stages": the stages that finished, in order, each with
  the key of its inputs (config and everything before it), its files, its
  output (models, rows, record; see tfopt.run.runner) and its seconds. A
  stage is listed only after all of its files are, so a run killed at any
  point leaves no stage listed as finished that is not.
  """

  FILENAME = "manifest.json"

  def __init__(self, output_dir: str):
    self.output_dir = output_dir
    self.path = os.path.join(output_dir, self.FILENAME)
    self.entries: List[dict] = []
    self.stages: List[dict] = []
    if os.path.isfile(self.path):
      try:
        with open(self.path, encoding="utf-8") as stream:
          content = json.load(stream)
        self.entries = [dict(entry) for entry in content["artifacts"]]
        self.stages = [dict(stage) for stage in content.get("stages", [])]
        if not all({"stage", "path", "sha256"} <= set(entry) for entry in self.entries):
          raise ValueError("an artifact without stage, path or sha256")
      except (OSError, ValueError, KeyError, TypeError) as error:
        raise ManifestError(
            f"{self.path} is not a readable tfopt manifest ({error}); tfopt "
            "cannot tell which files in that directory are its own. Choose "
            "a new --output_dir.") from error

  def relative(self, path: str) -> str:
    return os.path.relpath(path, self.output_dir).replace(os.sep, "/")

  def owns(self, filename: str) -> bool:
    """True for a listed file (a path relative to the output dir, "/"-separated)."""
    return any(entry["path"] == filename for entry in self.entries)

  def record(self, stage: str, path: str, resume_key: Optional[str] = None):
    """Lists the finished file `path` (inside the output dir) under `stage`.

    resume_key: for an epoch checkpoint, the key of the stage that wrote it
    (a rerun with that key at that stage resumes from it).
    """
    filename = self.relative(path)
    self.entries = [entry for entry in self.entries if entry["path"] != filename]
    entry = {"stage": stage, "path": filename,
             "bytes": os.path.getsize(path), "sha256": sha256_of(path)}
    if resume_key is not None:
      entry["resume_key"] = resume_key
    self.entries.append(entry)
    self._save()

  def forget(self, filenames: Sequence[str], delete: bool = False):
    """Unlists `filenames` (relative paths), deleting them first if `delete`."""
    if not filenames:
      return
    for name in filenames:
      if delete and os.path.isfile(os.path.join(self.output_dir, name)):
        os.remove(os.path.join(self.output_dir, name))
    self.entries = [entry for entry in self.entries if entry["path"] not in filenames]
    self._save()

  def checkpoints_of(self, stage: str, key: str) -> List[str]:
    """The epoch checkpoints stage `stage` wrote under resume key `key`."""
    return [entry["path"] for entry in self.entries
            if entry["stage"] == stage and entry.get("resume_key") == key]

  def files_of(self, stage: str) -> List[str]:
    return [entry["path"] for entry in self.entries if entry["stage"] == stage]

  def finished(self, position: int, name: str, key: str) -> Optional[dict]:
    """The record of stage `name` at `position` if it finished with inputs `key`."""
    if position < len(self.stages):
      record = self.stages[position]
      if record.get("stage") == name and record.get("key") == key:
        return record
    return None

  def changed_files(self, record: dict) -> List[str]:
    """The files of a finished stage that are missing or no longer match their sha256."""
    listed = {entry["path"]: entry["sha256"] for entry in self.entries}
    return [name for name in record["files"]
            if name not in listed
            or not os.path.isfile(os.path.join(self.output_dir, name))
            or sha256_of(os.path.join(self.output_dir, name)) != listed[name]]

  def keep_stages(self, count: int, also_keep: Sequence[str] = ()) -> List[str]:
    """Keeps the first `count` finished stages; deletes every other file of tfopt's.

    What goes: the files of the stages unlisted here, of a stage a killed run
    left unfinished (but those in `also_keep`: the epoch checkpoints of the
    stage the rerun resumes), and the report and deploy bundle (they describe
    a finished run). Only a file whose content still matches what tfopt wrote
    is deleted; one changed since stays, and stays listed as tfopt's.

    Returns:
      The deleted paths, relative to the output directory.
    """
    self.stages = self.stages[:count]
    kept = {name for stage in self.stages for name in stage["files"]} | set(also_keep)
    removed = []
    for entry in self.entries:
      path = os.path.join(self.output_dir, entry["path"])
      if entry["path"] in kept:
        continue
      if not os.path.isfile(path):
        removed.append(entry["path"])  # already gone: unlist it
      elif sha256_of(path) == entry["sha256"]:
        os.remove(path)
        removed.append(entry["path"])
    self.entries = [entry for entry in self.entries if entry["path"] not in removed]
    self._save()
    return sorted(removed)

  def finish(self, name: str, key: str, output: Dict, seconds: float):
    """Lists stage `name` as finished: its files so far, its output as JSON."""
    self.stages.append({"stage": name, "key": key, "files": self.files_of(name),
                        "output": output, "seconds": seconds})
    self._save()

  def _save(self):
    write_text_atomic(self.path, json.dumps(
        {"tool": "tfopt", "artifacts": self.entries, "stages": self.stages},
        indent=2) + "\n")
