"""The run's numbers (dataclasses) and their renderings: JSON, Markdown, PNG."""

import dataclasses
import importlib.metadata
import io
import json
import os
import platform
from typing import Dict, List, Optional

from tfopt.artifacts import write_bytes_atomic, write_text_atomic

__all__ = ["ModelRow", "Report", "machine_info", "versions", "render_markdown",
           "save_plot", "save_sweep_plot"]


@dataclasses.dataclass
class ModelRow:
  """One measured .tflite file.

  accuracy: top-1 of the file run in LiteRT on the test set.
  agreement: share of test images where the file's top-1 equals its Keras
    model's top-1.
  params / nonzero_params / macs: of the Keras model the file came from
    (macs: multiply-accumulates per image, see tfopt.macs).
  weight_sparsity: share of zero weights read back from the file's
    conv / fully-connected weight tensors.
  """
  name: str
  path: str
  accuracy: float
  tflite_bytes: int
  gzip_bytes: int
  latency_us: float
  params: int
  nonzero_params: int
  macs: int
  agreement: float
  weight_sparsity: float
  input_dtype: str
  weight_dtypes: Dict[str, int]


@dataclasses.dataclass
class Report:
  """Everything a run measured; rendering lives in the functions below."""
  dataset: str
  test_examples: int
  baseline: str
  models: List[ModelRow]
  keras_accuracy: Dict[str, float]
  layer_sparsity: List[dict]
  stages: Dict[str, float]
  config: dict
  machine: dict
  versions: dict
  slim_steps: List[dict] = dataclasses.field(default_factory=list)
  slim_channels: List[dict] = dataclasses.field(default_factory=list)
  lowrank_layers: List[dict] = dataclasses.field(default_factory=list)
  latency_breakdown: Dict[str, List[dict]] = dataclasses.field(default_factory=dict)
  weight_sharing: Dict[str, List[dict]] = dataclasses.field(default_factory=dict)
  qat: List[dict] = dataclasses.field(default_factory=list)
  binary: List[dict] = dataclasses.field(default_factory=list)
  bitwidth: List[dict] = dataclasses.field(default_factory=list)
  sweep: List[dict] = dataclasses.field(default_factory=list)
  sensitivity: dict = dataclasses.field(default_factory=dict)
  # Where the baseline came from: a builder trained here, or the user's file.
  baseline_source: str = ""
  data_source: str = ""
  # Stages kept from an earlier run into the same output dir (their seconds
  # are that run's).
  resumed_stages: List[str] = dataclasses.field(default_factory=list)

  def row(self, name: str) -> ModelRow:
    return next(model for model in self.models if model.name == name)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def save(self, output_dir: str) -> List[str]:
    """Writes report.json, report.md and report.png; returns their paths."""
    paths = [os.path.join(output_dir, name)
             for name in ("report.json", "report.md", "report.png")]
    write_text_atomic(paths[0], json.dumps(self.to_dict(), indent=2) + "\n")
    write_text_atomic(paths[1], render_markdown(self))
    save_plot(self, paths[2])
    if self.sweep:
      paths.append(os.path.join(output_dir, "sweep.png"))
      save_sweep_plot(self.sweep, paths[-1])
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
  if report.layer_sparsity:
    lines += ["", "## Pruned weights (measured after strip_pruning)", "",
              "| layer | weight | shape | sparsity |", "|---|---|---|---|"]
    lines += [f"| {entry['layer']} | {entry['weight']} | {tuple(entry['shape'])} "
              f"| {100 * entry['sparsity']:.1f} % |"
              for entry in report.layer_sparsity]
  lines += _slim_section(report) + _lowrank_section(report)
  lines += _weight_sharing_section(report) + _qat_section(report)
  lines += _binary_section(report) + _bitwidth_section(report)
  lines += _sweep_section(report) + _sensitivity_section(report)
  lines += _breakdown_section(report)
  lines += ["", "## Stages (wall seconds)", ""]
  lines += [f"- {name}: {seconds:.1f} s"
            + (" (kept from an earlier run, files verified)"
               if name in report.resumed_stages else "")
            for name, seconds in report.stages.items()]
  lines += ["", "## Machine and versions", ""]
  lines += [f"- {key}: {value}" for key, value in report.machine.items()]
  lines += [f"- {key}: {value}" for key, value in report.versions.items()]
  return "\n".join(lines) + "\n"


def _slim_section(report: Report) -> List[str]:
  if not report.slim_steps:
    return []
  lines = ["", "## Slimming (channels removed, int8 measured in LiteRT after "
           "each step's fine-tuning)", "",
           "| step | rate | channels | params | MACs | int8 accuracy "
           "| .tflite bytes | latency µs |", "|---|---|---|---|---|---|---|---|"]
  lines += [f"| {step['step']} | {100 * step['rate']:.0f} % | {step['channels']:,} "
            f"| {step['params']:,} | {step['macs']:,} | {100 * step['accuracy']:.2f} % "
            f"| {step['tflite_bytes']:,} | {step['latency_us']:,.0f} |"
            for step in report.slim_steps]
  lines += ["", "| conv | channels before | after |", "|---|---|---|"]
  lines += [f"| {entry['layer']} | {entry['before']} | {entry['after']} |"
            for entry in report.slim_channels]
  return lines


