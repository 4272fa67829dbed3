"""Distillation on a task: per output, a student learns the teacher's outputs.

    loss = alpha * sum_o D_o(teacher_o, student_o) + (1 - alpha) * sum_o L_o(y_o, student_o)

L_o is the task's loss for output o. D_o, per output: for class scores (a
categorical cross-entropy task loss), temperature**2 * KL of the softened
distributions softmax(z / T). Where the output ends in softmax (the Keras
tutorials' heads), z = log(p): softmax(log(p) / T) = softmax(logits / T)
exactly, the per-example log-sum-exp cancelling, so a softmax head is
distilled at the same temperature as a logits head. For every other output (boxes, masks' logits
under another loss, reconstructions, regression), the mean squared error to
the teacher's output; or the user's own distill_loss(teacher, student).

The `distill` task stage trains a smaller student of the same architecture
(each slimmable channel group cut to `width`, fresh weights) from the
teacher (the model given), and with compare_scratch the same student from
the task's labels alone, for the same epochs from the same initial weights.
"""

import dataclasses
from typing import Callable, Dict, List

import numpy as np
import tensorflow as tf

from tfopt.core._keras import keras
from tfopt.core.validate import (require, require_fraction, require_positive_int,
                                 require_positive_number)
from tfopt.task.definition import Task, TaskError
from tfopt.techniques.distill.algorithm import StudentTrainer
from tfopt.techniques.slim import channel_groups, channels

__all__ = ["TaskDistillConfig", "TaskDistiller", "distill_losses", "student_of"]


@dataclasses.dataclass(frozen=True)
class TaskDistillConfig:
  """The distill task stage: a narrower student learns the model's outputs.

  alpha and temperature also serve the other stages' fine-tuning when their
  use_teacher is on.

  width: the student's share of each slimmable channel group, in (0, 1].
  temperature: T of the softened class scores, softmax(z / T) (class-score
    outputs only; the others are distilled by mean squared error).
  alpha: the distillation terms' weight; the task's loss gets 1 - alpha.
  compare_scratch: also train the same student from the same weights on the
    task's labels alone, as a control.
  """
  width: float = 0.5
  epochs: int = 10
  learning_rate: float = 2e-3
  temperature: float = 2.0
  alpha: float = 0.5
  compare_scratch: bool = False

  def __post_init__(self):
    require_fraction("width", self.width, low_open=True, high_open=False)
    require_positive_int("epochs", self.epochs)
    require_positive_number("learning_rate", self.learning_rate)
    require_positive_number("temperature", self.temperature)
    require_fraction("alpha", self.alpha, high_open=False)
    require(isinstance(self.compare_scratch, bool), "compare_scratch",
            self.compare_scratch, "True or False")


def _ends_in_softmax(tensor) -> bool:
  layer = tensor._keras_history.layer  # pylint: disable=protected-access
  if isinstance(layer, keras.layers.Softmax):
    return True
  activation = getattr(layer, "activation", None)
  return getattr(activation, "__name__", "") == "softmax"


def distill_losses(task: Task, teacher: keras.Model, temperature: float,
                   user_loss=None) -> List[Callable]:
  """D_o for each task output, in order (see the module docstring)."""
  from tfopt.task.measure import is_class_scores  # pylint: disable=g-import-not-at-top
  user = _per_output(user_loss, task)
  found = []
  for output, tensor in zip(task.outputs, teacher.outputs):
    if user.get(output.name) is not None:
      found.append(user[output.name])
    elif is_class_scores(task, output.name):
      found.append(_softened_kl(temperature, _ends_in_softmax(tensor)))
    else:
      found.append(lambda teacher_out, student_out: tf.reduce_mean(
          tf.square(tf.cast(teacher_out, tf.float32) - student_out)))
  return found


