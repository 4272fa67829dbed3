"""Training on more than one device with tf.distribute.

    --strategy default       one device (TensorFlow's default strategy)
    --strategy mirrored      every local GPU (else every logical CPU device), one
                             replica each, gradients all-reduced (MirroredStrategy)
    --strategy multi_worker  the same across machines: the cluster comes from the
                             TF_CONFIG environment variable of each worker
                             (MultiWorkerMirroredStrategy)

The teacher, distill and prune stages build and train their models under the
strategy; the batch size in the config is per replica, so the global batch
is batch_size x replicas. Each distributed stage hands the rest of the
pipeline an ordinary copy of its model (plain variables), so conversion,
saving and the other stages see no difference.
"""

import contextlib
import json
import os
import re
from typing import Optional

import tensorflow as tf

from tfopt.config import STRATEGIES
from tfopt.core._keras import keras
from tfopt.core.errors import TfoptError

__all__ = ["STRATEGIES", "DistributionError", "WorkerLostError", "Distribution"]

_TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", '
                      '"host2:12345"]}, "task": {"type": "worker", "index": 0}}\'')


class DistributionError(TfoptError, ValueError):
  """The strategy cannot be set up (e.g. a missing or malformed TF_CONFIG)."""


class WorkerLostError(TfoptError, RuntimeError):
  """Another worker of a multi-worker run died or stopped answering."""


def read_tf_config(environ=os.environ) -> dict:
  """The TF_CONFIG of a multi-worker run, checked.

  Raises:
    DistributionError: unset, not JSON, or without this task in the cluster.
  """
  text = environ.get("TF_CONFIG")
  if not text:
    raise DistributionError(
        "--strategy multi_worker reads the cluster from the TF_CONFIG "
        f"environment variable, which is not set; set it on every worker, e.g. "
        f"{_TF_CONFIG_EXAMPLE} (index 1 on the second).")
  try:
    tf_config = json.loads(text)
    task_type, index = tf_config["task"]["type"], int(tf_config["task"]["index"])
    members = tf_config["cluster"][task_type]
    if not 0 <= index < len(members):
      raise IndexError(f"task index {index} with {len(members)} {task_type}(s)")
  except (ValueError, KeyError, TypeError, IndexError) as error:
    raise DistributionError(
        f"TF_CONFIG is malformed ({type(error).__name__}: {error}); it must be "
        f"JSON like {_TF_CONFIG_EXAMPLE}, with this worker's task in the "
        "cluster.") from error
  return tf_config


class Distribution:
  """The strategy of a run, and what the stages need from it.

  Create it before any other TensorFlow work in the process:
  MultiWorkerMirroredStrategy must be set up first.
  """

  def __init__(self, name: str = "default", worker_timeout: float = 600.0):
    if name not in STRATEGIES:
      raise DistributionError(f"strategy={name!r} is invalid: it must be one of "
                              f"{', '.join(STRATEGIES)}.")
    self.name = name
    self.worker_timeout = worker_timeout
    self.task: Optional[dict] = None
    if name == "default":
      self.strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
      self.strategy = tf.distribute.MirroredStrategy(devices=_local_devices())
    else:
      tf_config = read_tf_config()
      self.task, self.cluster = tf_config["task"], tf_config["cluster"]
      try:
        # A dead worker is found by TensorFlow's coordination service (its
        # heartbeats stop, ~20 s); a hung one by this timeout on every collective.
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=worker_timeout))
      except RuntimeError as error:  # TensorFlow already started in this process
        raise DistributionError(
            f"--strategy multi_worker could not start ({error}): it must be set "
            "up before any other TensorFlow work in the process. Run it as its "
            "own process (python -m tfopt.pipeline), or call pipeline.run "
            "before building or loading any model.") from error

  @property
  def replicas(self) -> int:
    return self.strategy.num_replicas_in_sync

  @property
  def is_chief(self) -> bool:
    """Whether this process writes the run's files (worker 0 or the chief)."""
    return (self.task is None or self.task["type"] == "chief"
            or (self.task["type"] == "worker" and int(self.task["index"]) == 0))

  def describe(self) -> str:
    if self.name == "default":
      return "one device"
    devices = ", ".join(self.strategy.extended.worker_devices)
    where = (f", worker {self.task['type']}:{self.task['index']}" if self.task else "")
    return f"{self.name}: {self.replicas} replica(s) ({devices}{where})"

  def scope(self):
    return self.strategy.scope()

  @contextlib.contextmanager
  def other_workers_watched(self):
    """Turns a collective aborted by a lost worker into a WorkerLostError naming it."""
    if self.name != "multi_worker":
      yield
      return
    try:
      yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError,
            tf.errors.DeadlineExceededError, tf.errors.CancelledError) as error:
      raise WorkerLostError(self._lost_message(error)) from None

  def _lost_message(self, error) -> str:
    me = (self.task["type"], int(self.task["index"]))
    lost = sorted({(kind, int(index)) for kind, index in re.findall(
        r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)", str(error.message))} - {me})
    named = ", ".join(f"{kind}:{index} ({self.cluster[kind][index]})"
                      if kind in self.cluster and index < len(self.cluster[kind])
                      else f"{kind}:{index}" for kind, index in lost)
    if isinstance(error, tf.errors.DeadlineExceededError):
      what = (f"a collective waited more than {self.worker_timeout:g} s for the other "
              f"worker(s){' ' + named if named else ''} (--worker_timeout)")
    else:
      what = (f"worker {named or 'of the cluster'} stopped answering (its heartbeats "
              "stopped: it crashed, was killed or lost the network)")
    return (f"The multi-worker run stopped: {what}. This worker "
            f"({me[0]}:{me[1]}) stops too. Read that worker's log for its error, "
            "then start the same command on every worker again.")

  def global_batch(self, batch_size: int) -> int:
    """The batch one training step takes: batch_size per replica."""
    return batch_size * self.replicas

  def in_scope(self, model: keras.Model) -> keras.Model:
    """`model`, or a copy of it with variables made under the strategy."""
    if self.name == "default":
      return model
    with self.scope():
      return _copy(model)

  def plain(self, model: keras.Model) -> keras.Model:
    """`model`, or a copy of it with ordinary (not mirrored) variables."""
    return model if self.name == "default" else _copy(model)


def _copy(model: keras.Model) -> keras.Model:
  copy = keras.models.clone_model(model)
  copy.set_weights(model.get_weights())
  return copy


def _local_devices():
  """Every GPU; without GPUs, every logical CPU device."""
  gpus = tf.config.list_logical_devices("GPU")
  return [device.name for device in (gpus or tf.config.list_logical_devices("CPU"))]
