"""A user's trained model, as the Keras 2 model tfmot needs.

Most users now save with Keras 3 (`import keras`, `tf.keras` since TF 2.16),
while tfmot works only on Keras 2 (`tf_keras`). `read_model` reads `.keras`
and `.h5` files of either, and Keras 2 SavedModel directories: a Keras 2
model loads directly; a Keras 3 model built from standard layers (nested
backbones included) is rebuilt layer by layer in Keras 2 (tfopt.keras_io.keras3),
with its weights copied, and `outputs_match` checks the two on real images.
Layers that cannot be carried over are named in the error.

Loading is safe by default: no Lambda layers or other code from the file
(Keras' safe_mode) unless `allow_unsafe=True`.

`input_range_of` and `logits_model` adapt the pipeline to the model rather
than the other way round: a model that starts with Rescaling is fed raw
pixels, and a final softmax is dropped (same argmax) because every loss in
tfopt works on logits.
"""

import dataclasses
import json
import os
import zipfile
from typing import Optional, Tuple

import numpy as np

from tfopt.core._keras import keras
from tfopt.core.errors import ModelLoadError
from tfopt.keras_io import keras2_flatten
from tfopt.keras_io.keras3 import CARRIED_LAYERS, rebuild_in_keras2

__all__ = ["ModelLoadError", "LoadedModel", "saved_keras_version", "read_model",
           "load_model", "flattened", "rebuild_in_keras2", "outputs_match", "input_range_of",
           "image_input_shape", "logits_model", "CARRIED_LAYERS", "RECURRENT_LAYERS",
           "recurrent_layers"]

@dataclasses.dataclass
class LoadedModel:
  """A user's model as Keras 2, and where it came from.

  original: the model it was rebuilt from: a Keras 3 model, or a Keras 2
  model with nested models (flattened); None when `model` is the file's
  own. Check it against `model` with outputs_match once real inputs are at
  hand.
  """
  model: keras.Model
  source: str
  original: object = None


def saved_keras_version(path: str) -> str:
  """The major Keras version ("2" or "3") that wrote a .keras or .h5 file."""
  if path.endswith(".keras"):
    try:
      with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
      if not isinstance(metadata, dict):
        raise ValueError("metadata.json is not a JSON object")
    except Exception as error:  # pylint: disable=broad-except  (zip, zlib, JSON errors)
      raise ModelLoadError(f"{path} is not a readable .keras file ({error}); it is "
                           "truncated or not a Keras model: save it again with "
                           "model.save('model.keras').") from error
    return str(metadata.get("keras_version", "3")).split(".")[0]
  if path.endswith(".h5"):
    try:
      version = _h5_attribute(path, "keras_version") or "2"
    except Exception as error:  # pylint: disable=broad-except  (h5py's errors)
      raise ModelLoadError(f"{path} is not a readable .h5 file ({error}); it is "
                           "truncated or not a Keras model: save it again with "
                           "model.save('model.h5').") from error
    return version.split(".")[0]
  raise ModelLoadError(f"{path}: give a .keras or .h5 model file.")


def outputs_match(model_a, model_b, images: np.ndarray, atol: float = 1e-4) -> float:
  """The largest output difference of two models on `images`.

  Allowed: `atol` times the largest output magnitude (at least 1), since
  float32 round-off grows with the outputs (a deep backbone fed raw pixels).

  Raises:
    ModelLoadError: the difference is larger than allowed.
  """
  expected = _flat_outputs(model_a(images, training=False))
  difference = float(np.max(np.abs(expected - _flat_outputs(model_b(images, training=False)))))
  allowed = atol * max(1.0, float(np.max(np.abs(expected))))
  if difference > allowed:
    raise ModelLoadError(f"The Keras 2 rebuild differs from the Keras 3 model by "
                         f"{difference:.2e} on real inputs (allowed {allowed:.1e}); "
                         "please report the model's layers.")
  return difference


def _flat_outputs(outputs) -> np.ndarray:
  """Every output value in one vector (outputs in flattened order: a dict's
  keys sorted, as Keras 3 orders a model's dict outputs)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return np.concatenate([np.ravel(np.asarray(value)) for value in tf.nest.flatten(outputs)])


def _saved_model_classes(path: str) -> list:
  """The Keras class names a Keras 2 SavedModel's metadata lists."""
  from tf_keras.protobuf import saved_metadata_pb2  # pylint: disable=g-import-not-at-top
  metadata = saved_metadata_pb2.SavedMetadata()
  try:
    with open(os.path.join(path, "keras_metadata.pb"), "rb") as stream:
      metadata.ParseFromString(stream.read())
    return [json.loads(node.metadata).get("class_name", "") for node in metadata.nodes]
  except (OSError, ValueError) as error:  # DecodeError is a ValueError
    raise ModelLoadError(f"{path}/keras_metadata.pb is unreadable ({error}).") from error


