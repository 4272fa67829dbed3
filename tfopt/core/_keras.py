"""The one place that chooses Keras for tfopt.

tfmot (TensorFlow Model Optimization) works only with Keras 2, which ships for
TensorFlow >= 2.16 as the separate ``tf_keras`` package; ``tf.keras`` and
``import keras`` are Keras 3 there. Every tfopt module imports Keras from here
so that models, layers and tfmot wrappers all come from the same Keras.
"""

import numpy as np
import tf_keras as keras

from tfopt.core.errors import TfoptError

__all__ = ["keras", "KerasVersionError", "require_keras2_model", "get_layer",
           "require_layers", "clone_model", "kernel_attribute", "kernel_of",
           "is_inbound_ref", "map_inbound_refs",
           "inbound_refs", "inbound_layer_names"]


class KerasVersionError(TfoptError, TypeError):
  """A model came from a Keras that tfmot cannot work with."""


def require_keras2_model(model, what="model"):
  """Checks that `model` is a Keras 2 (`tf_keras`) model, as tfmot requires.

  Args:
    model: the object to check.
    what: how to call the object in the error message.

  Returns:
    `model`, unchanged.

  Raises:
    KerasVersionError: `model` is a Keras 3 model or not a Keras model at all.
  """
  if isinstance(model, keras.Model):
    return model
  module = type(model).__module__
  if module.startswith("keras") or module.startswith("tensorflow.python.keras"):
    raise KerasVersionError(
        f"The {what} is a Keras 3 model ({type(model).__module__}."
        f"{type(model).__name__}), but tfmot and tfopt need Keras 2. Since "
        "TensorFlow 2.16, `import keras` and `tf.keras` give Keras 3, while "
        "Keras 2 is the separate `tf_keras` package. Build the model with "
        "`import tf_keras as keras` (or `from tfopt.core._keras import keras`), or "
        "save it and rebuild it in tf_keras from its config and weights.")
  raise KerasVersionError(
      f"The {what} must be a Keras 2 (tf_keras) Model, got "
      f"{type(model).__module__}.{type(model).__name__}.")


def get_layer(model, name: str, error: type):
  """model.get_layer(name), raising `error` with a clear message if absent."""
  try:
    return model.get_layer(name)
  except ValueError as missing:
    raise error(f"Model {model.name!r} has no layer {name!r}.") from missing


def require_layers(model, names, accepts, error: type, allowed: str) -> list:
  """The named layers of `model`, each one `accepts(layer)` is true for.

  Raises:
    `error`: a name not in the model, or a layer of the wrong kind; the
      message ends "only {allowed}."
  """
  found = []
  for name in names:
    layer = get_layer(model, name, error)
    if not accepts(layer):
      raise error(f"Layer {name!r} is a {type(layer).__name__}; only {allowed}.")
    found.append(layer)
  return found


def clone_model(model):
  """A new model with the same architecture and a copy of the weights."""
  clone = keras.models.clone_model(model)
  clone.set_weights(model.get_weights())
  return clone


def is_inbound_ref(item) -> bool:
  """[layer name, node index, tensor index(, kwargs)] in a Keras 2 model config."""
  return (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)
          and isinstance(item[1], int) and isinstance(item[2], int))


def map_inbound_refs(data, function):
  """`data` (a config's inbound node, any nesting) with `function` applied to
  each reference, the references in a call's kwargs included (a TFOpLambda
  `x * y` reads y from there); constants are left as they are. A
  TFOpLambda's node is one bare reference, a Conv2D's a list of one."""
  if is_inbound_ref(data):
    return function(list(data[:3]) + [map_inbound_refs(extra, function)
                                       for extra in data[3:]])
  if isinstance(data, list):
    return [map_inbound_refs(item, function) for item in data]
  if isinstance(data, dict):
    return {key: map_inbound_refs(value, function) for key, value in data.items()}
  return data


def inbound_refs(node) -> list:
  """Every reference in a config's inbound node, in order (kwargs' after their call's)."""
  if is_inbound_ref(node):
    return [node] + [ref for extra in node[3:] for ref in inbound_refs(extra)]
  items = node if isinstance(node, list) else list(node.values()) if isinstance(
      node, dict) else []
  return [ref for item in items for ref in inbound_refs(item)]


def inbound_layer_names(node) -> list:
  """The names of the layers a config's inbound node reads, in order."""
  return [ref[0] for ref in inbound_refs(node)]


def kernel_attribute(layer) -> str:
  """The name of a conv / Dense layer's kernel attribute."""
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    return "depthwise_kernel"
  if isinstance(layer, keras.layers.SeparableConv2D):
    return "pointwise_kernel"  # its filters; the depthwise part is per input channel
  return "kernel"


def kernel_of(layer) -> np.ndarray:
  """A conv / Dense layer's kernel as a numpy array."""
  return getattr(layer, kernel_attribute(layer)).numpy()
