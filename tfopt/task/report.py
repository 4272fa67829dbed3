"""A task run's report: every row (a Keras model or a file), the stages'
records, and report.md's tables (see tfopt.run.task_run)."""

import dataclasses
from typing import Dict, List, Optional

from tfopt.stages.report import machine_info, sensitivity_table, versions
from tfopt.task import measure as task_measure

__all__ = ["TaskReport", "render_markdown", "row_text"]


@dataclasses.dataclass
class TaskReport:
  """What a task run measured: one row per Keras model and per file."""
  rows: List[task_measure.Measured]
  outputs: List[dict]
  score_name: Optional[str]
  higher_is_better: bool
  stages: Dict[str, dict]
  output_dir: str
  seconds: Dict[str, float]

  def row(self, name: str) -> task_measure.Measured:
    return next(row for row in self.rows if row.name == name)

  def to_json(self) -> dict:
    return {"rows": [dataclasses.asdict(row) for row in self.rows], "outputs": self.outputs,
            "score": {"name": self.score_name, "higher_is_better": self.higher_is_better},
            "stages": self.stages, "seconds": self.seconds, "machine": machine_info(),
            "versions": versions()}


def row_text(row: task_measure.Measured, score_name: str) -> str:
  parts = [f"{key} {value:.4g}" for key, value in row.metrics.items()]
  if row.score is not None:
    parts.append(f"{score_name} {row.score:.4f}")
  if row.tflite_bytes:
    parts.append(f"{row.tflite_bytes / 1024:.1f} KiB, {row.latency_us:.0f} us")
  for fidelity in row.fidelity:
    parts.append(f"{fidelity.output}: cosine {fidelity.cosine}, SNR {fidelity.snr_db} dB")
  return ", ".join(parts)


def render_markdown(report: TaskReport) -> str:
  """report.md of a task run: one table of every row, one of fidelity."""
  keys = list(report.rows[0].metrics)
  score = [report.score_name] if report.score_name else []
  head = (["model / file", "size (KiB)", "gzip (KiB)", "latency (us)", "MACs",
           "nonzero / params"] + keys + score)
  lines = ["# tfopt task report", "", "| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  for row in report.rows:
    cells = [row.name, _kib(row.tflite_bytes), _kib(row.gzip_bytes),
             f"{row.latency_us:.0f}" if row.latency_us else "-",
             f"{row.macs:,}" if row.macs else "-",
             f"{row.nonzero_params:,} / {row.params:,}" if row.params else "-"]
    cells += [f"{row.metrics[key]:.4f}" for key in keys]
    cells += [f"{row.score:.4f}"] if report.score_name else []
    lines.append("| " + " | ".join(cells) + " |")
  direction = "higher" if report.higher_is_better else "lower"
  if report.score_name:
    lines += ["", f"{report.score_name}: {direction} is better, on the whole test set."]
  lines += ["", "## Stages", ""] + [f"- {name}: " + _record_text(record)
                                    for name, record in report.stages.items()]
  for name, record in report.stages.items():
    if "points" in record:
      lines += _sensitivity_lines(name, record)
    if "candidates" in record:
      lines += _search_lines(name, record)
  lines += ["", "## Each file's fidelity to its Keras model (test data)", "",
            "| file | output | cosine | SNR (dB) | top-1 agreement |", "|---|---|---|---|---|"]
  for row in report.rows:
    for item in row.fidelity:
      lines.append(f"| {row.name} | {item.output} | {item.cosine} | {item.snr_db} | "
                   + ("-" if item.agreement is None else f"{item.agreement:.2%}") + " |")
  return "\n".join(lines) + "\n"


def _record_text(record: dict) -> str:
  """A stage's record on one line: its numbers and short lists, not its tables."""
  shown = []
  for key, value in record.items():
    if isinstance(value, float):
      shown.append(f"{key} {value:.4g}")
    elif isinstance(value, (int, str, bool)):
      shown.append(f"{key} {value}")
    elif isinstance(value, list) and len(value) <= 6 and all(
        isinstance(item, (int, float)) for item in value):
      shown.append(f"{key} " + " -> ".join(f"{item:,.4g}" if isinstance(item, float)
                                           else f"{item:,}" for item in value))
  return ", ".join(shown)


def _sensitivity_lines(name: str, record: dict) -> List[str]:
  """The scan of a sensitivity stage: the objective's drop per layer and sparsity."""
  budget = (f"budget {record['max_drop']} per layer" if record["max_drop"] is not None
            else f"{record['target_sparsity']:.0%} overall where it costs least")
  return (["", f"## Sensitivity scan of {name}: drop of {record['objective']} "
           f"(validation; {budget})", ""]
          + sensitivity_table(record, lambda drop: f"{drop:.4g}"))


def _search_lines(name: str, record: dict) -> List[str]:
  """Every candidate of a search stage, on the validation data."""
  lines = ["", f"## Search ({name}): {record['objective']} within {record['max_drop']:.4g} "
           f"of {record['metric']} {record['baseline']:.4g} (validation)", "",
           f"| candidate | {record['metric']} | bytes | gzip | latency (us) | feasible |",
           "|---|---|---|---|---|---|"]
  for item in record["candidates"]:
    mark = " (chosen)" if item["chosen"] else " (front)" if item["front"] else ""
    lines.append(f"| {item['name']}{mark} | {item['value']:.4g} | {item['bytes']:,} | "
                 f"{item['gzip_bytes']:,} | {item['latency_us']:.0f} | "
                 f"{'yes' if item['feasible'] else 'no'} |")
  return lines


def _kib(size: Optional[int]) -> str:
  return "-" if not size else f"{size / 1024:.1f}"