def _read_saved_model(path: str, allow_unsafe: bool) -> keras.Model:
  if not os.path.isfile(os.path.join(path, "keras_metadata.pb")):
    hint = ("is a SavedModel without a Keras model in it (written by "
            "model.export() or tf.saved_model.save), which cannot be trained "
            "further; save the Keras model itself with model.save('model.keras')"
            if os.path.isfile(os.path.join(path, "saved_model.pb")) else
            "is a directory but not a SavedModel (no saved_model.pb); give a "
            ".keras or .h5 file or a SavedModel directory")
    raise ModelLoadError(f"{path} {hint}.")
  unsafe = sorted({name for name in _saved_model_classes(path) if name == "Lambda"})
  if unsafe and not allow_unsafe:
    raise ModelLoadError(f"{path} holds a Lambda layer, whose code would run on "
                         "load; load it only if you trust it, with allow_unsafe "
                         "/ --allow_unsafe_model.")
  return keras.models.load_model(path, compile=False)


def read_model(path: str, allow_unsafe: bool = False) -> LoadedModel:
  """Loads a .keras / .h5 file or a Keras 2 SavedModel directory as Keras 2.

  Args:
    path: the model file or SavedModel directory.
    allow_unsafe: allow code from the file (Lambda layers, custom objects).

  Raises:
    ModelLoadError: a missing or unreadable file, unsafe content without
      allow_unsafe, or layers that cannot be carried over.
  """
  if not os.path.exists(path):
    raise ModelLoadError(f"Model {path!r} does not exist.")
  if os.path.isdir(path):
    return flattened(_keras_model(path, lambda: _read_saved_model(path, allow_unsafe)),
                      "Keras 2 SavedModel")
  version = saved_keras_version(path)
  kind = os.path.splitext(path)[1]
  if version == "2":
    kwargs = {} if path.endswith(".h5") else {"safe_mode": not allow_unsafe}
    _check_keras2_config(path, allow_unsafe)
    return flattened(_keras_model(path, lambda: keras.models.load_model(
        path, compile=False, **kwargs)), f"Keras 2 {kind}")
  import keras as keras3  # pylint: disable=g-import-not-at-top
  original = _keras_model(path, lambda: keras3.saving.load_model(
      path, compile=False, safe_mode=not allow_unsafe))
  return LoadedModel(rebuild_in_keras2(original),
                     f"Keras {version} {kind}, rebuilt in Keras 2", original)


def _keras_load(path: str, load):
  """load(), with whatever Keras raises on a damaged or foreign file as a ModelLoadError.

  Keras' loaders fail in many ways on a damaged file (KeyError from a zip
  member, AttributeError from a config of the wrong type, h5py errors, ...);
  every one of them means "this file cannot be loaded", so all are caught
  here, around Keras' code only.
  """
  try:
    model = load()
  except ModelLoadError:
    raise
  except Exception as error:  # pylint: disable=broad-except
    hint = (" It holds code (e.g. a Lambda layer); load it only if you trust "
            "it, with allow_unsafe / --allow_unsafe_model."
            if "safe_mode" in str(error) or "Lambda" in str(error) else "")
    detail = str(error).strip().splitlines()[0][:400] if str(error).strip() else ""
    raise ModelLoadError(f"Cannot load {path}: {type(error).__name__}"
                         f"{': ' + detail if detail else ''}.{hint}") from error
  return model


def _keras_model(path: str, load) -> "keras.Model":
  """_keras_load of a model: what Keras read must be a model (a damaged config can
  make Keras 2 return the config dict itself)."""
  model = _keras_load(path, load)
  if not hasattr(model, "layers") or not hasattr(model, "outputs"):
    raise ModelLoadError(f"{path} does not hold a Keras model (Keras read a "
                         f"{type(model).__name__}); save the model again with model.save.")
  return model


def flattened(model: keras.Model, source: str) -> LoadedModel:
  """A Keras 2 model as it is, or with its nested models spliced in."""
  if not keras2_flatten.has_nested_models(model):
    return LoadedModel(model, source)
  return LoadedModel(keras2_flatten.flatten_nested_models(model),
                     f"{source}, nested models flattened", model)


def _check_keras2_config(path: str, allow_unsafe: bool):
  """Refuses, before Keras reads it, a Keras 2 config Keras would run code
  from (.h5 has no safe_mode) or would loop on forever (see
  keras2_flatten.unbuildable_layers)."""
  text = _keras_load(path, lambda: _keras2_config_text(path))
  if path.endswith(".h5") and not allow_unsafe and '"class_name": "Lambda"' in text:
    raise ModelLoadError(f"{path} holds a Lambda layer, whose code would run on "
                         "load; load it only if you trust it, with allow_unsafe "
                         "/ --allow_unsafe_model.")
  try:
    config = json.loads(text)
  except ValueError:
    return  # Keras says what is wrong with it
  stuck = keras2_flatten.unbuildable_layers(config)
  if stuck:
    raise ModelLoadError(
        f"{path} is damaged: in its model config, layer(s) {', '.join(stuck[:5])} "
        "read inputs that no layer makes (a missing layer, a wrong node index or a "
        "loop). Save the model again from the code that built it.")


