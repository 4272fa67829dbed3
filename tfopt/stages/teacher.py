"""teacher: the baseline every ratio is measured against.

Trains the `--teacher` builder on the labels under the run's tf.distribute
strategy, or, with `--model`, takes the user's trained model as it is (its
final softmax dropped: same predictions, logits out). Always the first stage.
"""

from tfopt.keras_io import model_io
from tfopt.stages.base import ModelEntry, NewModel, Stage, StageOutput
from tfopt.training import train

BASELINE = ModelEntry("teacher", "baseline", "baseline")


class TeacherStage(Stage):
  name = "teacher"
  settings = ("teacher",)

  def training_epochs(self, config):
    return 0 if config.model else config.teacher.epochs

  def run(self, context) -> StageOutput:
    if context.user_model is not None:
      return self._take_user_model(context)
    config = context.config.teacher
    context.log(f"teacher: training {config.builder!r} for {config.epochs} epoch(s) on "
                f"{len(context.dataset.x_train)} images")
    distribution = context.distribution
    with distribution.scope():
      model = context.build(config.builder)
      train.train_classifier(model, context.dataset, context.per_replica(config),
                             fits=context.fits)
    return StageOutput(models=[NewModel(BASELINE, distribution.plain(model))])

  def _take_user_model(self, context) -> StageOutput:
    loaded = context.user_model
    model, removed = model_io.logits_model(loaded.model)
    context.log(f"teacher: your model {context.config.model} ({loaded.source}) is the "
                "baseline, not trained" + ("; its final softmax is dropped (same "
                                           "predictions, logits out)" if removed else ""))
    return StageOutput(models=[NewModel(BASELINE, model)])


STAGE = TeacherStage()
