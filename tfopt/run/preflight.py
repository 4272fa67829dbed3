"""Everything checked before any training, so bad input fails fast and clean.

Builder names, the output directory (never a user's files), the user's model
and the data it asks for, and each stage's own checks (layer names, cluster
counts) on the architecture that stage will see. Nothing here writes a file.
"""

import contextlib
import dataclasses
import functools
import json
import os
import socket
import time
from typing import List

import filelock
import numpy as np

from tfopt.config import DataConfig, PipelineConfig, registry
from tfopt.core import artifacts
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset, load_dataset
from tfopt.keras_io import model_io, models
from tfopt.keras_io.predict import predict_top1
from tfopt.stages.base import log
from tfopt.training import tensorboard_logs

__all__ = ["OutputDirError", "check_inputs", "check_output_dir", "files_below",
           "data_for_model", "check_model_fits_data", "check_stages",
           "make_output_dir", "output_dir_lock", "remove_half_written", "LOCK_FILES"]


class OutputDirError(TfoptError, ValueError):
  """The output directory cannot be used without risking a user's files."""


def check_inputs(config: PipelineConfig):
  """Checks names, the output dir, the model and the data before any training.

  Returns:
    (config with the data settings the model asks for, the user's
    model_io.LoadedModel or None, the Dataset).

  Raises:
    TfoptError: what is wrong and what to do.
  """
  if config.model is None:
    models.get_builder(config.teacher.builder)
  if "distill" in config.stages:
    models.get_builder(config.distill.builder)
  check_output_dir(config.output_dir)
  user_model = None
  if config.model is not None:
    user_model = model_io.read_model(config.model, config.allow_unsafe_model)
    config = dataclasses.replace(config, data=data_for_model(config.data,
                                                            user_model.model))
  dataset = load_dataset(config.data, seed=config.seed)
  log(f"data: {dataset.name} from {dataset.source}: {dataset.describe()}")
  if user_model is not None:
    check_model_fits_data(user_model, dataset)
  check_stages(config, dataset, user_model.model if user_model else None)
  return config, user_model, dataset


def check_stages(config: PipelineConfig, dataset: Dataset, user_model=None):
  """Runs each stage's preflight on the architecture it will see.

  The first stage sees the user's model or the teacher builder's; a stage
  that changes the architecture (distill) hands the next one its own. Models
  are built only when a stage has something to check.
  """
  architecture = functools.lru_cache(maxsize=None)(
      lambda: user_model or models.build_model(
          config.teacher.builder, dataset.input_shape, dataset.num_classes))
  for stage in registry.plan(config):
    architecture = stage.preflight(config, dataset, architecture)


def check_output_dir(output_dir: str):
  """Refuses a directory holding files that an earlier tfopt run did not write.

  Raises:
    OutputDirError: the path is a file, or the directory has foreign files.
  """
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise OutputDirError(f"--output_dir {output_dir!r} is a file; give a "
                         "directory path.")
  if not os.path.isdir(output_dir):
    return
  if not os.access(output_dir, os.W_OK | os.X_OK):
    raise OutputDirError(f"Output directory {output_dir!r} is not writable; "
                         "choose another --output_dir.")
  manifest = artifacts.Manifest(output_dir)
  foreign = sorted(name for name in files_below(output_dir)
                   if name != artifacts.Manifest.FILENAME and name not in LOCK_FILES
                   and not manifest.owns(name) and not _half_written(name)
                   and not _cut_short(name, manifest))
  if foreign:
    shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
    raise OutputDirError(
        f"Output directory {output_dir!r} holds files tfopt did not write "
        f"({shown}); tfopt never overwrites them. Choose a new --output_dir "
        "or move those files away.")


def files_below(directory: str) -> List[str]:
  """Every file below `directory`, as "/"-separated relative paths."""
  found = []
  for root, _, files in os.walk(directory):
    relative = os.path.relpath(root, directory)
    found += [name if relative == "." else f"{relative}/{name}".replace(os.sep, "/")
              for name in files]
  return found


def data_for_model(data: DataConfig, model) -> DataConfig:
  """The data settings a given model asks for, where the user gave none.

  Image size and color mode come from the model's input (they matter for
  image folders; arrays are checked against them after loading); the input
  range is (0, 255) when the model starts with Rescaling, else (0, 1).

  Raises:
    ModelLoadError: the model is not an image classifier tfopt can feed.
  """
  height, width, channels = model_io.image_input_shape(model)
  changes = {}
  if data.dataset == "folder":
    if data.image_size is None and height and width:
      changes["image_size"] = (int(height), int(width))
    if data.color_mode is None:
      changes["color_mode"] = "grayscale" if channels == 1 else "rgb"
  if data.input_range is None:
    detected = model_io.input_range_of(model)
    changes["input_range"] = detected or (0.0, 1.0)
    log("data: the model starts with Rescaling, so it is fed raw pixels 0..255"
        if detected else "data: the model has no Rescaling at its input, so "
        "pixels are scaled to 0..1; give --input_range if it expects another "
        "range (e.g. -1,1)")
  return dataclasses.replace(data, **changes)