def _lowrank_section(report: Report) -> List[str]:
  if not report.lowrank_layers:
    return []
  lines = ["", "## Low-rank layers (truncated SVD)", "",
           "| layer | shape | rank | energy kept | params before | after "
           "| × fewer | val acc before fine-tune | after |",
           "|---|---|---|---|---|---|---|---|---|"]
  lines += [f"| {entry['layer']} | {tuple(entry['shape'])} | {entry['rank']} "
            f"| {100 * entry['retained_energy']:.1f} % | {entry['params_before']:,} "
            f"| {entry['params_after']:,} "
            f"| {entry['params_before'] / entry['params_after']:.1f}× "
            f"| {100 * entry['val_accuracy_before_finetune']:.2f} % "
            f"| {100 * entry['val_accuracy_after_finetune']:.2f} % |"
            for entry in report.lowrank_layers]
  return lines


def _weight_sharing_section(report: Report) -> List[str]:
  if not report.weight_sharing:
    return []
  lines = ["", "## Weight sharing (distinct values read back from each file)", "",
           "BatchNorm folding scales each output channel of a conv, and int8 "
           "gives each channel its own scale, so k shared values become k codes "
           "*per output channel*: that is what is checked.", "",
           "| file | layer | clusters | distinct in Keras | max distinct per "
           "channel in file | distinct in file | file dtype | zeros in file "
           "| holds |", "|---|---|---|---|---|---|---|---|---|"]
  for row_name, kernels in report.weight_sharing.items():
    lines += [f"| {row_name} | {kernel['layer']} | {kernel['clusters']} "
              f"| {kernel['keras_distinct']} "
              f"| {kernel['tflite_max_distinct_per_channel']} "
              f"| {kernel['tflite_distinct']} | {kernel['tflite_dtype']} "
              f"| {_percent(kernel['tflite_sparsity'])} "
              f"| {'yes' if kernel['holds'] else '**no**'} |" for kernel in kernels]
  return lines


