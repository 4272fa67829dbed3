"""distill: a student learns from the teacher (Hinton 2015, tfopt.techniques.distill.algorithm).

The student (`--student` builder) is trained by distillation under the run's
tf.distribute strategy. Its initial weights are kept in
student_initial_weights.npz, so the scratch control starts from the same ones.
From here on, the stages compress the student.
"""

import dataclasses
import functools
import time

from tfopt.core import progress
from tfopt.core._keras import keras
from tfopt.keras_io import models
from tfopt.stages.base import ModelEntry, NewModel, Stage, StageOutput, TaskStage
from tfopt.techniques.distill import algorithm as distill
from tfopt.techniques.distill.on_task import TaskDistillConfig, student_of

INITIAL_WEIGHTS_FILE = "student_initial_weights.npz"
STUDENT = ModelEntry("student_distilled", "distilled student", "student_distilled",
                     "student")


# On a user's task (tfopt.run.task_run).
def _run_on_task(run, model, config: TaskDistillConfig):
  """A student `config.width` as wide, fresh, distilled from `model`; with
  compare_scratch, the same student from the same weights on labels only."""
  student = student_of(model, config.width, run.seed)
  initial = student.get_weights()
  progress.log(f"distill: a student {config.width:.0%} as wide "
               f"({student.count_params():,} parameters, {model.count_params():,} in "
               f"the teacher) for {config.epochs} epoch(s), per-output distillation")
  started = time.perf_counter()
  history = run.fit(student, config.epochs, config.learning_rate, teacher=True,
                    teacher_model=model)
  record = {"width": config.width, "epochs": config.epochs, "alpha": config.alpha,
            "temperature": config.temperature, "params": int(student.count_params()),
            "teacher_params": int(model.count_params()),
            "train_loss": [float(value) for value in history.history.get("loss", [])],
            "seconds": time.perf_counter() - started}
  name = run.name("distilled")
  if config.compare_scratch:
    scratch = keras.models.clone_model(student)
    scratch.set_weights(initial)
    keras.utils.set_random_seed(run.seed)
    progress.log("distill: the same student from the same weights on the task's "
                 "labels only (control)")
    run.fit(scratch, config.epochs, config.learning_rate)
    run.add(f"{name}_scratch", scratch, {"control_of": name}, final=False)
  run.add(name, student, record)
  return student


class DistillStage(Stage):
  name = "distill"
  on_task = TaskStage(TaskDistillConfig, _run_on_task)
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
