"""qat: quantization-aware training with tfmot, keeping what earlier stages made.

The scheme follows the model's history unless --qat_scheme names one: PCQAT
after prune and cluster, PQAT after prune, CQAT after cluster, else QAT
(tfopt.techniques.qat.algorithm). The model keeps its quantize wrappers (saved as .h5) and is
converted to int8 only, with the ranges it learned. With --qat_bits 4 the
kernels the int4 file makes 4-bit are trained on its grid instead
(tfopt.techniques.qat.int4; QAT4, or PQAT4 keeping a pruned model's zeros) and the model
is converted to int4. Report: the QAT file against the float model and the
post-training file of the same mode it came from.
"""

import time

import numpy as np

from tfopt.core import progress
from tfopt.core.validate import ConfigError
from tfopt.litert import evaluate
from tfopt.stages.base import NewModel, Stage, StageOutput, TaskStage
from tfopt.stages.report import percent
from tfopt.task.definition import TaskError
from tfopt.techniques.qat import algorithm as qat, int4 as qat_int4
from tfopt.techniques.qat.settings import QatConfig


# On a user's task (tfopt.run.task_run).
def _run_on_task(run, model, config: QatConfig):
  """Quantization-aware training (PQAT / CQAT / PCQAT after prune and
  cluster, so their zeros and shared values survive); int8 files only."""
  started = time.perf_counter()
  scheme = (qat.choose_scheme(run.pruned, run.clustered)
            if config.scheme == "auto" else config.scheme)
  progress.log(f"qat: {scheme}, {config.epochs} epoch(s)")
  result = qat.qat(model, None, config, scheme, train=run.trainer(config))
  run.add(run.name("qat"), result.model, {
      "scheme": scheme, "epochs": config.epochs, "seconds": time.perf_counter() - started},
      extension=".h5", modes=("int8",))
  return result.model


def _check_task(model, task, config: QatConfig, stages):
  del task
  if config.bits != 8:
    raise TaskError("qat: a task trains 8-bit QAT only (bits=8); 4-bit QAT runs on "
                    "classifiers from tfopt's loaders.")
  if "lowrank" in stages:
    raise TaskError("qat cannot follow lowrank: tfmot has no quantize config for its "
                    "factorized layers; leave one of them out.")
  qat.apply_qat(model, "qat")  # raises, naming a layer tfmot cannot quantize


