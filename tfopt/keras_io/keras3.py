"""Carrying a Keras 3 model over to Keras 2 (tf_keras), which tfmot needs.

`rebuild_in_keras2` walks the Keras 3 graph and calls a tf_keras copy of each
layer on the copied tensors, weights copied:

- nested models (a `keras.applications` backbone used as a layer, a
  Sequential augmentation block) are flattened into the one Keras 2 graph;
- Keras 3 activations that tf_keras lacks or defines differently map to
  standard layers: silu is tf_keras' swish; hard_sigmoid, relu6(x + 3) / 6
  (tf_keras' own is 0.2 x + 0.5), and hard_silu, x * hard_sigmoid(x), become
  Rescaling, ReLU(6) and Multiply layers;
- scalar arithmetic written on tensors (MobileNetV3's `relu6(x + 3) / 6`)
  becomes Rescaling layers (x * scale + offset), so the model holds only
  standard layers that tfmot, slimming and the converter know;
- random augmentation layers, identities at inference, are left out;
- config keys Keras 3 renamed (LeakyReLU's negative_slope, tf_keras' alpha)
  or added (Resizing's antialias, data_format) are translated, or refused
  by name where their value has no Keras 2 equivalent.

A layer that cannot be carried is named by its path (`backbone/layer`).
tfopt.keras_io.model_io checks the rebuild against the original on real images.
"""

import re

import tensorflow as tf

from tfopt.core._keras import keras
from tfopt.core.errors import ModelLoadError

__all__ = ["CARRIED_LAYERS", "AUGMENTATION_LAYERS", "rebuild_in_keras2", "output_keys"]

# Keras 3 layers whose config and weights carry over to tf_keras unchanged
# (beyond the dtype policy and a few new keys that must be at their defaults).
CARRIED_LAYERS = (
    "InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense",
    "BatchNormalization", "ReLU", "Activation", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Dropout",
    "Rescaling", "Normalization", "Reshape", "ZeroPadding2D", "Cropping2D", "Add",
    "Concatenate", "Multiply", "Subtract", "Average", "Maximum", "Softmax",
    "LeakyReLU", "ELU", "PReLU", "Permute", "UpSampling2D", "Conv2DTranspose",
    "LayerNormalization", "GroupNormalization", "UnitNormalization", "Minimum",
    "Identity", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Resizing", "CenterCrop",
    # sequences (audio features, sensor windows) and volumes
    "Conv1D", "Conv1DTranspose", "SeparableConv1D", "DepthwiseConv1D", "AveragePooling1D",
    "MaxPooling1D", "GlobalAveragePooling1D", "GlobalMaxPooling1D", "Cropping1D",
    "ZeroPadding1D", "UpSampling1D", "SpatialDropout1D", "RepeatVector", "Dot", "Conv3D",
    "Conv3DTranspose", "AveragePooling3D", "MaxPooling3D", "GlobalAveragePooling3D",
    "GlobalMaxPooling3D", "Cropping3D", "ZeroPadding3D", "UpSampling3D", "SpatialDropout3D",
    # tokens, recurrence and attention (tfmot prunes their kernels)
    "Embedding", "LSTM", "GRU", "SimpleRNN", "Bidirectional", "MultiHeadAttention",
)
# Random augmentation: the identity at inference, so not carried.
AUGMENTATION_LAYERS = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
                       "RandomContrast", "RandomBrightness")
# A Keras 3-only key whose value does not change what the layer computes
# once its other settings are carried (a seed for dropout, say).
_MOOT = object()
# Keys Keras 3 added to layer configs; tf_keras accepts them only absent:
# the value tf_keras behaves as (another value is refused), or _MOOT.
_KERAS3_ONLY_KEYS = {"quantization_config": None, "lora_rank": None,
                     "lora_alpha": _MOOT, "synchronized": False, "rms_scaling": False}
