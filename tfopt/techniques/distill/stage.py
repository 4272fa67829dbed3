"""distill: a student learns from the teacher (Hinton 2015, tfopt.techniques.distill.algorithm).

The student (`--student` builder) is trained by distillation under the run's
tf.distribute strategy. Its initial weights are kept in
student_initial_weights.npz, so the scratch control starts from the same ones.
From here on, the stages compress the student.
"""

import dataclasses
import functools

from tfopt.keras_io import models
from tfopt.stages.base import ModelEntry, NewModel, Stage, StageOutput
from tfopt.techniques.distill import algorithm as distill

INITIAL_WEIGHTS_FILE = "student_initial_weights.npz"
STUDENT = ModelEntry("student_distilled", "distilled student", "student_distilled",
                     "student")


class DistillStage(Stage):
  name = "distill"
  settings = ("distill",)

  def training_epochs(self, config):
    return config.distill.epochs

  def preflight(self, config, dataset, architecture):
    # Later stages see the student, not the teacher.
    return functools.lru_cache(maxsize=None)(lambda: models.build_model(
        config.distill.builder, dataset.input_shape, dataset.num_classes))

  def run(self, context) -> StageOutput:
    config = context.config.distill
    context.log(f"distill: student {config.builder!r}, {config.epochs} epoch(s), "
                f"temperature {config.temperature}, alpha {config.alpha}")
    distribution = context.distribution
    with distribution.scope():
      student = context.build(config.builder)
      context.write_arrays(INITIAL_WEIGHTS_FILE, student.get_weights())
      teacher = context.teacher()
      distill.distill(dataclasses.replace(teacher, model=distribution.in_scope(teacher.model)),
                      student, context.dataset, context.per_replica(config),
                      fits=context.fits)
    return StageOutput(models=[NewModel(STUDENT, distribution.plain(student))],
                       record={"initial_weights": INITIAL_WEIGHTS_FILE})


STAGE = DistillStage()
