"""convert: every model made, to .tflite in each of its quantization modes.

Ends every run, with evaluate. The baseline float32 file comes first (every
ratio is against it); then each model in each mode (--quant_modes, or the
modes its entry asks for: QAT models are int8 only), mode by mode
(tfopt.litert.convert). Makes the file of each report row.

Each int8 file of a float model is made by tfopt.litert.int8_repair: the recipes it
tries are judged on the validation images against the float model, and the
most faithful within the size / latency budget is written (--int8_repair off:
the converter's plain file). Either way the file is diagnosed op by op along
the graph (tfopt.litert.int8_fidelity); the report's int8 section shows both.
"""

import numpy as np

from tfopt.litert import convert, int4, int8_repair
from tfopt.stages.base import Stage, StageOutput

# Top-1 agreement of an int8 file with its float model that the report asks of it.
FIDELITY_TARGET = 0.99


class ConvertStage(Stage):
  name = "convert"
  settings = ("convert",)

  report_fields = {"int4_validation": dict, "int8_repair": dict}

  def run(self, context) -> StageOutput:
    config, files, validation, repairs = context.config.convert, {}, {}, {}
    for row_name, stem, model_name, mode in tflite_plan(context):
      context.log(f"convert: {model_name} -> {stem}.tflite ({mode})")
      model, images = context.models[model_name], context.dataset.x_train
      if mode in int4.MODES:  # where 4 bits lose: each tensor against the float file
        float_file, content = convert.to_int4(model, mode, images,
                                              config.representative_examples,
                                              config.int4_layers)
        validation[row_name] = int4.validate(float_file, content,
                                             np.asarray(context.dataset.x_test[:16]))
      elif mode == "int8" and not convert.is_quantization_aware(model):
        repair = _repair(context, model, row_name)
        content, repairs[row_name] = repair.content, repair.to_record()
      else:
        content = convert.to_tflite(model, mode, images, config.representative_examples)
      context.write_bytes(f"{stem}.tflite", content)
      files[row_name] = (f"{stem}.tflite", model_name)
    return StageOutput(tflite_files=files, record={"int4_validation": validation,
                                                   "int8_repair": repairs})

  def summarize(self, record, context):
    return {"int4_validation": record.get("int4_validation", {}),
            "int8_repair": record.get("int8_repair", {})}

  def report_section(self, report):
    return _int8_section(report) + _int4_section(report)


def _repair(context, model, row_name: str) -> int8_repair.Repair:
  config, data = context.config.convert, context.dataset
  validation = np.asarray(data.x_val[:config.int8_repair_examples], np.float32)
  context.log(f"convert: {row_name}: int8 recipes judged on {len(validation):,} validation "
              f"images (--int8_repair {config.int8_repair})")
  return int8_repair.repair(
      model, data.x_train, validation, config.representative_examples, config.int8_repair,
      config.int8_repair_size_ratio, config.int8_repair_latency_ratio,
      log=lambda line: context.log(f"convert: {row_name}: {line}"))


def _int8_section(report) -> list:
  if not report.int8_repair:
    return []
  lines = ["", "## int8 files: where they part from the float model, and the repair", "",
           "Each int8 file runs beside its float model on validation images. *Diagnosis*: "
           "every op's output against the float one, both run from the input on: SNR "
           "(dB; 40 dB is an error of 1 % of the signal) and the dB the op itself lost "
           "(its inputs' SNR minus its own); the 8 ops that add the most noise. *Recipes tried*: each "
           "file measured whole (top-1 agreement with the float model, output SNR, size, "
           "latency); experiments change one thing alone. The chosen recipe is written; "
           "one that is not better keeps the plain file.", ""]
  for name, record in report.int8_repair.items():
    lines += _repair_lines(name, record) + _next_step(report, name, record)
  return lines


