"""convert: every model made, to .tflite in each of its quantization modes.

Ends every run, with evaluate. The baseline float32 file comes first (every
ratio is against it); then each model in each mode (--quant_modes, or the
modes its entry asks for: QAT models are int8 only), mode by mode
(tfopt.convert). Makes the file of each report row.
"""

import numpy as np

from tfopt import convert, int4
from tfopt.stages.base import Stage, StageOutput


class ConvertStage(Stage):
  name = "convert"
  settings = ("convert",)

  report_fields = {"int4_validation": dict}

  def run(self, context) -> StageOutput:
    config, files, validation = context.config.convert, {}, {}
    for row_name, stem, model_name, mode in tflite_plan(context):
      context.log(f"convert: {model_name} -> {stem}.tflite ({mode})")
      model, images = context.models[model_name], context.dataset.x_train
      if mode in int4.MODES:  # where 4 bits lose: each tensor against the float file
        float_file, content = convert.to_int4(model, mode, images,
                                              config.representative_examples,
                                              config.int4_layers)
        validation[row_name] = int4.validate(float_file, content,
                                             np.asarray(context.dataset.x_test[:16]))
      else:
        content = convert.to_tflite(model, mode, images, config.representative_examples)
      context.write_bytes(f"{stem}.tflite", content)
      files[row_name] = (f"{stem}.tflite", model_name)
    return StageOutput(tflite_files=files, record={"int4_validation": validation})

  def summarize(self, record, context):
    return {"int4_validation": record.get("int4_validation", {})}

  def report_section(self, report):
    if not report.int4_validation:
      return []
    lines = ["", "## int4 files against their float file (LiteRT's quantizer validator)",
             "", "Each tensor of the int4 file beside the same tensor of the float32 file "
             "on 16 test images: signal-to-noise ratio (dB; higher is closer) and cosine "
             "similarity. The 8 worst tensors by SNR:", ""]
    for name, tensors in report.int4_validation.items():
      lines += [f"**{name}**", "", "| tensor | SNR dB | cosine |", "|---|---|---|"]
      lines += [f"| {_short(row['tensor'])} | {_number(row['snr_db'], '.1f')} "
                f"| {_number(row['cosine'], '.4f')} |" for row in tensors[:8]]
      lines.append("")
    return lines


def _short(tensor: str, width: int = 60) -> str:
  """A fused op's tensor name ('a/Relu;a/bn/...;a/conv/Conv2D') kept readable."""
  return tensor if len(tensor) <= width else tensor[:width - 1] + "…"


def _number(value, spec: str) -> str:
  return "n/a" if value is None else format(value, spec)


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
