"""A user's trained model, as the Keras 2 model tfmot needs.

Most users now save with Keras 3 (`import keras`, `tf.keras` since TF 2.16),
while tfmot works only on Keras 2 (`tf_keras`). `read_model` reads `.keras`
and `.h5` files of either, and Keras 2 SavedModel directories: a Keras 2
model loads directly; a Keras 3 model built from standard layers is rebuilt
layer by layer in Keras 2 from its configs, with its weights copied, and
`outputs_match` checks the two on real images. Layers that cannot be
carried over are named in the error.

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

from tfopt._keras import keras
from tfopt.errors import TfoptError

__all__ = ["ModelLoadError", "LoadedModel", "saved_keras_version", "read_model",
           "load_model", "rebuild_in_keras2", "outputs_match", "input_range_of",
           "image_input_shape", "logits_model", "CARRIED_LAYERS"]

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


@dataclasses.dataclass
class LoadedModel:
  """A user's model as Keras 2, and where it came from.

  original: the Keras 3 model it was rebuilt from (None for Keras 2 files);
  check it against `model` with outputs_match once real inputs are at hand.
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
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
      raise ModelLoadError(f"{path} is not a readable .keras file ({error}); it is "
                           "truncated or not a Keras model: save it again with "
                           "model.save('model.keras').") from error
    return str(metadata.get("keras_version", "3")).split(".")[0]
  if path.endswith(".h5"):
    import h5py  # pylint: disable=g-import-not-at-top
    try:
      with h5py.File(path, "r") as handle:
        version = handle.attrs.get("keras_version", "2")
    except OSError as error:
      raise ModelLoadError(f"{path} is not a readable .h5 file ({error}); it is "
                           "truncated or not a Keras model: save it again with "
                           "model.save('model.h5').") from error
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
  inputs = [keras.Input(tuple(tensor.shape[1:]), dtype=tensor.dtype,
                        name=tensor.name.replace(":", "_")) for tensor in model3.inputs]
  if type(model3).__name__ == "Sequential":  # a chain: each layer feeds the next
    output = inputs[0]
    for layer in layers:
      output = _copied_layer(layer, output)
    return keras.Model(inputs, output, name=model3.name)
  shared = [layer.name for layer in layers if len(layer._inbound_nodes) > 1]  # pylint: disable=protected-access
  if shared:
    raise ModelLoadError(f"Layers used more than once ({', '.join(shared)}) "
                         "cannot be carried over to Keras 2 yet.")
  tensors = {id(tensor): copy for tensor, copy in zip(model3.inputs, inputs)}
  for layer in layers:
    if type(layer).__name__ == "InputLayer":
      continue
    node = layer._inbound_nodes[0]  # pylint: disable=protected-access
    arguments = [tensors[id(tensor)] for tensor in node.input_tensors]
    tensors[id(node.output_tensors[0])] = _copied_layer(
        layer, arguments[0] if len(arguments) == 1 else arguments)
  return keras.Model(inputs, [tensors[id(tensor)] for tensor in model3.outputs],
                     name=model3.name)


def _copied_layer(layer, inputs):
  """Calls a Keras 2 copy of Keras 3 `layer` on `inputs`, copies its weights."""
  copy = getattr(keras.layers, type(layer).__name__).from_config(
      _translated_config(layer))
  output = copy(inputs)
  copy.set_weights(layer.get_weights())
  return output


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
  try:
    if os.path.isdir(path):
      return LoadedModel(_read_saved_model(path, allow_unsafe), "Keras 2 SavedModel")
    version = saved_keras_version(path)
    kind = os.path.splitext(path)[1]
    if version == "2":
      kwargs = {} if path.endswith(".h5") else {"safe_mode": not allow_unsafe}
      if path.endswith(".h5") and not allow_unsafe:
        _refuse_h5_lambda(path)
      return LoadedModel(keras.models.load_model(path, compile=False, **kwargs),
                         f"Keras 2 {kind}")
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
  return LoadedModel(rebuild_in_keras2(original),
                     f"Keras {version} {kind}, rebuilt in Keras 2", original)


def _refuse_h5_lambda(path: str):
  """.h5 loading has no safe_mode: refuse Lambda layers from the config."""
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(path, "r") as handle:
    config = handle.attrs.get("model_config")
  config = config.decode() if isinstance(config, bytes) else (config or "")
  if '"class_name": "Lambda"' in config:
    raise ModelLoadError(f"{path} holds a Lambda layer, whose code would run on "
                         "load; load it only if you trust it, with allow_unsafe "
                         "/ --allow_unsafe_model.")


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
