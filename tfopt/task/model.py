"""The model a task run compresses: a Keras 3 or tf_keras object, or a file,
as a tf_keras model, with what it was rebuilt from and how it was compiled."""

import json
import os
import zipfile

from tfopt.core._keras import keras
from tfopt.keras_io import model_io
from tfopt.keras_io.keras3 import rebuild_in_keras2
from tfopt.task.definition import TaskError

__all__ = ["loaded", "is_keras3", "source_of"]


def loaded(model, allow_unsafe: bool):
  """(tf_keras model, the model it was rebuilt from or None, (compiled loss,
  metrics))."""
  if isinstance(model, (str, os.PathLike)):
    loaded = model_io.read_model(os.fspath(model), allow_unsafe)
    return loaded.model, loaded.original, saved_compile(os.fspath(model))
  if _is_subclassed(model):
    raise TaskError(
        f"model is a subclassed keras.Model ({type(model).__name__}): its graph exists "
        "only inside its call(), which tfopt cannot read or rewrite. Build the same "
        "layers with the functional API (keras.Input ... keras.Model(inputs, outputs)) "
        "or keras.Sequential, copy the weights over, and pass that model.")
  if is_keras3(model):
    config = (model.get_compile_config() or {}) if model.compiled else {}
    return rebuild_in_keras2(model), model, (config.get("loss"), config.get("metrics"))
  if isinstance(model, keras.Model):  # tf_keras; nested models spliced in
    loaded = model_io.flattened(model, "a Keras 2 model object")
    return loaded.model, loaded.original, (getattr(model, "loss", None), None)
  raise TaskError(f"model is a {type(model).__name__}; give a Keras model or the path "
                  "of a .keras / .h5 file.")


def _is_subclassed(model) -> bool:
  """A Keras 3 or tf_keras model that is neither Functional (a subclass
  built with inputs and outputs is) nor Sequential."""
  import keras as keras3  # pylint: disable=g-import-not-at-top
  from keras.src.models.functional import Functional  # pylint: disable=g-import-not-at-top
  if isinstance(model, keras3.Model):
    return not isinstance(model, (Functional, keras3.Sequential))
  if isinstance(model, keras.Model):
    return not (getattr(model, "_is_graph_network", False)
                or isinstance(model, keras.Sequential))
  return False



def is_keras3(model) -> bool:
  import keras as keras3  # pylint: disable=g-import-not-at-top
  return isinstance(model, keras3.Model)


def saved_compile(path: str):
  """(loss, metrics) a .keras file was compiled with, as saved; else Nones."""
  try:
    with zipfile.ZipFile(path) as archive:
      config = json.loads(archive.read("config.json")).get("compile_config") or {}
  except (OSError, KeyError, ValueError, zipfile.BadZipFile):
    return None, None
  return config.get("loss"), config.get("metrics")


def source_of(model) -> str:
  if isinstance(model, (str, os.PathLike)):
    return os.fspath(model)
  return f"a {'Keras 3' if is_keras3(model) else 'Keras 2'} model object ({model.name})"


