"""The run's numbers (dataclasses) and their renderings: JSON, Markdown, PNG."""

import dataclasses
import importlib.metadata
import io
import json
import os
import platform
from typing import Dict, List, Optional

from tfopt.core.artifacts import write_bytes_atomic, write_text_atomic
from tfopt.core.pareto import pareto_front
from tfopt.litert.evaluate import FileRow

__all__ = ["ModelRow", "Report", "machine_info", "versions", "render_markdown",
           "percent", "sensitivity_table", "save_plot", "save_sweep_plot"]


@dataclasses.dataclass
class ModelRow(FileRow):
  """One .tflite file of the run, measured on the test set (FileRow's fields,
  then these).

  agreement: share of test images where the file's top-1 equals its Keras
    model's top-1.
  weight_sparsity: share of zero weights read back from the file's
    conv / fully-connected weight tensors.
  """
  agreement: float
  weight_sparsity: float
  input_dtype: str
  weight_dtypes: Dict[str, int]


@dataclasses.dataclass
class Report:
  """Everything a run measured; rendering lives in the functions below.

  sections: what each stage's summary added ({report.json key: value}, e.g.
    "layer_sparsity", "qat", "latency_breakdown"); read them as attributes
    (report.qat) or in report.json, where they sit at the top level.
  """
  dataset: str
  test_examples: int
  baseline: str
  models: List[ModelRow]
  keras_accuracy: Dict[str, float]
  stages: Dict[str, float]
  config: dict
  machine: dict
  versions: dict
  sections: Dict[str, object] = dataclasses.field(default_factory=dict)
  # Where the baseline came from: a builder trained here, or the user's file.
  baseline_source: str = ""
  data_source: str = ""
  # Stages kept from an earlier run into the same output dir (their seconds
  # are that run's).
  resumed_stages: List[str] = dataclasses.field(default_factory=list)
  # What the run wrote and how to open it ({what: path or command}).
  outputs: Dict[str, str] = dataclasses.field(default_factory=dict)

  def __getattr__(self, name: str):
    sections = self.__dict__.get("sections") or {}
    if name in sections:
      return sections[name]
    raise AttributeError(f"Report has no field or section {name!r}")

  def row(self, name: str) -> ModelRow:
    return next(model for model in self.models if model.name == name)

  def to_dict(self) -> dict:
    value = dataclasses.asdict(self)
    value.update(value.pop("sections"))
    return value

  def save(self, output_dir: str) -> List[str]:
    """Writes report.json, report.md and report.png; returns their paths."""
    paths = [os.path.join(output_dir, name)
             for name in ("report.json", "report.md", "report.png")]
    write_text_atomic(paths[0], json.dumps(self.to_dict(), indent=2) + "\n")
    write_text_atomic(paths[1], render_markdown(self))
    save_plot(self, paths[2])
    if self.sections.get("sweep"):
      paths.append(os.path.join(output_dir, "sweep.png"))
      save_sweep_plot(self.sections["sweep"], paths[-1])
    return paths