# Keras 3 config keys that tf_keras names otherwise, per layer.
_RENAMED_KEYS = {"LeakyReLU": {"negative_slope": "alpha"}}
# Keras 3 config keys tf_keras lacks, per layer, in the same form.
_RECURRENT_ONLY_KEYS = {"seed": _MOOT}
_LAYER_ONLY_KEYS = {
    "Resizing": {"data_format": "channels_last", "pad_to_aspect_ratio": False,
                 "antialias": False, "fill_mode": _MOOT, "fill_value": _MOOT},
    "CenterCrop": {"data_format": "channels_last"},
    "ZeroPadding1D": {"data_format": "channels_last"},
    "LSTM": _RECURRENT_ONLY_KEYS, "GRU": _RECURRENT_ONLY_KEYS,
    "SimpleRNN": _RECURRENT_ONLY_KEYS,
    "MultiHeadAttention": {"seed": _MOOT, "use_gate": False, "sliding_window": None,
                           "flash_attention": _MOOT},
}
# Layers called with several positional tensors and keyword arguments
# (query, value, key, attention_mask=, use_causal_mask=), not one list.
_CALLED_WITH_ARGUMENTS = ("MultiHeadAttention",)
# Scalar arithmetic on tensors (Keras 3 ops, not layers), as Rescaling's
# (scale, offset) for `tensor op constant` and for `constant op tensor`.
_SCALAR_OPERATIONS = {
    "Add": (lambda c: (1.0, c), lambda c: (1.0, c)),
    "Subtract": (lambda c: (1.0, -c), lambda c: (-1.0, c)),
    "Multiply": (lambda c: (c, 0.0), lambda c: (c, 0.0)),
    "Divide": (lambda c: (1.0 / c, 0.0), None),
    "TrueDivide": (lambda c: (1.0 / c, 0.0), None),
}


_ACTIVATIONS = {"silu": "swish"}
# Activations carried as small graphs of standard layers.
_DECOMPOSED = ("hard_sigmoid", "hard_silu", "hard_swish")


def rebuild_in_keras2(model3) -> keras.Model:
  """The same network in tf_keras, weights copied, from a Keras 3 model.

  Raises:
    ModelLoadError: layers Keras 2 cannot carry (named by path), or a layer
      used more than once.
  """
  foreign = _foreign_layers(model3, "")
  if foreign:
    raise ModelLoadError(
        "These layers cannot be carried over from Keras 3 to Keras 2, which "
        f"tfmot needs: {', '.join(foreign)}. Rebuild the model with standard "
        f"layers (supported: {', '.join(CARRIED_LAYERS)}; nested models of them "
        "are flattened), train or copy its weights, and save it again.")
  inputs = [keras.Input(tuple(tensor.shape[1:]), dtype=tensor.dtype,
                        name=tensor.name.replace(":", "_")) for tensor in model3.inputs]
  names = set()
  outputs = _call_graph(model3, inputs, "", names)
  _name_outputs_by_key(model3, outputs, names)
  return keras.Model(inputs, outputs, name=model3.name)


def output_keys(model3) -> list:
  """The names a Keras 3 model's outputs are known by, in model.outputs' order:
  the keys of a dict of outputs, else the output layers' names."""
  if type(model3).__name__ == "Sequential":  # one output, its last layer's
    return [model3.layers[-1].name]  # (its `output` raises where built from an Input)
  if not isinstance(model3.output, dict):
    return list(model3.output_names)
  keys = {id(tensor): key for key, tensor in model3.output.items()}
  return [keys[id(tensor)] for tensor in model3.outputs]


def _name_outputs_by_key(model3, outputs, names: set) -> None:
  """A dict-output model's output layers take their keys' names, so that the
  Keras 2 model, and every model tfopt saves of it, names its outputs as the
  user's targets do (a saved model then feeds the same task again)."""
  for key, copy in zip(output_keys(model3), tf.nest.flatten(outputs)):
    layer = copy._keras_history.layer  # pylint: disable=protected-access
    if (layer.name != key and key not in names
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", key)
        and not isinstance(layer, keras.layers.InputLayer)):
      names.discard(layer.name)
      layer._name = key  # pylint: disable=protected-access
      names.add(key)


