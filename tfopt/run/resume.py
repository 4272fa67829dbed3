"""Resuming a run: which finished stages can be kept.

A stage's key is a digest of everything its result depends on: tfopt's
version, the data's content, the seed, the user's model, the settings the
stage declares (Stage.settings: config sections, or single fields), and the
key of the stage before it. A change anywhere thus redoes that stage and
every stage after it, and nothing before it.

A finished stage is kept when the manifest lists it at the same position with
the same key and every file it wrote still has the sha256 the manifest holds.
The runner then replays its output (models, files, rows, record) from the
manifest instead of running it.
"""

import dataclasses
import hashlib
import json
from typing import Callable, List, Optional, Sequence

import numpy as np

from tfopt.core.version import __version__
from tfopt.data.image_files import is_image_files

__all__ = ["data_fingerprint", "model_fingerprint", "settings_of", "stage_keys",
           "to_json", "kept_stage_count"]


def _digest(value) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True, default=str)
                        .encode("utf-8")).hexdigest()


def data_fingerprint(dataset) -> str:
  """A digest of the images, labels, splits, class names and input range.

  Arrays are hashed whole; image folders by their file names, sizes and
  contents (nothing is decoded).
  """
  digest = hashlib.sha256()
  for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
    value = getattr(dataset, name)
    if is_image_files(value):  # names, sizes and contents
      digest.update(name.encode())
      value.fingerprint(digest)
      continue
    array = np.ascontiguousarray(value)
    digest.update(f"{name}{array.shape}{array.dtype}".encode())
    digest.update(memoryview(array).cast("B"))
  # Augmentation is named only when on, so digests of earlier runs still hold.
  digest.update(json.dumps([dataset.class_names, list(dataset.input_range)]
                           + (["augment"] if dataset.augment else [])).encode())
  return digest.hexdigest()


def model_fingerprint(model) -> str:
  """A digest of a Keras model's architecture and weights."""
  digest = hashlib.sha256(model.to_json().encode("utf-8"))
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
  return digest.hexdigest()


def settings_of(config, stage) -> dict:
  """{setting: value} for each of `stage.settings` ("section" or "section.field")."""
  settings = {}
  for setting in stage.settings:
    first, *rest = setting.split(".")
    value = config.section(first)  # a field or section, or a registered stage's settings
    for part in rest:
      value = getattr(value, part)
    settings[setting] = (dataclasses.asdict(value) if dataclasses.is_dataclass(value)
                         else value)
  return settings


def stage_keys(config, stages: Sequence, data: str, model: Optional[str] = None,
               replicas: int = 1) -> List[str]:
  """The key of each stage (in run order) for this config and data.

  `replicas`: training replicas (the global batch, and so the result, depends
  on them).
  """
  previous = _digest({"tfopt": __version__, "data": data, "model": model,
                      "seed": config.seed, "strategy": config.strategy,
                      "replicas": replicas})
  keys = []
  for stage in stages:
    previous = _digest({"stage": stage.name, "previous": previous,
                        "settings": settings_of(config, stage)})
    keys.append(previous)
  return keys


def _json_default(value):
  if dataclasses.is_dataclass(value):
    return dataclasses.asdict(value)
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} cannot be kept in the manifest")


def to_json(value):
  """`value` as plain JSON data (tuples become lists, numpy scalars numbers)."""
  return json.loads(json.dumps(value, default=_json_default))


def kept_stage_count(manifest, names: Sequence[str], keys: Sequence[str],
                     log: Callable[[str], None]) -> int:
  """How many leading stages finished earlier with these keys and intact files."""
  for position, (name, key) in enumerate(zip(names, keys)):
    record = manifest.finished(position, name, key)
    if record is None:
      if position < len(manifest.stages):
        log(f"resume: {name} and the stages after it are redone: the "
            "stages, their settings, the data or the model changed")
      return position
    changed = manifest.changed_files(record)
    if changed:
      log(f"resume: {name} is redone: {', '.join(changed)} changed or went "
          "missing since it finished")
      return position
  return len(names)
