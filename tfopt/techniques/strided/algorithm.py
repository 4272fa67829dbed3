"""Strided downsampling: a stride-1 convolution followed by a 2 x 2 pool
becomes a stride-2 convolution, and the pool goes.

    conv(stride 1) -> [BatchNorm, activation ...] -> MaxPool 2x2 / stride 2
    conv(stride 2) -> [BatchNorm, activation ...]

The convolution then computes a quarter of the outputs it did (its MACs and
the work of every elementwise layer up to the pool fall 4x), which is where
a small CNN on a CPU spends its time: at batch 1 in LiteRT, tfopt's MNIST
student goes from 8.5 to 4.1 us with its first two pools made strides. Its
kernels keep their shapes, so the weights carry over and a short (distilled)
fine-tune recovers the accuracy: the stride samples one position of four
where the pool took the largest.

A pair is rewritten only when nothing else reads the convolution or the
layers between it and the pool, and when the stride gives the pool's output
shape ("same" padding on an even size, or "valid" where the sizes agree);
every other layer keeps its weights' shapes, which the rewrite checks one pair
at a time. Pools with other windows (ResNet's 3 x 3 stem pool) and global
pools are left alone.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

from tfopt.core._keras import inbound_layer_names, keras, map_inbound_refs, require_keras2_model
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import Dataset
from tfopt.techniques.distill.algorithm import Teacher, fine_tune
from tfopt.techniques.strided.settings import StridedConfig
from tfopt.training import train

__all__ = ["StridedError", "StridedResult", "downsampling_pairs", "strided",
           "strided_and_finetuned"]

POOLS = ("MaxPooling2D", "AveragePooling2D")
CONVS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")
# Layers that act on each position alone, kept between the conv and its pool.
POINTWISE = ("BatchNormalization", "ReLU", "Activation", "LeakyReLU", "ELU", "PReLU",
             "Dropout")


class StridedError(TfoptError, ValueError):
  """A model with no pool to fold into a stride, or one that cannot be rebuilt."""


@dataclasses.dataclass
class StridedResult:
  """The rewritten model and what changed: (conv, pool) pairs folded, and the
  pairs left as they were, each with why."""
  model: keras.Model
  folded: List[Tuple[str, str]]
  kept: List[str]
  val_accuracy_before_finetune: Optional[float] = None
  val_accuracy_after_finetune: Optional[float] = None


def _consumers(layers: List[dict]) -> Dict[str, List[str]]:
  readers: Dict[str, List[str]] = {}
  for layer in layers:
    for node in layer["inbound_nodes"]:
      for name in inbound_layer_names(node):
        readers.setdefault(name, []).append(layer["name"])
  return readers


def _is_2x2_pool(layer: dict) -> bool:
  config = layer["config"]
  return (layer["class_name"] in POOLS and tuple(config["pool_size"]) == (2, 2)
          and tuple(config.get("strides") or config["pool_size"]) == (2, 2)
          and config.get("data_format", "channels_last") in (None, "channels_last")
          and len(layer["inbound_nodes"]) == 1)


def downsampling_pairs(model: keras.Model) -> List[Tuple[str, str]]:
  """(conv, pool) name pairs whose conv could take the pool's stride: a 2 x 2
  pool reached from a stride-1, undilated conv through pointwise layers, each
  read by the next alone. Shapes are not checked here (see `strided`)."""
  layers = _functional(model).get_config()["layers"]
  by_name, readers = {layer["name"]: layer for layer in layers}, _consumers(layers)
  pairs = []
  for pool in filter(_is_2x2_pool, layers):
    reader = pool["name"]
    sources = inbound_layer_names(pool["inbound_nodes"][0])
    name = sources[0] if len(sources) == 1 else None
    while name and by_name[name]["class_name"] in POINTWISE and readers[name] == [reader]:
      node = by_name[name]["inbound_nodes"]
      sources = inbound_layer_names(node[0]) if len(node) == 1 else []
      reader, name = name, sources[0] if len(sources) == 1 else None
    conv = by_name.get(name) if name else None
    if (conv and conv["class_name"] in CONVS and readers[name] == [reader]
        and len(conv["inbound_nodes"]) == 1
        and tuple(conv["config"]["strides"]) == (1, 1)
        and tuple(conv["config"].get("dilation_rate", (1, 1))) == (1, 1)):
      pairs.append((name, pool["name"]))
  return pairs


def _functional(model: keras.Model) -> keras.Model:
  require_keras2_model(model)
  if isinstance(model, keras.Sequential):
    return keras.Model(model.inputs, model.outputs, name=model.name)
  return model


def _folded_config(config: dict, pairs: List[Tuple[str, str]]) -> dict:
  """The model's config with each pair's conv strided and its pool removed."""
  config = dict(config)
  convs = {conv for conv, _ in pairs}
  pools = {pool for _, pool in pairs}
  source = {}
  layers = []
  for layer in config["layers"]:
    if layer["name"] in pools:
      source[layer["name"]] = inbound_layer_names(layer["inbound_nodes"][0])[0]
      continue
    if layer["name"] in convs:
      layer = dict(layer, config=dict(layer["config"], strides=(2, 2)))
    layers.append(layer)

  def rewire(ref):
    return [source[ref[0]]] + list(ref[1:]) if ref[0] in source else ref

  config["layers"] = [dict(layer, inbound_nodes=map_inbound_refs(layer["inbound_nodes"], rewire))
                      for layer in layers]
  config["output_layers"] = map_inbound_refs(config["output_layers"], rewire)
  return config


def _rebuild(model: keras.Model, pairs: List[Tuple[str, str]]) -> keras.Model:
  try:
    return keras.Model.from_config(_folded_config(model.get_config(), pairs))
  except (ValueError, TypeError, KeyError) as error:
    raise StridedError(f"Cannot rebuild {model.name!r} with strided convolutions: "
                       f"{error}") from error


def _same_shapes(model: keras.Model, rebuilt: keras.Model) -> bool:
  """Whether every layer's weights and the outputs keep their shapes."""
  if [tuple(shape) for shape in _output_shapes(rebuilt)] != [
      tuple(shape) for shape in _output_shapes(model)]:
    return False
  return all([weight.shape for weight in layer.weights]
             == [weight.shape for weight in model.get_layer(layer.name).weights]
             for layer in rebuilt.layers)


