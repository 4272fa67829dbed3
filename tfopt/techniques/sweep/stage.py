"""sweep: a pruning threshold sweep of the latest model (an analysis).

Every conv / Dense kernel loses |w| < q * std(w) for each q in
--sweep_qualities, without fine-tuning (tfopt.techniques.sweep.algorithm). Makes no model.
Report: sparsity and test accuracy per q, plotted in sweep.png.
"""

import dataclasses

from tfopt.stages.base import Stage, StageOutput
from tfopt.stages.report import percent
from tfopt.techniques.sweep import algorithm as sweep


class SweepStage(Stage):
  name = "sweep"
  settings = ("analysis.sweep_qualities", "evaluate.batch_size")
  report_fields = {"sweep": list}

  def run(self, context) -> StageOutput:
    config, data = context.config.analysis, context.dataset
    context.log(f"sweep: {context.current.name} pruned at |w| < q * std(w) for "
                f"{len(config.sweep_qualities)} values of q, no fine-tuning, accuracy "
                "on the test set")
    points = sweep.threshold_sweep(context.current_model(), data.x_test, data.y_test,
                                   config.sweep_qualities,
                                   context.config.evaluate.batch_size)
    for point in points:
      context.log(f"  q {point.quality:.2f}: sparsity {point.sparsity:.1%}, accuracy "
                  f"{point.accuracy:.2%}")
    return StageOutput(record={"points": [
        dict(dataclasses.asdict(point), model=context.current.name) for point in points]})

  def summarize(self, record, context):
    return {"sweep": record["points"]}

  def report_section(self, report):
    if not report.sweep:
      return []
    lines = ["", f"## Pruning sweep ({report.sweep[0]['model']}: |w| < q·std(w) "
             "removed in every kernel, no fine-tuning, test accuracy in Keras)", "",
             "Plotted in `sweep.png` (threshold–accuracy, threshold–sparsity, "
             "sparsity–accuracy).", "",
             "| q | sparsity | accuracy |", "|---|---|---|"]
    return lines + [f"| {point['quality']:.2f} | {percent(point['sparsity'])} "
                    f"| {percent(point['accuracy'], 2)} |" for point in report.sweep]


STAGE = SweepStage()
