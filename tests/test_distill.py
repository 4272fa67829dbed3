import numpy as np
import pytest

from tfopt.config import ConfigError, DistillConfig
from tfopt.core._keras import keras
from tfopt.keras_io import models
from tfopt.techniques.distill.algorithm import Distiller, distill
from tfopt.training import train


def test_distillation_loss_matches_the_formula():
  teacher = models.build_model("student", (28, 28, 1), 10)
  student = models.build_model("student", (28, 28, 1), 10)
  distiller = Distiller(student, teacher, alpha=0.7, temperature=3.0)
  rng = np.random.default_rng(0)
  teacher_logits = rng.normal(size=(5, 10)).astype(np.float32)
  student_logits = rng.normal(size=(5, 10)).astype(np.float32)

  def softmax(logits):
    exps = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exps / exps.sum(axis=1, keepdims=True)
  p, q = softmax(teacher_logits / 3.0), softmax(student_logits / 3.0)
  expected = 9.0 * np.sum(p * np.log(p / q), axis=1)  # one value per example
  got = distiller.distillation_loss(teacher_logits, student_logits).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_teacher_is_frozen_and_student_learns(dataset, trained_teacher):
  keras.utils.set_random_seed(2)
  teacher_weights = [w.copy() for w in trained_teacher.get_weights()]
  student = models.build_model("student", dataset.input_shape, 10)
  student_before = [w.copy() for w in student.get_weights()]
  history = distill(trained_teacher, student, dataset,
                    DistillConfig(epochs=4, batch_size=16), verbose=0)
  for before, after in zip(teacher_weights, trained_teacher.get_weights()):
    np.testing.assert_array_equal(before, after)  # incl. BatchNorm statistics
  assert trained_teacher.trainable  # frozen inside the Distiller only
  assert any(not np.array_equal(before, after) for before, after in
             zip(student_before, student.get_weights()))
  assert "distillation_loss" in history.history
  assert history.history["val_accuracy"][-1] > 0.9
  assert train.accuracy(student, dataset.x_test, dataset.y_test) > 0.9


def test_only_student_variables_are_trainable(trained_teacher):
  student = models.build_model("student", (28, 28, 1), 10)
  distiller = Distiller(student, trained_teacher)
  assert [v.ref() for v in distiller.trainable_variables] == [
      v.ref() for v in student.trainable_variables]
  teacher_refs = {v.ref() for v in trained_teacher.weights}
  assert teacher_refs <= {v.ref() for v in distiller.non_trainable_weights}
  # The caller's teacher object is left as it was.
  assert trained_teacher.trainable


def test_get_config_round_trips(trained_teacher):
  student = models.build_model("student", (28, 28, 1), 10)
  distiller = Distiller(student, trained_teacher, alpha=0.3, temperature=7.0,
                        name="my_distiller")
  config = distiller.get_config()
  restored = Distiller.from_config(config)
  assert restored.alpha == 0.3 and restored.temperature == 7.0
  assert restored.name == "my_distiller"
  assert restored.student.get_config() == student.get_config()
  assert restored.teacher.get_config() == trained_teacher.get_config()
  assert restored.get_config() == config


def test_invalid_hyper_parameters(trained_teacher):
  student = models.build_model("student", (28, 28, 1), 10)
  with pytest.raises(ConfigError, match="temperature"):
    Distiller(student, trained_teacher, temperature=0)
  with pytest.raises(ConfigError, match="alpha"):
    Distiller(student, trained_teacher, alpha=-0.5)


def _distilled_weights(teacher, dataset, seed=3):
  keras.utils.set_random_seed(seed)
  student = models.build_model("student", dataset.input_shape, 10)
  distill(teacher, student, dataset, DistillConfig(epochs=1, batch_size=64), verbose=0)
  return student.get_weights()


def test_cached_teacher_logits_train_the_same_student_without_running_the_teacher(
    dataset, trained_teacher):
  from tfopt.techniques.distill.algorithm import Teacher  # pylint: disable=g-import-not-at-top
  on_the_fly = _distilled_weights(Teacher(trained_teacher), dataset)
  logits = Teacher(trained_teacher).with_train_logits(dataset).train_logits
  cached = Teacher(keras.models.clone_model(trained_teacher), train_logits=logits)
  for weight in cached.model.weights:  # a teacher that ran now would teach nonsense
    weight.assign(np.zeros(weight.shape, weight.dtype.as_numpy_dtype))
  for before, after in zip(on_the_fly, _distilled_weights(cached, dataset)):
    np.testing.assert_allclose(before, after, atol=1e-5)
  assert cached.train_logits.shape == (len(dataset.x_train), 10)


def test_augmented_data_gets_no_cached_logits(dataset, trained_teacher):
  import dataclasses  # pylint: disable=g-import-not-at-top
  from tfopt.techniques.distill.algorithm import Teacher  # pylint: disable=g-import-not-at-top
  augmented = dataclasses.replace(dataset, augment=True)
  assert Teacher(trained_teacher).with_train_logits(augmented).train_logits is None
  assert Teacher(trained_teacher).targets(augmented) is augmented.y_train