def _next_step(report, name: str, record: dict) -> list:
  """Below FIDELITY_TARGET after repair: say so, and what QAT measured if it ran."""
  if record["chosen"]["agreement"] >= FIDELITY_TARGET:
    return []
  qat_names = {run["row"] for run in report.qat if run["mode"] == "int8"}
  qat_rows = [row for row in report.models if row.name in qat_names]
  text = (f"*{name} still agrees on fewer than {FIDELITY_TARGET:.0%} of the validation "
          "images after repair within the budget.* ")
  if qat_rows:
    text += "QAT in this run: " + "; ".join(
        f"{row.name} agrees with its Keras model on {row.agreement:.2%} of the test images"
        for row in qat_rows) + "."
  else:
    text += ("Quantization-aware training is the next step (`--stages ...,qat`), or a larger "
             "budget (`--int8_repair_size_ratio`, `--int8_repair_latency_ratio`).")
  return [text, ""]


def _repair_lines(name: str, record: dict) -> list:
  chosen, plain = record["chosen"], record["plain"]
  verdict = (f"repaired: {chosen['choice']['description']}" if record["changed"]
             else "kept the plain file (no recipe tried beat it)")
  lines = [f"**{name}**: {verdict}; validation agreement {plain['agreement']:.2%} → "
           f"{chosen['agreement']:.2%}, output SNR {plain['output_snr_db']:.1f} → "
           f"{chosen['output_snr_db']:.1f} dB, {chosen['tflite_bytes'] / plain['tflite_bytes']:.2f}× "
           f"the bytes, {chosen['latency_us'] / max(plain['latency_us'], 1e-9):.2f}× the "
           f"latency ({record['validation_images']:,} images, {record['seconds']:.1f} s).", ""]
  if record.get("kept_float"):
    lines += ["Left float by the converter (LiteRT has no int8 kernel for them; the file "
              "dequantizes before and quantizes after each): "
              + ", ".join(record["kept_float"]) + ".", ""]
  lines += _experiment_lines(record)
  if record["diagnosis"]:
    lines += ["| layer | op | SNR dB | own drop dB |", "|---|---|---|---|"]
    lines += [f"| {row['layer']} | {row['op']} | {_number(row['snr_db'], '.1f')} "
              f"| {_number(row['drop_db'], '.1f')} |" for row in record["diagnosis"][:8]]
    lines.append("")
  if len(record["candidates"]) > 1:
    lines += ["| recipe tried | why | agrees | output SNR dB | bytes | µs |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {c['choice']['description']} | {c['purpose']} | {c['agreement']:.2%} "
              f"| {c['output_snr_db']:.1f} | {c['tflite_bytes']:,} | {c['latency_us']:,.0f}"
              f"{'' if c['within_budget'] else ' (over budget)'} |"
              for c in record["candidates"]]
    lines.append("")
  return lines


def _experiment_lines(record: dict) -> list:
  """The layers whose change alone recovered the most, with the measured gain."""
  start = record.get("start")
  tried = [c for c in record["candidates"] if c["purpose"].startswith("experiment:")]
  if not start or not tried:
    return []
  tried.sort(key=lambda c: (c["agreement"], c["output_snr_db"]), reverse=True)
  gains = [f"{c['purpose'][len('experiment: '):]}: "
           f"{100 * (c['agreement'] - start['agreement']):+.2f} pp agreement, "
           f"{c['output_snr_db'] - start['output_snr_db']:+.1f} dB"
           + ("" if c["within_budget"] else " (over the size / latency budget)")
           for c in tried[:3]]
  return [f"Experiments, each one layer changed alone from *{start['choice']['description']}* "
          f"({start['agreement']:.2%}, {start['output_snr_db']:.1f} dB); the three that "
          "recovered the most: " + "; ".join(gains) + ". A gain of a few images is chance: a "
          "change is taken only when it is significant (McNemar, p < 0.05) or lowers the "
          "output noise by 1 dB.", ""]


def _int4_section(report) -> list:
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
    plan += [(entry.row_name(mode), f"{entry.stem}_{mode}", entry.name, mode)
             for entry in context.entries
             if mode in (entry.modes or context.config.convert.modes)
             and (entry.name, mode) != ("teacher", "float32")]
  return plan


STAGE = ConvertStage()