def _qat_section(report: Report) -> List[str]:
  if not report.qat:
    return []
  lines = ["", "## Quantization-aware training (int8 files in LiteRT)", "",
           "| QAT model | scheme | base model | base in Keras (float) "
           "| base, post-training int8 | QAT int8 | sparsity target | sparsity "
           "in file | clusters | max distinct per channel in file |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for run in report.qat:
    lines.append(
        f"| {run['row']} | {run['scheme'].upper()} | {run['base']} "
        f"| {_percent(run['base_keras_accuracy'], 2)} "
        f"| {_percent(run['base_int8_accuracy'], 2)} "
        f"| {_percent(run['qat_int8_accuracy'], 2)} "
        f"| {_percent(run['target_sparsity'])} | {_percent(run['file_sparsity'])} "
        f"| {run['clusters'] or 'n/a'} | {run['max_distinct_per_channel'] or 'n/a'} |")
  return lines


def _binary_section(report: Report) -> List[str]:
  if not report.binary:
    return []
  lines = ["", "## Binary weights (effective size at 1 bit per weight)", ""]
  for entry in report.binary:
    lines += [
        f"**{entry['model']}** ({entry['mode']}): {entry['binary_weights']:,} "
        f"binary weights, {entry['scales']} scales, {entry['other_params']:,} "
        "other parameters (BatchNorm, biases, layers left real) → "
        f"**{entry['effective_bytes']:,} B** at 1 bit per binary weight and "
        f"32 bits per scale and other parameter ({entry['float32_bytes']:,} B "
        "in float32).", "",
        "| file | accuracy | .tflite bytes | gzip bytes | max distinct values "
        "per channel |", "|---|---|---|---|---|"]
    lines += [f"| {row['row']} | {_percent(row['accuracy'], 2)} "
              f"| {row['tflite_bytes']:,} | {row['gzip_bytes']:,} "
              f"| {row['max_distinct_per_channel']} |" for row in entry["files"]]
    lines += ["", "| layer | kernel shape | binary weights | scales |",
              "|---|---|---|---|"]
    lines += [f"| {layer['layer']} | {tuple(layer['shape'])} "
              f"| {layer['binary_weights']:,} | {layer['scales']} |"
              for layer in entry["layers"]]
  return lines


def _bitwidth_section(report: Report) -> List[str]:
  if not report.bitwidth:
    return []
  lines = ["", f"## Bit-width study ({report.bitwidth[0]['model']}, kernels "
           "min-max quantized, activations float, test accuracy in Keras)", "",
           "| bits | granularity | accuracy | Δ acc (pp) | weight SQNR dB |",
           "|---|---|---|---|---|"]
  lines += [f"| {entry['bits']} | {entry['granularity'].replace('_', '-')} "
            f"| {_percent(entry['accuracy'], 2)} | {-100 * entry['accuracy_drop']:+.2f} "
            f"| {entry['weight_sqnr_db']:.1f} |" for entry in report.bitwidth]
  return lines


def _sweep_section(report: Report) -> List[str]:
  if not report.sweep:
    return []
  lines = ["", f"## Pruning sweep ({report.sweep[0]['model']}: |w| < q·std(w) "
           "removed in every kernel, no fine-tuning, test accuracy in Keras)", "",
           "Plotted in `sweep.png` (threshold–accuracy, threshold–sparsity, "
           "sparsity–accuracy).", "",
           "| q | sparsity | accuracy |", "|---|---|---|"]
  lines += [f"| {point['quality']:.2f} | {_percent(point['sparsity'])} "
            f"| {_percent(point['accuracy'], 2)} |" for point in report.sweep]
  return lines


def _sensitivity_section(report: Report) -> List[str]:
  entry = report.sensitivity
  if not entry:
    return []
  sparsities = sorted({point["sparsity"] for point in entry["points"]})
  lines = ["", f"## Sensitivity-chosen vs uniform sparsity ({entry['model']})", "",
           "Each layer pruned alone, no fine-tuning: validation accuracy drop in "
           + (f"pp. Budget {entry['budget_pp']} pp per layer; the chosen sparsity "
              "is the highest within it." if entry.get("target_sparsity") is None
              else f"pp. Target {entry['target_sparsity']:.0%} overall, given to "
              "the layers where the curves say it costs least."), "",
           "| layer | weights | " + " | ".join(f"{value:.0%}" for value in sparsities)
           + " | chosen |", "|---|---|" + "---|" * (len(sparsities) + 1)]
  for layer, size in entry["layer_sizes"].items():
    drops = {point["sparsity"]: point["drop"] for point in entry["points"]
             if point["layer"] == layer}
    lines.append(f"| {layer} | {size:,} | " + " | ".join(
        f"{100 * drops[value]:.2f}" for value in sparsities)
                 + f" | {entry['chosen'][layer]:.0%} |")
  lines += ["", f"Both prune {entry['overall_sparsity']:.1%} of the prunable "
            "weights and are fine-tuned alike; int8 files in LiteRT:", "",
            "| allocation | accuracy | gzip bytes | nonzero params |", "|---|---|---|---|"]
  for kind, title in (("uniform_pruned", "uniform"),
                      ("sensitivity_pruned", "sensitivity-chosen")):
    row = entry["compared"].get(kind)
    if row:
      lines.append(f"| {title} | {_percent(row['accuracy'], 2)} "
                   f"| {row['gzip_bytes']:,} | {row['nonzero_params']:,} |")
  return lines


def _percent(value: Optional[float], digits: int = 1) -> str:
  return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def _breakdown_section(report: Report) -> List[str]:
  if not report.latency_breakdown:
    return []
  lines = ["", "## Where latency comes from (int8, LiteRT)", "",
           "Each segment runs from one compute layer to the next (its BN, "
           "activation and pooling included), timed as the difference between "
           "prefixes of the model converted on their own; small segments can "
           "read slightly negative from timing noise.", ""]
  for name, segments in report.latency_breakdown.items():
    total = segments[-1]["cumulative_us"] if segments else 0.0
    lines += [f"**{name}** ({total:,.1f} µs in this measurement)", "",
              "| segment | kind | MACs | µs | share |", "|---|---|---|---|---|"]
    lines += [f"| {segment['layer']} | {segment['kind']} | {segment['macs']:,} "
              f"| {segment['latency_us']:.1f} "
              f"| {100 * segment['latency_us'] / total if total else 0:.0f} % |"
              for segment in segments]
    lines.append("")
  return lines


def save_plot(report: Report, path: str, title: Optional[str] = None):
  """Accuracy against gzip size, one labelled point per model, as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(figsize=(7, 4.5))
  for row in report.models:
    axes.scatter(row.gzip_bytes / 1024, 100 * row.accuracy, s=40)
    axes.annotate(row.name, (row.gzip_bytes / 1024, 100 * row.accuracy),
                  textcoords="offset points", xytext=(6, 4), fontsize=8)
  axes.set_xscale("log")
  axes.margins(x=0.25, y=0.1)
  axes.set_xlabel("gzip size of the .tflite (KiB, log scale)")
  axes.set_ylabel("test accuracy in LiteRT (%)")
  axes.set_title(title or f"tfopt — {report.dataset}: accuracy vs size")
  axes.grid(True, which="both", alpha=0.3)
  figure.tight_layout()
  image = io.BytesIO()
  figure.savefig(image, format="png", dpi=120)
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
