"""cluster: weight sharing with tfmot (Deep Compression's k-means quantization).

Every chosen kernel of the latest model keeps `--clusters` shared values
(per-layer counts with --cluster_layer_clusters); the centroids are
fine-tuned, and a pruned model keeps its zeros (tfopt.techniques.cluster.algorithm). The model's
entry carries its clusters, so QAT can keep them and the summary can check
them in every file. Report: per file and kernel, the distinct values read
back from the .tflite against the clusters promised.
"""

import time

from tfopt.core import progress
from tfopt.litert import evaluate
from tfopt.stages.base import NewModel, Stage, StageOutput, TaskStage
from tfopt.stages.report import percent
from tfopt.techniques.cluster import algorithm as cluster
from tfopt.techniques.cluster.settings import ClusterConfig


# On a user's task (tfopt.run.task_run).
def _run_on_task(run, model, config: ClusterConfig):
  """tfmot weight clustering (a pruned model keeps its zeros), fine-tuned."""
  started = time.perf_counter()
  preserve = (run.pruned if config.preserve_sparsity is None
              else config.preserve_sparsity)
  progress.log(f"cluster: {config.number_of_clusters} shared values per kernel, "
               f"{config.epochs} epoch(s)")
  result = cluster.cluster(model, None, config, preserve_sparsity=preserve,
                           train=run.trainer(config))
  run.add(run.name("clustered"), result.model, {
      "clusters": config.number_of_clusters, "preserve_sparsity": preserve,
      "kernels": {entry.layer: [entry.clusters, entry.distinct] for entry in result.kernels},
      "seconds": time.perf_counter() - started}, clustered=True)
  return result.model


def _check_task(model, task, config: ClusterConfig, stages):
  del task, stages
  cluster.check_layers(model, config.number_of_clusters, config.layers, config.layer_clusters)


class ClusterStage(Stage):
  name = "cluster"
  on_task = TaskStage(ClusterConfig, _run_on_task, check=_check_task, defaults={
      "epochs": 2, "learning_rate": 1e-4, "use_teacher": False})
  settings = ("cluster", "distill")
  report_fields = {"weight_sharing": dict}

  def training_epochs(self, config):
    return config.cluster.epochs

  def preflight(self, config, dataset, architecture):
    cluster.check_layers(architecture(), config.cluster.number_of_clusters,
                         config.cluster.layers, config.cluster.layer_clusters)
    return architecture

  def run(self, context) -> StageOutput:
    config = context.config.cluster
    preserve = (context.current.pruned if config.preserve_sparsity is None
                else config.preserve_sparsity)
    context.log(
        f"cluster: {config.number_of_clusters} shared values per kernel"
        + (f" ({', '.join(f'{name} {count}' for name, count in config.layer_clusters.items())})"
           if config.layer_clusters else "") + " of "
        f"{context.current.name} ({config.centroid_init} init"
        + (", zeros of the pruned model kept" if preserve else "")
        + f"), {config.epochs} fine-tuning epoch(s) of the centroids")
    model = context.current_model()
    depthwise = [layer.name for layer in model.layers
                 if type(layer).__name__ == "DepthwiseConv2D"]
    if depthwise and config.layers is None:
      context.log(f"  {len(depthwise)} DepthwiseConv2D kernel(s) keep their values: "
                  "tfmot does not cluster depthwise kernels")
    result = cluster.cluster(model, context.dataset, config,
                             teacher=context.teacher(config.use_teacher),
                             preserve_sparsity=preserve, fits=context.fits)
    for kernel in result.kernels:
      context.log(f"  {kernel.layer} {kernel.shape}: {kernel.distinct} distinct values, "
                  f"{kernel.sparsity:.1%} zeros")
    counts = sorted({kernel.clusters for kernel in result.kernels})
    entry = context.current.then(
        "clustered", f"clustered ({', '.join(map(str, counts))})",
        clusters={kernel.layer: (kernel.clusters, kernel.distinct)
                  for kernel in result.kernels})
    return StageOutput(models=[NewModel(entry, result.model)])

  def summarize(self, record, context):
    """Every file of a clustered model (QAT ones too), checked kernel by kernel."""
    checks = {}
    for row in context.rows:
      entry = context.entry(context.tflite_files[row.name][1])
      if entry.clusters:
        checks[row.name] = evaluate.check_weight_sharing(entry.clusters, context.contents(row.name))
    return {"weight_sharing": checks}

  def report_section(self, report):
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
                f"| {percent(kernel['tflite_sparsity'])} "
                f"| {'yes' if kernel['holds'] else '**no**'} |" for kernel in kernels]
    return lines


STAGE = ClusterStage()