def _is_model(layer) -> bool:
  return type(layer).__name__ in ("Functional", "Sequential", "Model")


def _foreign_layers(model3, prefix: str) -> list:
  """"path (Class)" of every layer, at any depth, that cannot be carried."""
  found = []
  for layer in model3.layers:
    kind = type(layer).__name__
    if _is_model(layer):
      found += _foreign_layers(layer, f"{prefix}{layer.name}/")
    elif kind not in CARRIED_LAYERS + AUGMENTATION_LAYERS:
      found.append(f"{prefix}{layer.name} ({kind})")
  return found


def _call_graph(model3, inputs: list, prefix: str, names: set):
  """Calls copies of `model3`'s layers on `inputs`; returns the output copies."""
  if type(model3).__name__ == "Sequential":  # a chain: each layer feeds the next
    output = inputs[0]
    for layer in model3.layers:
      output = _call_layer(layer, [output], prefix, names)
    return output
  tensors = {id(tensor): copy for tensor, copy in zip(model3.inputs, inputs)}
  for operation in model3.operations:
    if type(operation).__name__ == "InputLayer":
      continue
    nodes = operation._inbound_nodes  # pylint: disable=protected-access
    if len(nodes) > 1:
      raise ModelLoadError(
          f"Layer {prefix}{operation.name} is used more than once; shared "
          "layers cannot be carried over to Keras 2 yet.")
    copied = lambda value: tensors.get(id(value), value)  # pylint: disable=cell-var-from-loop
    arguments = tf.nest.map_structure(copied, list(nodes[0].arguments.args))
    keywords = tf.nest.map_structure(copied, dict(nodes[0].arguments.kwargs))
    outputs = _call_layer(operation, arguments, prefix, names, keywords)
    for tensor, copy in zip(nodes[0].output_tensors, tf.nest.flatten(outputs)):
      tensors[id(tensor)] = copy
  outputs = [tensors[id(tensor)] for tensor in model3.outputs]
  return outputs[0] if len(outputs) == 1 else outputs


def _call_layer(layer, arguments: list, prefix: str, names: set, keywords=None):
  """One Keras 3 operation applied, in Keras 2, to the copied `arguments`
  (and, for attention, its keyword arguments)."""
  kind = type(layer).__name__
  if _is_model(layer):
    inputs = arguments[0] if isinstance(arguments[0], (list, tuple)) else arguments
    return _call_graph(layer, list(inputs), f"{prefix}{layer.name}/", names)
  import keras as keras3  # pylint: disable=g-import-not-at-top
  if not isinstance(layer, keras3.layers.Layer):
    return _scalar_operation(layer, arguments, prefix, names)
  if kind in AUGMENTATION_LAYERS:
    return arguments[0]
  if kind == "Activation" and layer.get_config()["activation"] in _DECOMPOSED:
    return _decomposed_activation(layer.get_config()["activation"], arguments[0],
                                  _unique(layer.name, prefix, names))
  config = _translated(kind, layer.get_config(), f"{prefix}{layer.name}")
  config["name"] = _unique(config["name"], prefix, names)
  try:
    copy = getattr(keras.layers, kind).from_config(config)
    if kind in _CALLED_WITH_ARGUMENTS:
      output = copy(*arguments, **(keywords or {}))
    else:
      output = copy(arguments[0] if len(arguments) == 1 else arguments)
    copy.set_weights(layer.get_weights())
  except (TypeError, ValueError, AttributeError) as error:  # a setting Keras 2 lacks
    raise ModelLoadError(
        f"Layer {prefix}{layer.name} ({kind}) cannot be carried over to Keras 2 "
        f"as it is configured ({type(error).__name__}: {str(error).splitlines()[0]}); "
        "rebuild it with default settings, or without it.") from error
  return output


# Arithmetic of two tensors written as `a + b` (the Keras Transformer
# tutorials' residuals): the merge layer that computes it.
_TENSOR_OPERATIONS = {"Add": "Add", "Subtract": "Subtract", "Multiply": "Multiply",
                      "Maximum": "Maximum", "Minimum": "Minimum"}


