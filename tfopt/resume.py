"""Resuming a run: which finished stages can be kept, and what they handed on.

A stage's key is a digest of everything its result depends on: tfopt's
version, the data's content, the seed, the user's model, the config sections
the stage reads, and the key of the stage before it. A change anywhere thus
redoes that stage and every stage after it, and nothing before it.

A finished stage is kept when the manifest lists it at the same position with
the same key and every file it wrote still has the sha256 the manifest holds.
Its state (the run state fields it changed, as JSON) is then replayed instead
of running it.
"""

import dataclasses
import hashlib
import json
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from tfopt import __version__

__all__ = ["STAGE_SETTINGS", "data_fingerprint", "model_fingerprint", "stage_keys",
           "to_json", "changed_fields", "kept_stage_count"]

# Stage -> the PipelineConfig sections its result depends on. Fine-tuning
# stages read distill's alpha and temperature; slim and the analyses measure
# with the convert / evaluate settings.
STAGE_SETTINGS = {
    "teacher": ("teacher",), "distill": ("distill",), "scratch": ("distill",),
    "prune": ("prune", "distill"), "slim": ("slim", "distill", "convert", "evaluate"),
    "lowrank": ("lowrank", "distill"), "cluster": ("cluster", "distill"),
    "qat": ("qat", "prune", "distill"), "binary": ("binary", "distill"),
    "sensitivity": ("analysis", "prune", "distill", "evaluate"),
    "bitwidth": ("analysis", "evaluate"), "sweep": ("analysis", "evaluate"),
    "convert": ("convert",), "evaluate": ("evaluate",),
}


def _digest(value) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True, default=str)
                        .encode("utf-8")).hexdigest()


def data_fingerprint(dataset) -> str:
  """A digest of the images, labels, splits, class names and input range."""
  digest = hashlib.sha256()
  for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
    array = np.ascontiguousarray(getattr(dataset, name))
    digest.update(f"{name}{array.shape}{array.dtype}".encode())
    digest.update(memoryview(array).cast("B"))
  digest.update(json.dumps([dataset.class_names, list(dataset.input_range)]).encode())
  return digest.hexdigest()


def model_fingerprint(model) -> str:
  """A digest of a Keras model's architecture and weights."""
  digest = hashlib.sha256(model.to_json().encode("utf-8"))
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
  return digest.hexdigest()


def stage_keys(config, names: Sequence[str], data: str,
               model: Optional[str] = None, replicas: int = 1) -> List[str]:
  """The key of each stage in `names` (in run order) for this config and data.

  `replicas`: training replicas (the global batch, and so the result, depends
  on them).
  """
  previous = _digest({"tfopt": __version__, "data": data, "model": model,
                      "seed": config.seed, "strategy": config.strategy,
                      "replicas": replicas})
  keys = []
  for name in names:
    settings = {section: dataclasses.asdict(getattr(config, section))
                for section in STAGE_SETTINGS[name]}
    previous = _digest({"stage": name, "previous": previous, "settings": settings})
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


def changed_fields(before: Dict, after: Dict) -> Dict:
  """The entries of snapshot `after` that differ from `before`."""
  return {name: value for name, value in after.items() if before.get(name) != value}


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
