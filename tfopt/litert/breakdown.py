"""Where a model's latency comes from, measured segment by segment in LiteRT.

The model is cut before each layer that does arithmetic (Conv2D,
DepthwiseConv2D, Dense, tfopt's low-rank layers). Every prefix (input -> cut)
is converted the same way as the full model and timed in LiteRT; a segment's
latency is the difference between consecutive prefixes, so it includes the
ops the converter fused with or placed after its compute layer (BatchNorm,
activation, pooling, reshape). Prefix differences are medians of separate
measurements, so a small segment can come out slightly negative: that is
noise, and it is reported as measured.

This is exact for chains (every model tfopt builds). Where a graph branches,
a prefix holds only the cut tensor's ancestors and the split is approximate.
"""

import dataclasses
import os
import tempfile
from typing import List

import numpy as np

from tfopt.core._keras import keras
from tfopt.core.artifacts import write_bytes_atomic
from tfopt.keras_io.macs import count_macs
from tfopt.litert import convert, evaluate

__all__ = ["Segment", "AUTO_MAX_SEGMENTS", "latency_breakdown"]

ROUNDS = 5
# EvaluateConfig.latency_breakdown=None times models up to this many compute
# layers: one conversion per segment makes deep backbones take many minutes.
AUTO_MAX_SEGMENTS = 32


@dataclasses.dataclass
class Segment:
  """The ops from one compute layer up to the next compute layer."""
  layer: str
  kind: str
  macs: int
  latency_us: float
  cumulative_us: float


def _prefixes(model: keras.Model, compute: List[str]) -> List[keras.Model]:
  """Models from the input to the input of each compute layer after the first."""
  # A fresh copy whose layers were each called once, in this graph only (a
  # stripped or cloned model's layers can belong to several graphs).
  model_copy = keras.Model.from_config(model.get_config())
  model_copy.set_weights(model.get_weights())
  model = model_copy
  prefixes = []
  for name in compute[1:]:
    cut = model.get_layer(name).input
    if isinstance(cut, (list, tuple)):
      raise ValueError(f"layer {name!r} has several inputs")
    prefixes.append(keras.Model(model.inputs, cut, name=f"prefix_{name}"))
  return prefixes + [model]


def latency_breakdown(model: keras.Model, mode: str, images: np.ndarray,
                      representative_examples: int = 100, num_threads: int = 1,
                      warmup: int = 20, runs: int = 200) -> List[Segment]:
  """Per-segment LiteRT latency of `model` converted with `mode`.

  Args:
    model: a built Keras 2 functional model.
    mode: conversion mode, as for tfopt.litert.convert.to_tflite.
    images: inputs; the first is timed, `representative_examples` of them
      calibrate int8.
    warmup / runs: invokes per prefix in each of ROUNDS interleaved rounds;
      each prefix's latency is the median of its per-round medians.

  Returns:
    One Segment per compute layer, in graph order; cumulative_us of the last
    is the full model's latency in this measurement.

  Raises:
    ValueError: a compute layer has several inputs (cannot cut there).
  """
  table = count_macs(model)
  with tempfile.TemporaryDirectory(prefix="tfopt-breakdown-") as workdir:
    paths = [write_bytes_atomic(
        os.path.join(workdir, f"prefix{index}.tflite"),
        convert.to_tflite(prefix, mode, images, representative_examples))
             for index, prefix in enumerate(
                 _prefixes(model, [entry.layer for entry in table]))]
    # Interleaved rounds, so that a slow spell of the machine hits every
    # prefix alike instead of one segment.
    rounds = np.array([[evaluate.latency_us(path, images[0], num_threads,
                                            warmup, runs)
                        for path in paths] for _ in range(ROUNDS)])
  cumulative = np.median(rounds, axis=0).tolist()
  previous = [0.0] + cumulative[:-1]
  return [Segment(entry.layer, entry.kind, entry.macs, total - before, total)
          for entry, total, before in zip(table, cumulative, previous)]
