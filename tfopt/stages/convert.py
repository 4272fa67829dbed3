"""convert: every model made, to .tflite in each of its quantization modes.

Ends every run, with evaluate. The baseline float32 file comes first (every
ratio is against it); then each model in each mode (--quant_modes, or the
modes its entry asks for: QAT models are int8 only), mode by mode
(tfopt.convert). Makes the file of each report row.
"""

from tfopt import convert
from tfopt.stages.base import Stage, StageOutput


class ConvertStage(Stage):
  name = "convert"
  settings = ("convert",)

  def run(self, context) -> StageOutput:
    config, files = context.config.convert, {}
    for row_name, stem, model_name, mode in tflite_plan(context):
      context.log(f"convert: {model_name} -> {stem}.tflite ({mode})")
      content = convert.to_tflite(context.models[model_name], mode,
                                  context.dataset.x_train, config.representative_examples)
      context.write_bytes(f"{stem}.tflite", content)
      files[row_name] = (f"{stem}.tflite", model_name)
    return StageOutput(tflite_files=files)


def tflite_plan(context) -> list:
  """(row name, file stem, Keras model name, conversion mode) to convert."""
  plan = [("baseline float32", "baseline_float32", "teacher", "float32")]
  for mode in convert.MODES:
    plan += [(f"{entry.label} {mode}", f"{entry.stem}_{mode}", entry.name, mode)
             for entry in context.entries
             if mode in (entry.modes or context.config.convert.modes)
             and (entry.name, mode) != ("teacher", "float32")]
  return plan


STAGE = ConvertStage()
