"""A user's trained model, as the Keras 2 model tfmot needs.

Most users now save with Keras 3 (`import keras`, `tf.keras` since TF 2.16),
while tfmot works only on Keras 2 (`tf_keras`). `load_model` reads `.keras`
and `.h5` files of either: a Keras 2 file loads directly; a Keras 3 model
built from standard layers is rebuilt layer by layer in Keras 2 from its
configs, with its weights copied, and `outputs_match` checks the two on real
images. Layers that cannot be carried over are named in the error.

Loading is safe by default: no Lambda layers or other code from the file
(Keras' safe_mode) unless `allow_unsafe=True`.
"""

import json
import os
import zipfile
from typing import Optional

import numpy as np

from tfopt._keras import keras
from tfopt.errors import TfoptError

__all__ = ["ModelLoadError", "saved_keras_version", "load_model", "rebuild_in_keras2",
           "outputs_match", "CARRIED_LAYERS"]

# Keras 3 layers whose config and weights carry over to tf_keras unchanged
# (beyond the dtype policy and a few new keys that must be at their defaults).
CARRIED_LAYERS = (
    "InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense",
    "BatchNormalization", "ReLU", "Activation", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Dropout",
    "Rescaling", "Reshape", "ZeroPadding2D", "Add", "Concatenate", "Multiply",
    "Softmax", "LeakyReLU",
)
# Keys Keras 3 added to layer configs; tf_keras accepts them only absent.
_KERAS3_ONLY_KEYS = {"quantization_config": None, "lora_rank": None,
                     "lora_alpha": None, "synchronized": False}


class ModelLoadError(TfoptError, ValueError):
  """A model file cannot be loaded (or carried over to Keras 2) as asked."""


def saved_keras_version(path: str) -> str:
  """The major Keras version ("2" or "3") that wrote a .keras or .h5 file."""
  if path.endswith(".keras"):
    try:
      with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
      raise ModelLoadError(f"{path} is not a readable .keras file ({error}).") from error
    return str(metadata.get("keras_version", "3")).split(".")[0]
  if path.endswith(".h5"):
    import h5py  # pylint: disable=g-import-not-at-top
    try:
      with h5py.File(path, "r") as handle:
        version = handle.attrs.get("keras_version", "2")
    except OSError as error:
      raise ModelLoadError(f"{path} is not a readable .h5 file ({error}).") from error
    version = version.decode() if isinstance(version, bytes) else str(version)
    return version.split(".")[0]
  raise ModelLoadError(f"{path}: give a .keras or .h5 model file.")


def _translated_config(layer) -> dict:
  """A Keras 3 layer config as tf_keras's from_config takes it."""
  config = dict(layer.get_config())
  dtype = config.get("dtype")
  if isinstance(dtype, dict):  # Keras 3 DTypePolicy -> its name
    config["dtype"] = dtype.get("config", {}).get("name", "float32")
  for key in list(config):
    if key.endswith("_initializer"):
      del config[key]  # the weights are copied; initializers do not matter
    elif (key.endswith(("_regularizer", "_constraint"))
          and isinstance(config[key], dict)):
      # Keras 3 wraps them with module / registered_name; tf_keras reads
      # the plain {class_name, config} form.
      config[key] = {"class_name": config[key]["class_name"],
                     "config": config[key].get("config", {})}
  for key, default in _KERAS3_ONLY_KEYS.items():
    if key in config:
      if config[key] != default:
        raise ModelLoadError(
            f"Layer {layer.name!r} ({type(layer).__name__}) uses the Keras 3 "
            f"option {key}={config[key]!r}, which Keras 2 does not have.")
      del config[key]
  return config