def check_model_fits_data(loaded: model_io.LoadedModel, dataset: Dataset):
  """The user's model takes the data's images and has one output per class.

  A Keras 3 rebuild is also checked against the original on test images.

  Raises:
    ModelLoadError: naming the mismatch and what to do.
  """
  model = loaded.model
  expected = tuple(model.inputs[0].shape[1:])
  if any(want not in (None, have) for want, have in zip(expected, dataset.input_shape)):
    raise model_io.ModelLoadError(
        f"The model takes {_shape_text(expected)} images but {dataset.name} "
        f"images are {_shape_text(dataset.input_shape)}; give data of the "
        "model's size" + (" (--image_size, --color_mode)" if dataset.name == "folder"
                          else "") + ", or a model made for this data.")
  classes = model.outputs[0].shape[-1]
  if classes != dataset.num_classes:
    raise model_io.ModelLoadError(
        f"The model has {classes} outputs but the data has {dataset.num_classes} "
        f"classes ({', '.join(dataset.class_names[:5])}"
        f"{' ...' if dataset.num_classes > 5 else ''}); give the labels file "
        "the model was trained with (one class per output, in order).")
  if loaded.original is not None:
    difference = model_io.outputs_match(loaded.original, model, dataset.x_test[:64])
    what = "Keras 3 model" if "Keras 3" in loaded.source else "nested original"
    log(f"teacher: the Keras 2 rebuild matches the {what} on 64 test "
        f"images (max output difference {difference:.1e})")
  _warn_if_near_chance(model, dataset)


def _warn_if_near_chance(model, dataset, count: int = 500):
  """A trained model near chance on the data usually has its classes in another order."""
  images, labels = dataset.x_val[:count], dataset.y_val[:count]
  correct = float(np.mean(predict_top1(model, images) == labels))
  chance = 1 / dataset.num_classes
  if dataset.num_classes > 2 and correct < 2 * chance:
    log(f"teacher: WARNING: your model gets {correct:.1%} of {len(labels)} validation "
        f"images right (chance: {chance:.1%}). If it is trained, its outputs are "
        "probably in another class order than the data's "
        f"({', '.join(dataset.class_names[:4])}, ...): give --labels_file with its "
        "classes in output order, or check --input_range.")


def _shape_text(shape) -> str:
  return "x".join("?" if size is None else str(size) for size in shape)


LOCK_FILES = (".tfopt.lock", ".tfopt.lock.owner")  # in the output dir while a run holds it


@contextlib.contextmanager
def output_dir_lock(output_dir: str):
  """Holds the output dir for one run: a second run into it stops at once.

  An exclusive OS lock (filelock: fcntl on Linux) on .tfopt.lock, released
  by the OS if the process dies, so a killed run never blocks the next; who
  holds it is written beside it for the message.

  Raises:
    OutputDirError: another run holds the directory.
  """
  lock = filelock.FileLock(os.path.join(output_dir, LOCK_FILES[0]))
  owner = os.path.join(output_dir, LOCK_FILES[1])
  try:
    lock.acquire(timeout=0)
  except filelock.Timeout as error:
    raise OutputDirError(
        f"Another tfopt run ({_owner_text(owner)}) is writing into {output_dir!r}; "
        "wait for it to finish, or choose another --output_dir.") from error
  try:
    with open(owner, "w", encoding="utf-8") as stream:
      json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}, stream)
    yield
  finally:
    if os.path.exists(owner):
      os.remove(owner)
    lock.release()


def _owner_text(owner: str) -> str:
  try:
    with open(owner, encoding="utf-8") as stream:
      found = json.load(stream)
    return f"process {found['pid']} on {found['host']}, started {found['started']}"
  except (OSError, ValueError, KeyError):
    return "process unknown"


def make_output_dir(output_dir: str):
  """Creates the output dir (or says why it cannot)."""
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as error:
    raise OutputDirError(f"Cannot create the output directory "
                         f"{output_dir!r} ({error}); choose a writable "
                         "--output_dir.") from error


def remove_half_written(output_dir: str):
  """Removes the half-written files a killed run left (under the lock only).

  Those are the files, and the folders of files, whose name starts with
  artifacts.TEMPORARY_PREFIX (an atomic write, or a checkpoint being saved),
  and the TensorBoard event files of an epoch the kill cut short.
  """
  manifest = artifacts.Manifest(output_dir)
  for name in files_below(output_dir):
    if _half_written(name) or _cut_short(name, manifest):
      os.remove(os.path.join(output_dir, name))
      log(f"resume: removed {name}, a file a killed run left half-written")
  artifacts.remove_empty_dirs(
      output_dir, only=lambda name: name.startswith(artifacts.TEMPORARY_PREFIX))


def _half_written(name: str) -> bool:
  return any(part.startswith(artifacts.TEMPORARY_PREFIX) for part in name.split("/"))


def _cut_short(name: str, manifest: artifacts.Manifest) -> bool:
  """The TensorBoard event file of an epoch a kill cut short: written as the
  epoch goes, listed in the manifest only when it ends."""
  parts = name.split("/")
  return (parts[0] == tensorboard_logs.DIRECTORY and parts[-1].startswith("events.out.tfevents.")
          and not manifest.owns(name))