"""scratch: the distilled student's control, trained from the labels only.

Same builder, same initial weights (distill's student_initial_weights.npz),
same epochs and shuffles: what distillation gained is the difference. The
control is not a step of the chain: the next stage still takes the distilled
student.
"""

import numpy as np

from tfopt.config import TrainConfig
from tfopt.core.validate import require
from tfopt.stages.base import ModelEntry, NewModel, Stage, StageOutput
from tfopt.training import train

SCRATCH = ModelEntry("student_scratch", "scratch student", "student_scratch", "student")


class ScratchStage(Stage):
  name = "scratch"
  settings = ("distill",)

  def training_epochs(self, config):
    return config.distill.epochs

  def check_chain(self, config, before):
    stages = ",".join(config.stages)
    require("distill" in before, "stages", stages, "a list with distill before scratch")

  def run(self, context) -> StageOutput:
    config = context.config.distill
    context.log(f"scratch: the same student, same initial weights, trained from labels "
                f"only for {config.epochs} epoch(s) (control for distillation)")
    student = context.build(config.builder)
    student.set_weights(_load_arrays(context.path(
        context.records["distill"]["initial_weights"])))
    train.train_classifier(student, context.dataset, TrainConfig(
        config.builder, config.epochs, config.batch_size, config.learning_rate),
                           fits=context.fits)
    return StageOutput(models=[NewModel(SCRATCH, student, current=False)])


def _load_arrays(path: str) -> list:
  with np.load(path, allow_pickle=False) as archive:
    return [archive[f"arr_{index}"] for index in range(len(archive.files))]


STAGE = ScratchStage()