def _per_output(user_loss, task: Task) -> Dict[str, Callable]:
  if user_loss is None:
    return {}
  if isinstance(user_loss, dict):
    unknown = [name for name in user_loss if name not in [o.name for o in task.outputs]]
    if unknown:
      raise TaskError(f"distill_loss names outputs the model does not have: {unknown}.")
    return dict(user_loss)
  if not callable(user_loss):
    raise TaskError("distill_loss must be fn(teacher_output, student_output) or a dict "
                    "of them per output.")
  return {output.name: user_loss for output in task.outputs}


def _softened_kl(temperature: float, probabilities: bool) -> Callable:
  def kl(teacher_out, student_out):
    teacher_logits = tf.cast(teacher_out, tf.float32)
    student_logits = student_out
    if probabilities:
      teacher_logits, student_logits = _log(teacher_logits), _log(student_logits)
    log_teacher = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
    log_student = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    per_position = tf.reduce_sum(tf.exp(log_teacher) * (log_teacher - log_student), -1)
    return temperature ** 2 * tf.reduce_mean(per_position)
  return kl


def _log(probabilities):
  """Logits of a softmax output, up to a per-example constant (which the
  softmax at T cancels); probabilities that underflowed count as 1e-30."""
  return tf.math.log(tf.maximum(probabilities, 1e-30))


class TaskDistiller(StudentTrainer):
  """Fits `student` to the task's targets and to a frozen `teacher`'s outputs.

  The teacher runs outside the tape in inference mode; the trainable weights
  are the student's alone. test_step reports the task loss only.
  """

  def __init__(self, student, teacher, task_losses, teacher_losses, alpha: float):
    super().__init__()
    self.student, self.teacher, self.alpha = student, teacher, float(alpha)
    self.task_losses, self.teacher_losses = list(task_losses), list(teacher_losses)
    self.trackers = {name: keras.metrics.Mean(name=name)
                     for name in ("loss", "task_loss", "distillation_loss")}

  @property
  def metrics(self):
    return list(self.trackers.values())

  def _task_loss(self, targets, outputs):
    targets = targets if isinstance(targets, (tuple, list)) else [targets]
    return tf.add_n([tf.reduce_mean(loss(target, output)) for loss, target, output
                     in zip(self.task_losses, targets, outputs)])

  def train_step(self, data):
    inputs, targets = data[0], data[1]
    taught = _as_list(self.teacher(inputs, training=False))
    with tf.GradientTape() as tape:
      outputs = _as_list(self.student(inputs, training=True))
      task_loss = self._task_loss(targets, outputs)
      distillation = tf.add_n([tf.reduce_mean(loss(teacher_out, output)) for loss, teacher_out,
                               output in zip(self.teacher_losses, taught, outputs)])
      loss = self.alpha * distillation + (1 - self.alpha) * task_loss
      if self.student.losses:
        loss += tf.add_n(self.student.losses)
    variables = self.student.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    for name, value in (("loss", loss), ("task_loss", task_loss),
                        ("distillation_loss", distillation)):
      self.trackers[name].update_state(value)
    return {name: tracker.result() for name, tracker in self.trackers.items()}

  def test_step(self, data):
    outputs = _as_list(self.student(data[0], training=False))
    self.trackers["loss"].update_state(self._task_loss(data[1], outputs))
    return {"loss": self.trackers["loss"].result()}


def _as_list(values) -> list:
  return list(values) if isinstance(values, (list, tuple)) else [values]


def student_of(model: keras.Model, width: float, seed: int) -> keras.Model:
  """The same architecture with each slimmable channel group cut to `width`
  of its channels (at least one), with fresh weights from `seed`."""
  model = channels.functional_model(model)
  keep = {}
  for group in channel_groups.channel_groups(model):
    if group.frozen is None:
      kept = np.arange(max(1, int(round(width * group.width))))
      keep.update({name: kept for name in group.producers})
  smaller = channels.remove_channels(model, keep) if keep and width < 1 else model
  keras.utils.set_random_seed(seed)
  return keras.models.clone_model(smaller)  # fresh initializers, same graph