def rebuild_in_keras2(model3) -> keras.Model:
  """The same network in tf_keras, weights copied, from a Keras 3 model.

  Raises:
    ModelLoadError: a layer Keras 2 cannot carry (named), or a shared layer.
  """
  layers = [layer for layer in model3.layers]
  foreign = [f"{layer.name} ({type(layer).__name__})" for layer in layers
             if type(layer).__name__ not in CARRIED_LAYERS]
  if foreign:
    raise ModelLoadError(
        "These layers cannot be carried over from Keras 3 to Keras 2, which "
        f"tfmot needs: {', '.join(foreign)}. Rebuild the model with "
        "`import tf_keras as keras` using standard layers (supported: "
        f"{', '.join(CARRIED_LAYERS)}), train or copy its weights, and save it "
        "again.")
  shared = [layer.name for layer in layers if len(layer._inbound_nodes) > 1]  # pylint: disable=protected-access
  if shared:
    raise ModelLoadError(f"Layers used more than once ({', '.join(shared)}) "
                         "cannot be carried over to Keras 2 yet.")
  tensors = {}
  inputs = []
  for tensor in model3.inputs:
    inputs.append(keras.Input(tuple(tensor.shape[1:]), dtype=tensor.dtype,
                              name=tensor.name.replace(":", "_")))
    tensors[id(tensor)] = inputs[-1]
  for layer in layers:
    if type(layer).__name__ == "InputLayer":
      continue
    node = layer._inbound_nodes[0]  # pylint: disable=protected-access
    copy = getattr(keras.layers, type(layer).__name__).from_config(
        _translated_config(layer))
    arguments = [tensors[id(tensor)] for tensor in node.input_tensors]
    tensors[id(node.output_tensors[0])] = copy(
        arguments[0] if len(arguments) == 1 else arguments)
    copy.set_weights(layer.get_weights())
  return keras.Model(inputs, [tensors[id(tensor)] for tensor in model3.outputs],
                     name=model3.name)


def outputs_match(model_a, model_b, images: np.ndarray, atol: float = 1e-4) -> float:
  """The largest output difference of two models on `images` (raises if > atol)."""
  difference = float(np.max(np.abs(
      np.asarray(model_a(images, training=False))
      - np.asarray(model_b(images, training=False)))))
  if difference > atol:
    raise ModelLoadError(f"The Keras 2 rebuild differs from the Keras 3 model by "
                         f"{difference:.2e} on real inputs (allowed {atol}); "
                         "please report the model's layers.")
  return difference


def load_model(path: str, allow_unsafe: bool = False,
               check_images: Optional[np.ndarray] = None) -> keras.Model:
  """Loads a .keras / .h5 model as a Keras 2 (tf_keras) model.

  Args:
    path: the model file.
    allow_unsafe: allow code from the file (Lambda layers, custom objects).
    check_images: real inputs on which a Keras 3 rebuild must give the same
      outputs as the original (within 1e-4).

  Raises:
    ModelLoadError: a missing or unreadable file, unsafe content without
      allow_unsafe, or layers that cannot be carried over.
  """
  if not os.path.isfile(path):
    raise ModelLoadError(f"Model file {path!r} does not exist.")
  version = saved_keras_version(path)
  try:
    if version == "2":
      kwargs = {} if path.endswith(".h5") else {"safe_mode": not allow_unsafe}
      return keras.models.load_model(path, compile=False, **kwargs)
    import keras as keras3  # pylint: disable=g-import-not-at-top
    original = keras3.saving.load_model(path, compile=False,
                                        safe_mode=not allow_unsafe)
  except ModelLoadError:
    raise
  except (ValueError, TypeError, OSError) as error:
    hint = (" It holds code (e.g. a Lambda layer); load it only if you trust "
            "it, with allow_unsafe / --allow_unsafe_model."
            if "safe_mode" in str(error) or "Lambda" in str(error) else "")
    raise ModelLoadError(f"Cannot load {path}: {error}.{hint}") from error
  rebuilt = rebuild_in_keras2(original)
  if check_images is not None:
    outputs_match(original, rebuilt, check_images)
  return rebuilt
