"""Knowledge distillation (Hinton et al. 2015): a student learns from a teacher.

    loss = alpha * temperature**2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * CE(labels, student)

Here `alpha` weighs the distillation term (the keras.io example uses the
opposite convention: its alpha weighs the label term).

The teacher is frozen, so on data that is not augmented its logits are the
same every epoch: a Teacher may carry them for the training images
(`train_logits`, see `with_train_logits`), and the Distiller then reads them
with each batch instead of running the teacher. With augmentation the teacher
runs on the same augmented batch as the student ("consistent teaching").
"""

import dataclasses
from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfopt.config import DistillConfig
from tfopt.core._keras import keras, require_keras2_model
from tfopt.data.datasets import Dataset
from tfopt.keras_io.predict import predict_logits
from tfopt.training.train import FitContext, classifier_loss, fit, make_optimizer

__all__ = ["Teacher", "as_teacher", "StudentTrainer", "Distiller", "distill", "fine_tune",
           "trainer_for"]


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A trained model to distill from, with the loss's alpha and temperature.

  Every fine-tuning technique (prune, slim, cluster, qat, lowrank, binary,
  sensitivity) takes one as `teacher=`; a plain Keras model is accepted too
  and gets the DistillConfig defaults.
  """
  model: keras.Model
  alpha: float = DistillConfig.alpha
  temperature: float = DistillConfig.temperature
  # The teacher's logits for the dataset's training images, in order, or None.
  train_logits: Optional[np.ndarray] = dataclasses.field(default=None, compare=False,
                                                          repr=False)

  def __post_init__(self):
    DistillConfig(alpha=self.alpha, temperature=self.temperature)  # validates

  def with_train_logits(self, dataset: Dataset, batch_size: int = 1000) -> "Teacher":
    """This teacher carrying its logits for dataset.x_train (computed once);
    unchanged for augmented data, where every epoch sees other images."""
    if dataset.augment:
      return self
    return dataclasses.replace(
        self, train_logits=predict_logits(self.model, dataset.x_train, batch_size))

  def targets(self, dataset: Dataset):
    """What fit() trains on: (labels, the cached logits), or the labels alone."""
    if self.train_logits is None or len(self.train_logits) != len(dataset.y_train):
      return dataset.y_train
    return (dataset.y_train, self.train_logits)


def as_teacher(teacher: Union[None, "Teacher", keras.Model]) -> Optional[Teacher]:
  """`teacher` as a Teacher (a Keras model gets the default alpha and temperature)."""
  if teacher is None or isinstance(teacher, Teacher):
    return teacher
  return Teacher(teacher)


class StudentTrainer(keras.Model):
  """A model that trains `self.student` beside a frozen `self.teacher`:
  its trainable weights are the student's alone, and it runs as the student."""

  @property
  def trainable_weights(self):
    return self.student.trainable_weights

  @property
  def trained_model(self):
    """What training changes (train.fit checkpoints it): the student alone."""
    return self.student

  @property
  def non_trainable_weights(self):
    return self.student.non_trainable_weights + self.teacher.weights

  def call(self, inputs, training=False):
    return self.student(inputs, training=training)


class Distiller(StudentTrainer):
  """Trains `student` to match a frozen `teacher` and the labels.

  The teacher is frozen: it runs outside the gradient tape in inference mode,
  so neither its weights nor its BatchNorm statistics change, and the
  Distiller's trainable weights are the student's alone. The caller's teacher
  object is not modified (its `trainable` flag stays as it was), so it can
  still be fine-tuned or pruned later. `test_step` and `call` use the student.

  Args:
    student: the Keras 2 model to train; outputs logits.
    teacher: a trained Keras 2 model with the same output size; outputs logits.
    alpha: weight of the distillation term, in [0, 1].
    temperature: softmax temperature T > 0 for both models' logits.
  """

  def __init__(self, student, teacher, alpha=0.5, temperature=2.0, **kwargs):
    super().__init__(**kwargs)
    DistillConfig(alpha=alpha, temperature=temperature)  # validates both.
    self.student = require_keras2_model(student, "student")
    self.teacher = require_keras2_model(teacher, "teacher")
    self.alpha = float(alpha)
    self.temperature = float(temperature)
    # Per-example losses, averaged over the global batch in train_step: under
    # a tf.distribute strategy each replica sees 1/N of the batch and the
    # gradients of the N replicas are summed.
    none = keras.losses.Reduction.NONE
    self.student_loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=none)
    self.distillation_loss_fn = keras.losses.KLDivergence(reduction=none)
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
    self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")

  @property
  def metrics(self):
    return [self.loss_tracker, self.student_loss_tracker,
            self.distillation_loss_tracker] + super().metrics

  def distillation_loss(self, teacher_logits, student_logits):
    """temperature**2 * KL(softmax(teacher/T) || softmax(student/T)), per example."""
    soft_teacher = tf.nn.softmax(teacher_logits / self.temperature, axis=-1)
    soft_student = tf.nn.softmax(student_logits / self.temperature, axis=-1)
    return self.temperature ** 2 * self.distillation_loss_fn(soft_teacher,
                                                             soft_student)

  def train_step(self, data):
    images, targets = data
    if isinstance(targets, (tuple, list)):  # the teacher's logits came with the batch
      labels, teacher_logits = targets
    else:
      labels, teacher_logits = targets, self.teacher(images, training=False)
    with tf.GradientTape() as tape:
      student_logits = self.student(images, training=True)
      student_loss = self.student_loss_fn(labels, student_logits)
      distillation_loss = self.distillation_loss(teacher_logits, student_logits)
      per_example = self.alpha * distillation_loss + (1 - self.alpha) * student_loss
      # The mean over the global batch (over this batch on one device), plus
      # the student's own regularization losses, split across replicas.
      loss = tf.nn.compute_average_loss(per_example)
      if self.student.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(self.student.losses))
    variables = self.student.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return self._update_metrics(labels, student_logits, tf.reduce_mean(per_example),
                                tf.reduce_mean(student_loss),
                                tf.reduce_mean(distillation_loss))

  def test_step(self, data):
    images, labels = data
    student_logits = self.student(images, training=False)
    student_loss = self.student_loss_fn(labels, student_logits)
    self.compiled_metrics.update_state(labels, student_logits)
    self.student_loss_tracker.update_state(tf.reduce_mean(student_loss))
    return {metric.name: metric.result() for metric in self.metrics
            if metric is not self.loss_tracker
            and metric is not self.distillation_loss_tracker}

  def _update_metrics(self, labels, student_logits, loss, student_loss,
                      distillation_loss):
    self.loss_tracker.update_state(loss)
    self.student_loss_tracker.update_state(student_loss)
    self.distillation_loss_tracker.update_state(distillation_loss)
    self.compiled_metrics.update_state(labels, student_logits)
    return {metric.name: metric.result() for metric in self.metrics}

  def get_config(self):
    return {
        "name": self.name,
        "student": _serialize_architecture(self.student),
        "teacher": _serialize_architecture(self.teacher),
        "alpha": self.alpha,
        "temperature": self.temperature,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in ("student", "teacher"):
      config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)


