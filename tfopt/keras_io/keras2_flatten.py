"""Keras 2 models with nested models inside, made one flat functional graph.

A transfer model written for TF 2.x (`base = keras.applications.MobileNetV2
(...)`, then `base(x, training=False)` inside the user's model, saved as
.h5) holds its backbone as one layer. tfmot's wrappers, channel groups and
QAT see a nested model as one opaque layer, so it is spliced into the outer
graph at the config level: the backbone's input layer is replaced by what fed
the backbone, what read the backbone's outputs reads its output layers, and
its layers join the outer list (renamed `<backbone>_<layer>` only on a name
clash). A nested Sequential is read as the chain it is. Weights are copied
layer by layer from the original objects; model_io checks the outputs.

The `training=False` a backbone was called with is not kept: the flat model
fine-tunes its BatchNorms like every other layer (inference is unchanged).
Keras 3 models are flattened by tfopt.keras_io.keras3's rebuild instead.
"""

import copy
from typing import Dict, List, Tuple

from tfopt.core._keras import inbound_refs, keras, map_inbound_refs
from tfopt.core.errors import ModelLoadError

__all__ = ["has_nested_models", "flatten_nested_models", "unbuildable_layers"]

_MODEL_CLASSES = ("Functional", "Model", "Sequential")


def has_nested_models(model: keras.Model) -> bool:
  return any(isinstance(layer, keras.Model) for layer in model.layers)


def _is_model(entry: dict) -> bool:
  return entry["class_name"] in _MODEL_CLASSES and "layers" in entry["config"]


def _sequential_as_functional(config: dict) -> dict:
  """A Sequential's config as a functional one: each layer reads the previous."""
  entries = copy.deepcopy(config["layers"])
  if not entries or entries[0]["class_name"] != "InputLayer":
    raise ModelLoadError(f"Nested Sequential {config['name']!r} has no input shape; "
                         "build it with keras.Input(...) first, then save again.")
  layers = []
  for index, entry in enumerate(entries):
    entry["name"] = entry["config"]["name"]
    entry["inbound_nodes"] = [] if index == 0 else [[[layers[-1]["name"], 0, 0, {}]]]
    layers.append(entry)
  return {"name": config["name"], "layers": layers,
          "input_layers": [[layers[0]["name"], 0, 0]],
          "output_layers": [[layers[-1]["name"], 0, 0]]}


def _unique(name: str, taken: set, prefix: str) -> str:
  """`name`, or `<prefix>_<name>` (then a number) when another layer has it."""
  candidate, number = name, 1
  while candidate in taken:
    candidate = f"{prefix}_{name}" + (f"_{number}" if number > 1 else "")
    number += 1
  taken.add(candidate)
  return candidate


def _flat_config(config: dict, taken: set, origin: Dict[str, Tuple[str, ...]],
                 path: Tuple[str, ...]) -> dict:
  """`config` (functional) with every nested model spliced in, recursively.

  Layers come in topological order, so every reference points back to a
  layer already placed. `origin` maps each flat name to its original path.
  """
  layers: List[dict] = []
  renamed: Dict[str, str] = {}
  outputs_of: Dict[str, list] = {}  # nested model -> its flat output refs
  for entry in config["layers"]:
    name = entry["name"]
    if _is_model(entry):
      feeds = [inbound_refs(map_inbound_refs(node, lambda ref: _resolve(ref, renamed, outputs_of)))
               for node in entry["inbound_nodes"]]
      inner = entry["config"]
      if entry["class_name"] == "Sequential":
        inner = _sequential_as_functional(inner)
      inner = _flat_config(inner, taken, origin, path + (name,))
      outputs_of[name] = _splice(name, feeds, inner, layers)
      continue
    entry = copy.deepcopy(entry)
    flat_name = _unique(name, taken, "_".join(path) or config["name"])
    renamed[name] = flat_name
    origin[flat_name] = path + (name,)
    entry["name"] = entry["config"]["name"] = flat_name
    entry["inbound_nodes"] = [map_inbound_refs(node, lambda ref: _resolve(
        ref, renamed, outputs_of)) for node in entry["inbound_nodes"]]
    layers.append(entry)
  return {"name": config["name"], "layers": layers,
          "input_layers": [_resolve(ref, renamed, outputs_of)[:3]
                           for ref in config["input_layers"]],
          "output_layers": [_resolve(ref, renamed, outputs_of)[:3]
                            for ref in config["output_layers"]]}