def machine_info() -> dict:
  """CPU model, core count, OS and Python version of this machine."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as stream:
      names = [line.split(":", 1)[1].strip() for line in stream
               if line.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
          "python": platform.python_version()}


def versions() -> dict:
  """Installed versions of tfopt and the libraries it measures with."""
  found = {}
  for package in ("tfopt", "tensorflow", "tf-keras",
                  "tensorflow-model-optimization", "ai-edge-litert", "numpy"):
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      found[package] = None
  return found


def _ratio(baseline: float, value: float) -> str:
  return f"{baseline / value:.1f}×" if value else "n/a"


def render_markdown(report: Report) -> str:
  """The report as Markdown: the comparison table first, then the details."""
  base = report.row(report.baseline)
  lines = [
      f"# tfopt report — {report.dataset}",
      "",
  ]
  if report.baseline_source:
    lines += [f"Baseline: {report.baseline_source}. Data: {report.data_source}.", ""]
  lines += [
      f"Every figure is measured on the `.tflite` file itself in LiteRT: "
      f"accuracy on {report.test_examples} test images, latency at batch 1 "
      f"with {report.config['evaluate']['num_threads']} thread(s) "
      f"(median of {report.config['evaluate']['latency_runs']} invokes). "
      f"Ratios and Δ are against **{base.name}**.",
      "",
      "| model | accuracy | Δ acc (pp) | .tflite bytes | × smaller | gzip bytes "
      "| × smaller (gzip) | latency µs | MACs | params | nonzero params "
      "| agrees with Keras |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for row in report.models:
    lines.append(
        f"| {row.name} | {100 * row.accuracy:.2f} % "
        f"| {100 * (row.accuracy - base.accuracy):+.2f} | {row.tflite_bytes:,} "
        f"| {_ratio(base.tflite_bytes, row.tflite_bytes)} | {row.gzip_bytes:,} "
        f"| {_ratio(base.gzip_bytes, row.gzip_bytes)} | {row.latency_us:,.0f} "
        f"| {row.macs:,} | {row.params:,} | {row.nonzero_params:,} | {100 * row.agreement:.2f} % |")
  lines += ["", "## Keras models (test accuracy before conversion)", ""]
  lines += [f"- {name}: {100 * value:.2f} %"
            for name, value in report.keras_accuracy.items()]
  from tfopt.config import registry  # pylint: disable=g-import-not-at-top
  for stage in registry.all_stages():  # each stage renders its own section
    lines += stage.report_section(report)
  lines += ["", "## Stages (wall seconds)", ""]
  lines += [f"- {name}: {seconds:.1f} s"
            + (" (kept from an earlier run, files verified)"
               if name in report.resumed_stages else "")
            for name, seconds in report.stages.items()]
  lines += ["", "## Machine and versions", ""]
  lines += [f"- {key}: {value}" for key, value in report.machine.items()]
  lines += [f"- {key}: {value}" for key, value in report.versions.items()]
  if report.outputs:
    lines += ["", "## Where the outputs are", ""]
    lines += [f"- {what}: `{where}`" for what, where in report.outputs.items()]
  return "\n".join(lines) + "\n"


def percent(value: Optional[float], digits: int = 1) -> str:
  """"12.3 %" for 0.123; "n/a" for None."""
  return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def sensitivity_table(record: dict, drop_text) -> List[str]:
  """A sensitivity scan as a table: a row per layer (its weights, the drop at
  each sparsity as drop_text(drop) gives it, the chosen sparsity)."""
  sparsities = sorted({point["sparsity"] for point in record["points"]})
  lines = ["| layer | weights | " + " | ".join(f"{value:.0%}" for value in sparsities)
           + " | chosen |", "|---|---|" + "---|" * (len(sparsities) + 1)]
  for layer, size in record["layer_sizes"].items():
    drops = {point["sparsity"]: point["drop"] for point in record["points"]
             if point["layer"] == layer}
    lines.append(f"| {layer} | {size:,} | " + " | ".join(
        drop_text(drops[value]) for value in sparsities)
                 + f" | {record['chosen'][layer]:.0%} |")
  return lines


def save_plot(report: Report, path: str, title: Optional[str] = None):
  """Accuracy against gzip size and against latency, each with its Pareto
  front, one labelled point per model, as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(1, 2, figsize=(13, 4.8))
  accuracy = [100 * row.accuracy for row in report.models]
  for axis, costs, label in (
      (axes[0], [row.gzip_bytes / 1024 for row in report.models],
       "gzip size of the .tflite (KiB, log scale)"),
      (axes[1], [max(row.latency_us, 0.1) for row in report.models],
       "latency, batch 1 (µs, log scale)")):
    for cost, value, row in zip(costs, accuracy, report.models):
      axis.scatter(cost, value, s=40)
      axis.annotate(row.name, (cost, value), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    front = pareto_front(list(zip(costs, accuracy)))
    axis.step([costs[i] for i in front], [accuracy[i] for i in front], where="post",
              color="0.3", linestyle="--", linewidth=1, label="Pareto front")
    axis.set_xscale("log")
    axis.margins(x=0.25, y=0.1)
    axis.set_xlabel(label)
    axis.set_ylabel("test accuracy in LiteRT (%)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
  axes[0].set_title("accuracy vs size")
  axes[1].set_title("accuracy vs latency")
  figure.suptitle(title or f"tfopt — {report.dataset}")
  figure.tight_layout()
  image = io.BytesIO()
  figure.savefig(image, format="png", dpi=110)
  pyplot.close(figure)
  write_bytes_atomic(path, image.getvalue())


def save_sweep_plot(points: List[dict], path: str):
  """The pruning sweep in three panels: q-accuracy, q-sparsity, sparsity-accuracy."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  quality = [point["quality"] for point in points]
  sparsity = [100 * point["sparsity"] for point in points]
  accuracy = [100 * point["accuracy"] for point in points]
  figure, axes = pyplot.subplots(1, 3, figsize=(13, 4))
  for axis, x, y, xlabel, ylabel in (
      (axes[0], quality, accuracy, "threshold q (× std of each kernel)", "test accuracy (%)"),
      (axes[1], quality, sparsity, "threshold q (× std of each kernel)", "sparsity (%)"),
      (axes[2], sparsity, accuracy, "sparsity (%)", "test accuracy (%)")):
    axis.plot(x, y, marker="o")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(True, alpha=0.3)
  figure.suptitle(f"Pruning without fine-tuning — {points[0]['model']}")
  figure.tight_layout()
  image = io.BytesIO()
  figure.savefig(image, format="png", dpi=110)
  pyplot.close(figure)
  write_bytes_atomic(path, image.getvalue())