def _output_shapes(model):
  return [output.shape for output in model.outputs]


def strided(model: keras.Model) -> StridedResult:
  """`model` with every pair of `downsampling_pairs` that keeps the shapes
  folded into a strided conv, its weights copied; `model` is not modified.

  Raises:
    StridedError: no pair can be folded, or the model cannot be rebuilt.
  """
  model = _functional(model)
  folded, kept = [], []
  rebuilt = model
  for pair in downsampling_pairs(model):
    try:
      trial = _rebuild(model, folded + [pair])
    except StridedError as error:  # e.g. a layer after it that checks its input size
      kept.append(f"{pair[1]} after {pair[0]}: {str(error).splitlines()[0]}")
      continue
    if _same_shapes(model, trial):
      folded.append(pair)
      rebuilt = trial
    else:
      kept.append(f"{pair[1]} after {pair[0]}: a stride changes the shapes after it")
  if not folded:
    raise StridedError(
        f"{model.name!r} has no 2 x 2 pool that a stride-2 convolution before it can "
        "replace with the same shapes after it" + (f" ({'; '.join(kept)})" if kept else ""))
  for layer in rebuilt.layers:
    layer.set_weights(model.get_layer(layer.name).get_weights())
  return StridedResult(rebuilt, folded, kept)


def strided_and_finetuned(model: keras.Model, dataset: Dataset, config: StridedConfig,
                          teacher: Optional[Teacher] = None, verbose: int = 2,
                          fits: Optional[train.FitContext] = None) -> StridedResult:
  """`strided(model)`, then fine-tuned (distilled from `teacher` if given;
  `fits`: a pipeline stage's checkpoints and clock, see train.fit), with the
  validation accuracy before and after the fine-tune."""
  result = strided(model)
  batch_size = config.batch_size
  before = train.accuracy(result.model, dataset.x_val, dataset.y_val, batch_size)
  fine_tune(result.model, dataset, config.finetune_epochs, batch_size, config.learning_rate,
            teacher=teacher, verbose=verbose, fits=fits)
  after = train.accuracy(result.model, dataset.x_val, dataset.y_val, batch_size)
  return dataclasses.replace(result, val_accuracy_before_finetune=before,
                             val_accuracy_after_finetune=after)