def _splice(name: str, calls: list, inner: dict, layers: list) -> list:
  """Adds `inner`'s layers (its inputs replaced by what fed it) to `layers`.

  Returns the flat references of its outputs.
  """
  if len(calls) != 1:
    raise ModelLoadError(f"Nested model {name!r} is called {len(calls)} times (a "
                         "shared backbone); tfopt compresses models whose nested "
                         "models are called once.")
  inputs = [ref[0] for ref in inner["input_layers"]]
  if len(inputs) != len(calls[0]):
    raise ModelLoadError(f"Nested model {name!r} takes {len(inputs)} inputs but is "
                         f"called with {len(calls[0])}.")
  feeds = {input_name: list(ref[:3]) for input_name, ref in zip(inputs, calls[0])}
  for layer in inner["layers"]:
    if layer["name"] in feeds:
      continue
    layer["inbound_nodes"] = [map_inbound_refs(node, lambda ref: feeds[ref[0]] + list(ref[3:])
                                               if ref[0] in feeds else ref)
                              for node in layer["inbound_nodes"]]
    layers.append(layer)
  return [feeds[ref[0]] if ref[0] in feeds else list(ref[:3])
          for ref in inner["output_layers"]]


def _resolve(ref, renamed: dict, outputs_of: dict) -> list:
  """An inbound reference with renamed layers and nested outputs followed."""
  ref = list(ref)
  if ref[0] in outputs_of:
    return list(outputs_of[ref[0]][ref[2]][:3]) + ref[3:]
  return [renamed.get(ref[0], ref[0])] + ref[1:]


def _original_layer(model: keras.Model, path: Tuple[str, ...]):
  layer = model
  for name in path:
    layer = layer.get_layer(name)
  return layer


def flatten_nested_models(model: keras.Model) -> keras.Model:
  """`model` with every nested model spliced in, weights copied.

  Raises:
    ModelLoadError: a nested model called more than once, or one that cannot
      be read back from its config (the error names it).
  """
  if isinstance(model, keras.Sequential):
    model = keras.Model(model.inputs, model.outputs, name=model.name)
  origin: Dict[str, Tuple[str, ...]] = {}
  config = _flat_config(model.get_config(), set(), origin, ())
  try:
    flat = keras.Model.from_config(config)
  except (ValueError, TypeError, KeyError) as error:
    raise ModelLoadError(f"Cannot make {model.name!r} one flat graph of its nested "
                         f"models: {error}") from error
  for layer in flat.layers:
    source = _original_layer(model, origin[layer.name])
    layer.set_weights(source.get_weights())
  return flat


def unbuildable_layers(model_config) -> List[str]:
  """Layers of a saved Keras 2 functional config whose inputs are never built.

  tf_keras rebuilds a functional model by processing each layer's inbound
  nodes once the nodes they read exist, and repeats until all are done,
  without noticing when a pass makes no progress: a damaged config (a node
  reading a missing layer, a node index past the last one, a loop) makes
  keras.models.load_model spin forever. This replays that processing on the
  config, nested models included, and returns the layers left over (empty
  for a buildable config). A nested model's node indices are taken on trust.
  """
  if not isinstance(model_config, dict):
    return []
  config = model_config.get("config")
  if model_config.get("class_name") not in ("Functional", "Model") or not isinstance(
      config, dict) or not isinstance(config.get("layers"), list):
    return []
  layers = [entry for entry in config["layers"]
            if isinstance(entry, dict) and isinstance(entry.get("name"), str)]
  stuck = [name for entry in layers for name in unbuildable_layers(entry)]
  pending = {entry["name"]: list(entry.get("inbound_nodes") or []) if isinstance(
      entry.get("inbound_nodes"), list) else [] for entry in layers}
  built = {name: 0 if nodes else 1 for name, nodes in pending.items()}
  models = {entry["name"] for entry in layers if entry.get("class_name") in _MODEL_CLASSES}

  def ready(node) -> bool:
    return all(ref[0] in built and (built[ref[0]] > ref[1] or (
        ref[0] in models and not pending[ref[0]])) for ref in inbound_refs(node))

  progress = True
  while progress and any(pending.values()):
    progress = False
    for name, nodes in pending.items():
      while nodes and ready(nodes[0]):
        nodes.pop(0)
        built[name] += 1
        progress = True
  return stuck + [str(name) for name, nodes in pending.items() if nodes]
