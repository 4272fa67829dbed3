"""bitwidth: how few bits the latest model's weights can take (an analysis).

Each conv / Dense kernel is min-max quantized to --bits bits, per tensor and
per channel, and the model runs in Keras with activations in float
(tfopt.techniques.bitwidth.algorithm). Makes no model. Report: accuracy and weight SQNR per width.
"""

import dataclasses

from tfopt.stages.base import Stage, StageOutput
from tfopt.stages.report import percent
from tfopt.techniques.bitwidth import algorithm as bitwidth


class BitwidthStage(Stage):
  name = "bitwidth"
  settings = ("analysis.bits", "analysis.granularities", "evaluate.batch_size")
  report_fields = {"bitwidth": list}

  def run(self, context) -> StageOutput:
    config, data = context.config.analysis, context.dataset
    context.log(f"bitwidth: {context.current.name}'s kernels min-max quantized to "
                f"{', '.join(map(str, config.bits))} bits "
                f"({', '.join(config.granularities)}), accuracy on the test set in Keras")
    results = bitwidth.bitwidth_study(context.current_model(), data.x_test, data.y_test,
                                      config.bits, config.granularities,
                                      context.config.evaluate.batch_size)
    for result in results:
      context.log(f"  {result.bits} bits {result.granularity}: {result.accuracy:.2%} "
                  f"({-100 * result.accuracy_drop:+.2f} pp), weight SQNR "
                  f"{result.weight_sqnr_db:.1f} dB")
    return StageOutput(record={"results": [
        dict(dataclasses.asdict(result), model=context.current.name) for result in results]})

  def summarize(self, record, context):
    return {"bitwidth": record["results"]}

  def report_section(self, report):
    if not report.bitwidth:
      return []
    lines = ["", f"## Bit-width study ({report.bitwidth[0]['model']}, kernels "
             "min-max quantized, activations float, test accuracy in Keras)", "",
             "| bits | granularity | accuracy | Δ acc (pp) | weight SQNR dB |",
             "|---|---|---|---|---|"]
    return lines + [
        f"| {entry['bits']} | {entry['granularity'].replace('_', '-')} "
        f"| {percent(entry['accuracy'], 2)} | {-100 * entry['accuracy_drop']:+.2f} "
        f"| {entry['weight_sqnr_db']:.1f} |" for entry in report.bitwidth]


STAGE = BitwidthStage()