def _serialize_architecture(model: keras.Model) -> dict:
  """The model's serialized architecture, without its own compile settings."""
  serialized = keras.saving.serialize_keras_object(model)
  serialized.pop("compile_config", None)
  return serialized


def distill(teacher: Union[keras.Model, Teacher], student: keras.Model, dataset: Dataset,
            config: DistillConfig, verbose: int = 2,
            fits: Optional[FitContext] = None) -> keras.callbacks.History:
  """Trains `student` in place by distillation from `teacher`.

  Args:
    teacher: a trained Keras 2 model (kept frozen), or a Teacher carrying its
      training-set logits (its alpha and temperature are config's here).
    student: an untrained (or pre-trained) Keras 2 model with the same outputs.
    dataset: training and validation data.
    config: epochs, batch size, learning rate, temperature, alpha.
    verbose: Keras fit verbosity.
    fits: a pipeline stage's checkpoints and clock (see train.fit).

  Returns:
    The Keras History of the fit; the student's validation accuracy is
    `history.history["val_accuracy"]`.
  """
  teacher = as_teacher(teacher)
  distiller = Distiller(student, teacher.model, alpha=config.alpha,
                        temperature=config.temperature)
  distiller.compile(
      optimizer=make_optimizer(config.learning_rate, config.epochs,
                               len(dataset.x_train), config.batch_size),
      metrics=["accuracy"])
  return fit(distiller, dataset, config.epochs, config.batch_size, verbose=verbose,
             targets=teacher.targets(dataset), fits=fits)


def fine_tune(model: keras.Model, dataset: Dataset, epochs: int, batch_size: int,
              learning_rate: float,
              teacher: Union[None, Teacher, keras.Model] = None,
              callbacks: Sequence[keras.callbacks.Callback] = (),
              verbose: int = 2,
              fits: Optional[FitContext] = None) -> keras.callbacks.History:
  """Trains `model` in place after a compression step.

  With a `teacher` (a Teacher, or a Keras model with the default alpha and
  temperature), the loss is distillation from it (as in `distill`), which
  recovers more accuracy after pruning or factorizing than labels alone;
  without one, plain cross-entropy with the labels. `fits`: a pipeline
  stage's checkpoints and clock (see train.fit).
  """
  teacher = as_teacher(teacher)
  optimizer = make_optimizer(learning_rate, epochs, len(dataset.x_train),
                             batch_size)
  if teacher is None:
    trainer = model
    trainer.compile(optimizer=optimizer, loss=classifier_loss(),
                    metrics=["accuracy"])
  else:
    trainer = Distiller(model, teacher.model, alpha=teacher.alpha,
                        temperature=teacher.temperature)
    trainer.compile(optimizer=optimizer, metrics=["accuracy"])
  return fit(trainer, dataset, epochs, batch_size, callbacks, verbose,
             targets=None if teacher is None else teacher.targets(dataset), fits=fits)


def trainer_for(dataset: Dataset, batch_size: int, learning_rate: float,
                teacher: Union[None, Teacher, keras.Model] = None, verbose: int = 2,
                fits: Optional[FitContext] = None):
  """fine_tune on `dataset` as a function train(model, epochs, callbacks=()):
  what a technique calls after compressing, unless it is given another
  (a task's, which fits on the user's data with the user's loss)."""
  def train(model, epochs, callbacks=()):
    return fine_tune(model, dataset, epochs, batch_size, learning_rate, teacher=teacher,
                     callbacks=callbacks, verbose=verbose, fits=fits)
  return train