def _keras2_config_text(path: str) -> str:
  if path.endswith(".keras"):
    with zipfile.ZipFile(path) as archive:
      return archive.read("config.json").decode("utf-8")
  return _h5_attribute(path, "model_config") or ""


def _h5_attribute(path: str, name: str) -> Optional[str]:
  """A text attribute of an .h5 file's root (None when absent)."""
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(path, "r") as handle:
    value = handle.attrs.get(name)
  return value.decode("utf-8") if isinstance(value, bytes) else (
      None if value is None else str(value))


def load_model(path: str, allow_unsafe: bool = False,
               check_images: Optional[np.ndarray] = None) -> keras.Model:
  """read_model's Keras 2 model; a Keras 3 rebuild is checked on check_images.

  Raises:
    ModelLoadError: see read_model; or the rebuild's outputs differ by > 1e-4.
  """
  loaded = read_model(path, allow_unsafe)
  if loaded.original is not None and check_images is not None:
    outputs_match(loaded.original, loaded.model, check_images)
  return loaded.model


# Recurrent layers LiteRT runs only at a fixed batch size (its fused LSTM and
# the WHILE loop of the others), so their files take one example at a time.
RECURRENT_LAYERS = ("LSTM", "GRU", "SimpleRNN", "Bidirectional")


def recurrent_layers(model, kinds=RECURRENT_LAYERS) -> list:
  """Names of the model's layers of those kinds (a Bidirectional's too)."""
  return [layer.name for layer in model.layers
          if type(layer).__name__ in kinds
          or type(getattr(layer, "layer", None)).__name__ in kinds]


def image_input_shape(model) -> Tuple[Optional[int], Optional[int], int]:
  """(height, width, channels) of an image classifier's input.

  Raises:
    ModelLoadError: the model does not take one NHWC image batch with 1 or 3
      channels, or does not output one vector of class scores.
  """
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise ModelLoadError(f"Model {model.name!r} has {len(model.inputs)} inputs "
                         f"and {len(model.outputs)} outputs; tfopt compresses "
                         "image classifiers with one image input and one output.")
  shape = tuple(model.inputs[0].shape)
  if len(shape) != 4 or shape[3] not in (1, 3):
    raise ModelLoadError(f"Model {model.name!r} takes inputs of shape {shape}; "
                         "tfopt needs images (batch, height, width, 1 or 3).")
  if len(model.outputs[0].shape) != 2:
    raise ModelLoadError(f"Model {model.name!r} outputs shape "
                         f"{tuple(model.outputs[0].shape)}; tfopt needs one "
                         "vector of class scores (batch, classes).")
  if recurrent_layers(model):
    raise ModelLoadError(
        f"Model {model.name!r} has recurrent layers ({', '.join(recurrent_layers(model))}), "
        "whose files LiteRT runs one example at a time; the image-classifier pipeline "
        "does not. Compress it as a task: tfopt.compress(model, train=..., test=...) or "
        "tfopt compress --model M --task my_task.py.")
  return shape[1], shape[2], shape[3]


def input_range_of(model) -> Optional[Tuple[float, float]]:
  """(0, 255) when the model rescales raw pixels itself, else None (unknown)."""
  first = [layer for layer in model.layers
           if not isinstance(layer, keras.layers.InputLayer)][:1]
  if first and isinstance(first[0], keras.layers.Rescaling):
    return (0.0, 255.0)
  return None


def _is_softmax(layer) -> bool:
  if isinstance(layer, keras.layers.Softmax):
    return True
  activation = getattr(layer, "activation", None)
  return getattr(activation, "__name__", "") == "softmax"


def logits_model(model) -> Tuple[keras.Model, bool]:
  """The model with a final softmax removed, and whether there was one.

  The class with the highest score is unchanged; tfopt's losses
  (cross-entropy from logits, distillation at a temperature) need logits.
  """
  last = model.outputs[0]._keras_history.layer  # pylint: disable=protected-access
  if not _is_softmax(last):
    return model, False
  if isinstance(last, (keras.layers.Softmax, keras.layers.Activation)):
    return keras.Model(model.inputs, last.input, name=model.name), True

  def clone(layer):
    config = layer.get_config()
    if layer is last:
      config["activation"] = "linear"
    return layer.__class__.from_config(config)

  logits = keras.models.clone_model(model, clone_function=clone)
  logits.set_weights(model.get_weights())
  return logits, True