def _scalar_operation(operation, arguments: list, prefix: str, names: set):
  """`tensor op constant` (or `constant op tensor`) as a Rescaling layer;
  `tensor op tensor` as the merge layer that computes it."""
  kind = type(operation).__name__
  if (len(arguments) == 2 and all(tf.is_tensor(value) for value in arguments)
      and kind in _TENSOR_OPERATIONS
      and arguments[0].shape.as_list() == arguments[1].shape.as_list()):
    return getattr(keras.layers, _TENSOR_OPERATIONS[kind])(
        name=_unique(operation.name, prefix, names))(list(arguments))
  tensor_first = len(arguments) == 2 and isinstance(arguments[1], (int, float))
  constant_first = len(arguments) == 2 and isinstance(arguments[0], (int, float))
  forms = _SCALAR_OPERATIONS.get(kind, (None, None))
  form = forms[0] if tensor_first else forms[1] if constant_first else None
  if form is None:
    raise ModelLoadError(
        f"Operation {prefix}{operation.name} ({kind}) on tensors cannot be carried "
        "over to Keras 2; write it as a layer (e.g. keras.layers.Rescaling).")
  scale, offset = form(float(arguments[1] if tensor_first else arguments[0]))
  name = _unique(operation.name, prefix, names)
  return keras.layers.Rescaling(scale, offset, name=name)(
      arguments[0] if tensor_first else arguments[1])


def _decomposed_activation(activation: str, x, name: str):
  """hard_sigmoid(x) = relu6(x + 3) / 6 and hard_silu(x) = x * hard_sigmoid(x)."""
  gate = keras.layers.Rescaling(1.0, 3.0, name=f"{name}_shift")(x)
  gate = keras.layers.ReLU(6.0, name=f"{name}_relu6")(gate)
  if activation == "hard_sigmoid":
    return keras.layers.Rescaling(1.0 / 6.0, name=name)(gate)
  gate = keras.layers.Rescaling(1.0 / 6.0, name=f"{name}_gate")(gate)
  return keras.layers.Multiply(name=name)([x, gate])


def _unique(name: str, prefix: str, names: set) -> str:
  """`name`, or prefixed with its backbone's name where it is taken already.

  Characters TensorFlow's name scopes refuse (Keras 3 allows any) become "_".
  """
  name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
  if not re.match(r"[A-Za-z0-9.]", name):
    name = "layer" + name
  if name in names:
    name = f"{prefix.rstrip('/').replace('/', '_')}_{name}"
  names.add(name)
  return name


def _translated(kind: str, config: dict, path: str) -> dict:
  """A Keras 3 config of a `kind` layer as tf_keras reads it; `path` names
  the layer in errors. A wrapper's inner layers are translated alike."""
  config = dict(config)
  for key in ("layer", "backward_layer"):  # Bidirectional's recurrent layers
    if isinstance(config.get(key), dict):
      inner = config[key]
      config[key] = {"class_name": inner["class_name"],
                     "config": _translated(inner["class_name"], inner["config"],
                                           f"{path}/{inner['config'].get('name')}")}
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
  if isinstance(config.get("activation"), str):
    config["activation"] = _ACTIVATIONS.get(config["activation"], config["activation"])
  if kind == "MultiHeadAttention":  # tf_keras builds it from these when given
    config.update(query_shape=None, key_shape=None, value_shape=None)
  for old, new in _RENAMED_KEYS.get(kind, {}).items():
    if old in config:
      config[new] = config.pop(old)
  for key, default in {**_KERAS3_ONLY_KEYS, **_LAYER_ONLY_KEYS.get(kind, {})}.items():
    if key in config:
      if default is not _MOOT and config[key] != default:
        raise ModelLoadError(
            f"Layer {path} ({kind}) uses the Keras 3 option "
            f"{key}={config[key]!r}, which Keras 2 does not have; rebuild it with "
            f"{key}={default!r}, or without it.")
      del config[key]
  return config