class QatStage(Stage):
  name = "qat"
  on_task = TaskStage(QatConfig, _run_on_task, check=_check_task, defaults={
      "epochs": 2, "learning_rate": 1e-4, "use_teacher": False})
  settings = ("qat", "prune", "distill")
  report_fields = {"qat": list}

  def training_epochs(self, config):
    return config.qat.epochs

  def check_chain(self, config, before):
    """CQAT / PCQAT keep clusters (and zeros) that earlier stages must make."""
    scheme = config.qat.scheme
    if config.qat.bits == 4 and "cluster" in before:
      raise ConfigError("--qat_bits 4 puts the kernels on int4's even grid, which "
                        "undoes a clustered model's shared values: leave cluster out, "
                        "or use --qat_bits 8 (CQAT keeps them).")
    if scheme in ("cqat", "pcqat") and "cluster" not in before:
      raise ConfigError(f"qat_scheme={scheme!r} keeps the clusters of a "
                        "clustered model: put cluster before qat in --stages, or "
                        "use --qat_scheme qat (or auto).")
    if scheme in ("pqat", "pcqat") and not {"prune", "sensitivity"} & set(before):
      raise ConfigError(f"qat_scheme={scheme!r} keeps the zeros of a "
                        "pruned model: put prune before qat in --stages, or use "
                        "--qat_scheme qat (or auto).")

  def preflight(self, config, dataset, architecture):
    # Know before training that there is something to train, or (int8) that
    # tfmot does not refuse a layer or activation.
    if config.qat.bits == 4:
      qat_int4.grid_layers(architecture(), config.convert.int4_layers, required=True)
    else:
      qat.apply_qat(architecture(), "qat")
    return architecture

  def run(self, context) -> StageOutput:
    config, base = context.config.qat, context.current
    if config.bits == 4:
      return self._run_int4(context)
    clustered = bool(base.clusters)
    scheme = (qat.choose_scheme(base.pruned, clustered) if config.scheme == "auto"
              else config.scheme)
    context.log(f"qat: {qat.SCHEME_LABELS[scheme]} of {base.name}, "
                f"{config.epochs} epoch(s) at learning rate {config.learning_rate}")
    result = qat.qat(context.current_model(), context.dataset, config, scheme,
                     teacher=context.teacher(config.use_teacher), fits=context.fits)
    clusters = None
    if clustered and scheme in ("cqat", "pcqat"):
      distinct = qat.kernel_distinct(result.model, base.clusters)
      clusters = {layer: (count, distinct[layer])
                  for layer, (count, _) in base.clusters.items()}
    entry = base.then(scheme, qat.SCHEME_LABELS[scheme], modes=("int8",),
                      clusters=clusters)
    run = dict(model=entry.name, base=base.name, scheme=scheme,
               target_sparsity=base.sparsity,
               clusters=(max(count for count, _ in base.clusters.values())
                         if clustered else None))
    return StageOutput(models=[NewModel(entry, result.model, extension=".h5")],
                       record={"runs": [run]})

  def _run_int4(self, context) -> StageOutput:
    config, base = context.config.qat, context.current
    scheme = ("pqat" if base.pruned else "qat") if config.scheme == "auto" else config.scheme
    label = qat.SCHEME_LABELS[scheme] + "4"
    layers = context.config.convert.int4_layers
    context.log(f"qat: {label} of {base.name} (its int4 kernels, {layers!r}, trained on "
                f"the int4 grid), {config.epochs} epoch(s) at learning rate "
                f"{config.learning_rate}")
    result = qat_int4.qat_int4(context.current_model(), context.dataset, config, layers,
                               keep_zeros=scheme == "pqat",
                               teacher=context.teacher(config.use_teacher),
                               fits=context.fits)
    entry = base.then(result.scheme, label, modes=("int4",))
    run = dict(model=entry.name, base=base.name, scheme=result.scheme, mode="int4",
               target_sparsity=base.sparsity,
               clusters=None)
    return StageOutput(models=[NewModel(entry, result.model)], record={"runs": [run]})

  def summarize(self, record, context):
    """Each QAT model against its base: in Keras, and post-training in the same mode."""
    summary = []
    for run in record["runs"]:
      mode = run.get("mode", "int8")
      base_ptq, qat_row = context.row_of(run["base"], mode), context.row_of(run["model"], mode)
      entry = context.entry(run["model"])
      sharing = (evaluate.check_weight_sharing(entry.clusters, context.contents(qat_row.name))
                 if qat_row and entry.clusters else [])
      summary.append(dict(
          run, row=qat_row.name if qat_row else None,
          base_keras_accuracy=float(np.mean(context.keras_top1(run["base"])
                                            == context.dataset.y_test)),
          mode=mode, base_ptq_accuracy=base_ptq.accuracy if base_ptq else None,
          qat_accuracy=qat_row.accuracy if qat_row else None,
          file_sparsity=qat_row.weight_sparsity if qat_row else None,
          max_distinct_per_channel=max((kernel["tflite_max_distinct_per_channel"] or 0
                                        for kernel in sharing), default=None)))
    return {"qat": summary}

  def report_section(self, report):
    if not report.qat:
      return []
    lines = ["", "## Quantization-aware training (files in LiteRT)", "",
             "Post-training: the base model's file of the same mode, quantized "
             "without training" + (" (n/a: add int4 to --quant_modes)." if any(
                 run["mode"] == "int4" and run["base_ptq_accuracy"] is None
                 for run in report.qat) else "."), "",
             "| QAT model | scheme | file | base model | base in Keras (float) "
             "| base, post-training | QAT | sparsity target | sparsity "
             "in file | clusters | max distinct per channel in file |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    return lines + [
        f"| {run['row']} | {run['scheme'].upper()} | {run['mode']} | {run['base']} "
        f"| {percent(run['base_keras_accuracy'], 2)} "
        f"| {percent(run['base_ptq_accuracy'], 2)} "
        f"| {percent(run['qat_accuracy'], 2)} "
        f"| {percent(run['target_sparsity'])} | {percent(run['file_sparsity'])} "
        f"| {run['clusters'] or 'n/a'} | {run['max_distinct_per_channel'] or 'n/a'} |"
        for run in report.qat]


STAGE = QatStage()
