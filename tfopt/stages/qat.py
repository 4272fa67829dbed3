"""qat: quantization-aware training with tfmot, keeping what earlier stages made.

The scheme follows the model's history unless --qat_scheme names one: PCQAT
after prune and cluster, PQAT after prune, CQAT after cluster, else QAT
(tfopt.qat). The model keeps its quantize wrappers (saved as .h5) and is
converted to int8 only, with the ranges it learned. Report: the QAT int8
file against the float model and the post-training int8 file it came from.
"""

import numpy as np

from tfopt import evaluate, qat
from tfopt.stages.base import NewModel, Stage, StageOutput
from tfopt.validate import ConfigError
from tfopt.report import percent


class QatStage(Stage):
  name = "qat"
  settings = ("qat", "prune", "distill")
  report_fields = {"qat": list}

  def training_epochs(self, config):
    return config.qat.epochs

  def check_chain(self, config, before):
    """CQAT / PCQAT keep clusters (and zeros) that earlier stages must make."""
    scheme = config.qat.scheme
    if scheme in ("cqat", "pcqat") and "cluster" not in before:
      raise ConfigError(f"qat_scheme={scheme!r} keeps the clusters of a "
                        "clustered model: put cluster before qat in --stages, or "
                        "use --qat_scheme qat (or auto).")
    if scheme in ("pqat", "pcqat") and not {"prune", "sensitivity"} & set(before):
      raise ConfigError(f"qat_scheme={scheme!r} keeps the zeros of a "
                        "pruned model: put prune before qat in --stages, or use "
                        "--qat_scheme qat (or auto).")

  def preflight(self, config, dataset, architecture):
    # tfmot refuses some layers (or activations): know it before training.
    qat.apply_qat(architecture(), "qat")
    return architecture

  def run(self, context) -> StageOutput:
    config, base = context.config.qat, context.current
    clustered = bool(base.clusters)
    scheme = (qat.choose_scheme(base.pruned, clustered) if config.scheme == "auto"
              else config.scheme)
    context.log(f"qat: {qat.SCHEME_LABELS[scheme]} of {base.name}, "
                f"{config.epochs} epoch(s) at learning rate {config.learning_rate}")
    result = qat.qat(context.current_model(), context.dataset, config, scheme,
                     teacher=context.teacher(config.use_teacher))
    clusters = None
    if clustered and scheme in ("cqat", "pcqat"):
      distinct = qat.kernel_distinct(result.model, base.clusters)
      clusters = {layer: (count, distinct[layer])
                  for layer, (count, _) in base.clusters.items()}
    entry = base.then(scheme, qat.SCHEME_LABELS[scheme], modes=("int8",),
                      clusters=clusters)
    run = dict(model=entry.name, base=base.name, scheme=scheme,
               target_sparsity=context.config.prune.target_sparsity if base.pruned else None,
               clusters=(max(count for count, _ in base.clusters.values())
                         if clustered else None))
    return StageOutput(models=[NewModel(entry, result.model, extension=".h5")],
                       record={"runs": [run]})

  def summarize(self, record, context):
    """Each QAT model against the float and post-training int8 of its base."""
    summary = []
    for run in record["runs"]:
      base_int8, qat_row = context.row_of(run["base"]), context.row_of(run["model"])
      entry = context.entry(run["model"])
      sharing = (evaluate.check_weight_sharing(entry.clusters, context.contents(qat_row.name))
                 if qat_row and entry.clusters else [])
      summary.append(dict(
          run, row=qat_row.name if qat_row else None,
          base_keras_accuracy=float(np.mean(context.keras_top1(run["base"])
                                            == context.dataset.y_test)),
          base_int8_accuracy=base_int8.accuracy if base_int8 else None,
          qat_int8_accuracy=qat_row.accuracy if qat_row else None,
          file_sparsity=qat_row.weight_sparsity if qat_row else None,
          max_distinct_per_channel=max((kernel["tflite_max_distinct_per_channel"] or 0
                                        for kernel in sharing), default=None)))
    return {"qat": summary}

  def report_section(self, report):
    if not report.qat:
      return []
    lines = ["", "## Quantization-aware training (int8 files in LiteRT)", "",
             "| QAT model | scheme | base model | base in Keras (float) "
             "| base, post-training int8 | QAT int8 | sparsity target | sparsity "
             "in file | clusters | max distinct per channel in file |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    return lines + [
        f"| {run['row']} | {run['scheme'].upper()} | {run['base']} "
        f"| {percent(run['base_keras_accuracy'], 2)} "
        f"| {percent(run['base_int8_accuracy'], 2)} "
        f"| {percent(run['qat_int8_accuracy'], 2)} "
        f"| {percent(run['target_sparsity'])} | {percent(run['file_sparsity'])} "
        f"| {run['clusters'] or 'n/a'} | {run['max_distinct_per_channel'] or 'n/a'} |"
        for run in report.qat]


STAGE = QatStage()
