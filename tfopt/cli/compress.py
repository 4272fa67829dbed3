"""Command-line flags for ``python -m tfopt.pipeline``: flags -> config -> run.

The flags live here, in one place; the library never reads them.
"""

import dataclasses
import os
import re
import sys

from absl import app, flags
from absl import logging as absl_logging

from tfopt.config import ConfigError, DataConfig, options, PipelineConfig, recipe, STRATEGIES
from tfopt.config import registry
from tfopt.config.technique_config import FINE_TUNED_SECTIONS
from tfopt.core.errors import TfoptError
from tfopt.keras_io.models import BUILDERS

FLAGS = flags.FLAGS
_DEFAULT = PipelineConfig()

flags.DEFINE_string("recipe", None, "A recipe file (YAML): the stages and every "
                    "stage's settings, as each run writes them to recipe.yaml in "
                    "its output dir. Flags given as well override its values.")
flags.DEFINE_string("preset", None, "A recipe shipped with tfopt, by name: "
                    f"{', '.join(recipe.preset_names())} (see tfopt/config/presets/). "
                    "Flags given as well override its values.")
flags.DEFINE_enum("log_format", "text", ["text", "json"], "text: a line per step, "
                  "Keras' progress bars on a terminal, the report at the end; json: "
                  "one JSON object per line on stdout (stages, epochs with their "
                  "metrics, outputs), for CI logs.")
flags.DEFINE_string("dataset", None, "Data set: mnist, fashion_mnist, cifar10, "
                    "or folder (your images in --data_dir).")
flags.DEFINE_string("data_dir", None, "Directory with the data set's IDX .gz "
                    "files or .npz (default: $TFOPT_DATA_DIR, then download); "
                    "with --dataset folder, the image folder: one subfolder per "
                    "class, or <label>_<index>.jpg names, optionally in "
                    "training/ validation/ evaluation/.")
flags.DEFINE_string("labels_file", None, "Image folders: class names, one per "
                    "line, in the model's output order (default: folder names, "
                    "or the labels in the file names).")
flags.DEFINE_list("image_size", None, "Image folders: HEIGHT,WIDTH to resize to "
                  "(default: the model's input size, else the images' own).")
flags.DEFINE_string("color_mode", None, "Image folders: grayscale or rgb (default: "
                    "the model's channels, else rgb unless all images are gray).")
flags.DEFINE_bool("augment", None, "Random translation of the training images, and a "
                  "horizontal flip except on MNIST; distillation then runs the teacher "
                  "on each augmented batch (default: on for image folders, off for "
                  "named data sets; --noaugment for a folder of digits or text, which "
                  "a flip changes).")
flags.DEFINE_list("input_range", None, "LOW,HIGH: the model input that pixels 0 "
                  "and 255 become, e.g. 0,1 or 0,255 or -1,1 (default: 0,255 for a "
                  "model that starts with Rescaling, else 0,1).")
flags.DEFINE_string("model", None, "Your trained Keras model (.keras, .h5 or a "
                    "SavedModel directory): the baseline to compress, instead of "
                    "training a teacher. Keras 3 models are rebuilt in Keras 2.")
flags.DEFINE_string("task", None, "A Python file defining your task for --model: "
                    "train, test (and val, loss, metrics, score) as tf.data pipelines, "
                    "numpy (x, y) or PyDatasets, and what compile takes. Any "
                    "one-input model: detectors, segmenters, autoencoders, ... "
                    "(see tfopt/task/file.py). Stages: distill, strided, lowrank, slim, "
                    "sensitivity, prune, cluster, binary, qat, search; settings in the "
                    "file's `settings` dict, the stage flags over them.")
flags.DEFINE_bool("allow_unsafe_model", False, "Let --model run code on load "
                  "(Lambda layers). Only for files you trust.")
flags.DEFINE_string("output_dir", None, "Where artifacts and the report go "
                    "(default: runs/<dataset>, or runs/<dataset>-quick).")
flags.DEFINE_bool("force", False, "Redo every stage, even those an earlier run "
                  "into the same --output_dir finished with the same settings "
                  "(by default they are kept, after checking their files).")
flags.DEFINE_enum("strategy", "default", list(STRATEGIES),
                  "Where teacher, distill and prune train: one device, every "
                  "local GPU (mirrored), or the cluster in TF_CONFIG "
                  "(multi_worker, run the same command on every worker). "
                  "--batch_size is per replica.")
flags.DEFINE_float("worker_timeout", 600.0, "With --strategy multi_worker: "
                   "seconds a collective waits for the other workers before the "
                   "run stops with an error naming them (a dead worker is found "
                   "sooner, by its missing heartbeats).")
flags.DEFINE_integer("seed", 0, "Random seed for splits, initialization, shuffling.")
flags.DEFINE_bool("quick", False, "A fast look: a small slice of the data and "
                  "one epoch per stage. Figures are not representative.")
flags.DEFINE_bool("compare_scratch", False, "Also train the student from "
                  "scratch with the same epochs, as a control for distillation.")
flags.DEFINE_string("teacher", None, f"Teacher builder: {', '.join(BUILDERS)} (default {_DEFAULT.teacher.builder}).")
flags.DEFINE_integer("teacher_epochs", None, f"Teacher training epochs (default {_DEFAULT.teacher.epochs}).")
flags.DEFINE_float("teacher_learning_rate", None, f"Teacher peak learning rate (default {_DEFAULT.teacher.learning_rate}).")
flags.DEFINE_string("student", None, f"Student builder: {', '.join(BUILDERS)} (default {_DEFAULT.distill.builder}).")
flags.DEFINE_integer("distill_epochs", None, f"Distillation epochs (default {_DEFAULT.distill.epochs}).")
flags.DEFINE_float("distill_learning_rate", None, f"Distillation peak learning rate (default {_DEFAULT.distill.learning_rate}).")
flags.DEFINE_float("temperature", None, f"Distillation softmax temperature > 0 (default {_DEFAULT.distill.temperature}).")
flags.DEFINE_float("alpha", None, f"Weight of the distillation term in [0, 1] (default {_DEFAULT.distill.alpha}).")
flags.DEFINE_float("target_sparsity", None, f"Pruning target sparsity in [0, 1) (default {_DEFAULT.prune.target_sparsity}).")
flags.DEFINE_integer("prune_epochs", None, f"Pruning fine-tuning epochs (default {_DEFAULT.prune.epochs}).")
flags.DEFINE_integer("batch_size", None, f"Batch size of every training stage (default {_DEFAULT.teacher.batch_size}).")
flags.DEFINE_list("stages", None, "Stages in order, comma-separated, from: "
                  f"{', '.join(registry.names())}. teacher comes first; each later "
                  "stage compresses or measures the latest model "
                  f"(default {','.join(_DEFAULT.stages)}).")
flags.DEFINE_float("slim_rate", None, f"Share of conv channels the slim stage removes, in [0, 1) (default {_DEFAULT.slim.rate}).")
flags.DEFINE_integer("slim_prune_count", None, f"Slim steps with an increasing rate (default {_DEFAULT.slim.prune_count}).")
flags.DEFINE_integer("slim_finetune_epochs", None, f"Fine-tuning epochs after each slim step (default {_DEFAULT.slim.finetune_epochs}).")
flags.DEFINE_integer("slim_sparsity_epochs", None, f"Epochs of L1-on-BN-gamma training before slimming (default {_DEFAULT.slim.sparsity_epochs}).")
flags.DEFINE_float("slim_l1", None, f"Strength of the L1 penalty on BN gamma (default {_DEFAULT.slim.l1_strength}).")
flags.DEFINE_string("slim_criterion", None, f"Channel importance: bn_gamma, l1 or l2 (default {_DEFAULT.slim.criterion}).")
flags.DEFINE_string("slim_scope", None, f"Channel selection: global or local (default {_DEFAULT.slim.scope}).")
flags.DEFINE_float("slim_min_channels", None, f"Share of each conv's channels always kept, in (0, 1] (default {_DEFAULT.slim.min_channels}).")
flags.DEFINE_list("slim_layers", None, "Convs to slim (default: every conv that can be).")
flags.DEFINE_integer("strided_finetune_epochs", None, f"Fine-tuning epochs after folding pools into strided convolutions (default {_DEFAULT.strided.finetune_epochs}).")
flags.DEFINE_float("lowrank_energy", None, "Choose each rank to keep this share of the singular-value energy, in (0, 1].")
flags.DEFINE_float("lowrank_param_ratio", None, f"Choose each rank so the layer keeps this share of its parameters, in (0, 1) (default {_DEFAULT.lowrank.param_ratio}).")
flags.DEFINE_list("lowrank_layers", None, "Layers to factorize, or largest_dense (default largest_dense).")
flags.DEFINE_list("lowrank_ranks", None, "Per-layer ranks as layer=rank pairs, e.g. fc=32 (replaces energy / param_ratio).")
flags.DEFINE_integer("lowrank_finetune_epochs", None, f"Fine-tuning epochs after factorizing (default {_DEFAULT.lowrank.finetune_epochs}).")
flags.DEFINE_integer("clusters", None, f"Shared values per kernel in the cluster stage (default {_DEFAULT.cluster.number_of_clusters}).")
flags.DEFINE_string("cluster_init", None, f"Centroid init: kmeans_plus_plus, linear, density_based or random (default {_DEFAULT.cluster.centroid_init}).")
flags.DEFINE_integer("cluster_epochs", None, f"Fine-tuning epochs of the centroids (default {_DEFAULT.cluster.epochs}).")
flags.DEFINE_float("cluster_learning_rate", None, f"Centroid fine-tuning learning rate (default {_DEFAULT.cluster.learning_rate}).")
flags.DEFINE_bool("cluster_preserve_sparsity", None, "Keep the zeros of a pruned model when clustering (default: yes when the run pruned it).")
flags.DEFINE_list("cluster_layers", None, "Layers to cluster (default: every Conv2D, DepthwiseConv2D and Dense).")
flags.DEFINE_list("cluster_layer_clusters", None, "Per-layer cluster counts as layer=clusters pairs, e.g. fc=8,block1a_conv=32 (others get --clusters).")
flags.DEFINE_string("qat_scheme", None, "QAT variant: auto (pcqat after prune+cluster, pqat after prune, cqat after cluster, else qat), qat, pqat, cqat or pcqat (default auto).")
flags.DEFINE_integer("qat_bits", None, "QAT for the int8 file (8, the default) or for the int4 file (4: the kernels the int4 file makes 4-bit are trained on its grid, the model is converted to int4; --quant_modes then defaults to int8,int4, so the post-training int4 file is there to compare).")
flags.DEFINE_integer("qat_epochs", None, f"Quantization-aware fine-tuning epochs (default {_DEFAULT.qat.epochs}).")
flags.DEFINE_float("qat_learning_rate", None, f"Quantization-aware fine-tuning learning rate (default {_DEFAULT.qat.learning_rate}).")
flags.DEFINE_string("binary_mode", None, "Binary weights: bwn (alpha * sign(w)) or binaryconnect (sign(w)) (default bwn).")
flags.DEFINE_integer("binary_epochs", None, f"Training epochs of the binary model (default {_DEFAULT.binary.epochs}).")
flags.DEFINE_list("binary_layers", None, "Conv2D / Dense layers to binarize (default: all).")
flags.DEFINE_list("bits", None, "Bit widths of the bitwidth stage (default 8,4,2).")
flags.DEFINE_list("sweep_qualities", None, "Threshold multipliers q of the sweep stage (|w| < q * std(w) removed).")
flags.DEFINE_list("sensitivity_sparsities", None, "Sparsities each layer is pruned to, alone, in the sensitivity stage.")
flags.DEFINE_bool("search", False, "Search the compression space (slim rates, sensitivity-spread sparsities, int8 / int4 files) for the smallest or fastest file within --max_accuracy_drop of the baseline, under --search_budget: the stages become teacher,distill,search, or teacher,search with --model (with --stages: search is appended).")
flags.DEFINE_string("objective", None, f"What --search makes small: size (gzip bytes) or latency (default {_DEFAULT.search.objective}).")
flags.DEFINE_float("search_budget", None, f"Seconds the search stage may spend (default {_DEFAULT.search.time_budget:.0f}).")
flags.DEFINE_list("search_modes", None, f"Conversion modes the search tries for every model (default {','.join(_DEFAULT.search.modes)}).")
flags.DEFINE_float("max_accuracy_drop", None, f"Validation accuracy drop allowed, in percentage points: with --search, the whole model against the baseline (default {_DEFAULT.search.max_accuracy_drop}); in the sensitivity stage, per layer (default {_DEFAULT.analysis.max_accuracy_drop}).")
flags.DEFINE_float("sensitivity_target_sparsity", None, "Sensitivity stage: reach this overall sparsity where the curves say it costs least, instead of the --max_accuracy_drop budget.")
flags.DEFINE_bool("quantization_debug", None, "Also list each int8 op's own error in quantization steps (TF Lite's QuantizationDebugger); every int8 file's diagnosis along the graph is in the report's int8 section anyway.")
flags.DEFINE_bool("latency_breakdown", None, "Time every int8 model segment by segment (default: for models of at most 32 compute layers; --latency_breakdown forces it, --nolatency_breakdown skips it).")
flags.DEFINE_list("quant_modes", None, "Conversion modes, each a report row per model: float32, float16, dynamic_range, int8, int16x8, int4 (4-bit weights, int8 activations) or dynamic_int4 (4-bit weights, float activations); the int4 modes are written by LiteRT's quantizer (default int8).")
flags.DEFINE_string("int4_layers", None, "Mixed precision: a regular expression over the weight tensor names (the Keras layer names, as tfopt inspect lists them) of the layers that get 4-bit weights in the int4 modes, e.g. 'block[23]|logits'; the others stay int8 (default: every layer the quantizer can take).")
flags.DEFINE_string("int8_repair", None, "on (default): every int8 file is the most faithful of the recipes tfopt tries on the validation images (per-channel or per-tensor weights, the ops that lose the most kept float), within --int8_repair_size_ratio / --int8_repair_latency_ratio of the plain file; off: the converter's plain int8 file.")
flags.DEFINE_float("int8_repair_size_ratio", None, f"How much larger than the plain int8 file a repaired one may be (default {_DEFAULT.convert.int8_repair_size_ratio}).")
flags.DEFINE_float("int8_repair_latency_ratio", None, f"How much slower than the plain int8 file a repaired one may be (default {_DEFAULT.convert.int8_repair_latency_ratio}).")
flags.DEFINE_integer("num_threads", None, f"LiteRT threads for the measurements (default {_DEFAULT.evaluate.num_threads}).")
flags.DEFINE_integer("latency_runs", None, f"Timed invokes for the latency median (default {_DEFAULT.evaluate.latency_runs}).")
flags.DEFINE_multi_string("set", None, "Any setting, as section.field=value: the sections and fields of a recipe (a run's recipe.yaml), the value in YAML, typed and checked as a recipe's; e.g. --set prune.target_sparsity=0.8, also written --prune.target_sparsity=0.8. Given last, over every other flag. With --task: the task stages' settings (--distill.width=0.25).")

# The short flags cli.py turns into settings itself (lists, pairs, sizes);
# every other alias in options.ALIASES is copied as it is.
_PARSED = frozenset((
    "image_size", "input_range", "labels_file", "color_mode", "augment", "stages",
    "slim_layers", "lowrank_layers", "lowrank_ranks", "cluster_layers", "binary_layers",
    "cluster_layer_clusters", "bits", "sweep_qualities", "sensitivity_sparsities",
    "search_modes", "quant_modes"))
_OVERRIDES = {flag: target for flag, target in options.ALIASES.items()
              if flag not in _PARSED}
for _name in options.DEPRECATED:  # kept working for this release; --help says so
  FLAGS[_name].help = (f"Deprecated (goes in tfopt 0.3): write "
                       f"{options.replacement(_name)}=VALUE. {FLAGS[_name].help}")


def config_from_flags() -> PipelineConfig:
  """Builds the PipelineConfig from the parsed flags (raises ConfigError).

  Layers, each over the one before: the defaults, the --recipe or --preset
  file, --quick's slices and epochs, then every flag given.
  """
  loaded = _recipe()
  from_recipe = loaded.changes() if loaded else {}
  model = FLAGS.model or from_recipe.get(None, {}).get("model")
  ignored = [f"--{name}" for name in ("teacher", "teacher_epochs", "teacher_learning_rate")
             if model and FLAGS[name].value is not None]
  if ignored:
    raise ConfigError(f"{', '.join(ignored)} set how a teacher is trained, but --model "
                      "gives the baseline and nothing is trained in its place; drop "
                      f"{' and '.join(ignored)}.")
  changes = _flag_changes()
  quick = recipe.load(recipe.preset_path("quick")).changes() if FLAGS.quick else {}
  merged = recipe.merge(from_recipe, quick, changes, _assigned(changes))
  if FLAGS.search:
    merged[None]["stages"] = _with_search(merged[None].get("stages"), model)
  if merged.get("qat", {}).get("bits") == 4 and "modes" not in merged.get("convert", {}):
    # The int4 QAT file's post-training twin, to compare with.
    merged.setdefault("convert", {})["modes"] = ("int8", "int4")
  if "output_dir" not in merged[None]:
    merged[None]["output_dir"] = _default_output_dir(merged.get("data", {}))
  return recipe.build(merged, loaded)


def _assigned(flag_changes: dict) -> dict:
  """The --section.field=value settings; a short flag given beside them keeps
  its value over the shared `finetune` ones (--prune_epochs 4 --finetune.epochs=1)."""
  assigned = recipe.from_assignments(FLAGS.set or ())
  changes = assigned.changes()
  for section, values in flag_changes.items():
    for key in values:
      if not assigned.sets(section, key):
        changes.get(section, {}).pop(key, None)
  return changes


def _flag_changes() -> dict:
  """{section (None: top level): {field: value}} of every flag given."""
  changes, top = {}, {}
  for flag_name, (section, field_name) in _OVERRIDES.items():
    if FLAGS[flag_name].present or (FLAGS[flag_name].value is not None
                                    and FLAGS[flag_name].default is None):
      if section is None:
        top[field_name] = FLAGS[flag_name].value
      else:
        changes.setdefault(section, {})[field_name] = FLAGS[flag_name].value
  for flag_name, targets in options.MULTI_ALIASES.items():
    if FLAGS[flag_name].value is not None:  # e.g. --batch_size: every training stage's
      for section, field_name in targets:
        changes.setdefault(section, {})[field_name] = FLAGS[flag_name].value
  if FLAGS.lowrank_energy is not None and FLAGS.lowrank_param_ratio is None:
    changes["lowrank"]["param_ratio"] = None  # energy replaces the default ratio
  if FLAGS.lowrank_ranks is not None:
    changes.setdefault("lowrank", {}).update(
        ranks=_parse_pairs("lowrank_ranks", FLAGS.lowrank_ranks, "fc=32"),
        param_ratio=None)
  if FLAGS.cluster_layer_clusters is not None:
    changes.setdefault("cluster", {})["layer_clusters"] = _parse_pairs(
        "cluster_layer_clusters", FLAGS.cluster_layer_clusters, "fc=8")
  for flag_name, field_name, kind in (("bits", "bits", int),
                                     ("sweep_qualities", "sweep_qualities", float),
                                     ("sensitivity_sparsities",
                                      "sensitivity_sparsities", float)):
    if FLAGS[flag_name].value is not None:
      changes.setdefault("analysis", {})[field_name] = _parse_numbers(
          flag_name, FLAGS[flag_name].value, kind)
  for flag_name, kind in (("image_size", int), ("input_range", float)):
    if FLAGS[flag_name].value is not None:
      values = _parse_numbers(flag_name, FLAGS[flag_name].value, kind)
      # --image_size 64 means 64x64.
      changes.setdefault("data", {})[flag_name] = (
          values * 2 if flag_name == "image_size" and len(values) == 1 else values)
  for flag_name in ("labels_file", "color_mode", "augment"):
    if FLAGS[flag_name].value is not None:
      changes.setdefault("data", {})[flag_name] = FLAGS[flag_name].value
  if FLAGS.quant_modes is not None:
    changes.setdefault("convert", {})["modes"] = tuple(FLAGS.quant_modes)
  if FLAGS.search_modes is not None:
    changes.setdefault("search", {})["modes"] = tuple(FLAGS.search_modes)
  for flag_name, section in (("slim_layers", "slim"), ("lowrank_layers", "lowrank"),
                             ("cluster_layers", "cluster"), ("binary_layers", "binary")):
    if FLAGS[flag_name].value is not None:
      changes.setdefault(section, {})["layers"] = tuple(FLAGS[flag_name].value)
  if FLAGS.stages is not None:
    top["stages"] = tuple(FLAGS.stages)
  changes[None] = top
  return changes


def _with_search(stages, model) -> tuple:
  """--search: teacher,distill,search (teacher,search from --model: your model
  is what is compressed), or the stages given with search appended."""
  if stages is None:
    return ("teacher", "search") if model else ("teacher", "distill", "search")
  return tuple(stages) + (("search",) if "search" not in stages else ())


def _default_output_dir(data: dict) -> str:
  """runs/<data set>, runs/folder-<folder name>; -quick for --quick runs."""
  dataset = data.get("dataset", DataConfig.dataset)
  name = (f"folder-{os.path.basename(os.path.normpath(data['data_dir']))}"
          if dataset == "folder" and data.get("data_dir") else dataset)
  return f"runs/{name}" + ("-quick" if FLAGS.quick else "")


def _recipe():
  """The --recipe or --preset file, loaded, or None."""
  if FLAGS.recipe and FLAGS.preset:
    raise ConfigError("--recipe and --preset both give a recipe; choose one.")
  path = recipe.preset_path(FLAGS.preset) if FLAGS.preset else FLAGS.recipe
  return recipe.load(path) if path else None


def _parse_numbers(flag_name: str, values, kind) -> tuple:
  """["8", "4"] -> (8, 4); raises ConfigError on a value that is not a number."""
  try:
    return tuple(kind(value) for value in values)
  except ValueError as error:
    raise ConfigError(f"--{flag_name}={','.join(values)} is invalid: give "
                      f"comma-separated {kind.__name__}s.") from error


def _parse_pairs(flag_name: str, pairs, example: str) -> dict:
  """["fc=32", ...] -> {"fc": 32}; raises ConfigError on a malformed pair."""
  parsed = {}
  for pair in pairs:
    name, _, value = pair.partition("=")
    if not name or not value.strip().isdigit():
      raise ConfigError(f"--{flag_name} entry {pair!r} is invalid: write "
                        f"layer=integer, e.g. {example}.")
    parsed[name.strip()] = int(value)
  return parsed


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  # TensorFlow's converter logs every SavedModel it writes at INFO; the
  # user's terminal gets tfopt's own lines and warnings only.
  absl_logging.set_verbosity(absl_logging.WARNING)
  from tfopt.core import progress  # pylint: disable=g-import-not-at-top
  progress.set_format(FLAGS.log_format)
  for name in sorted(options.DEPRECATED):
    if FLAGS[name].present:
      progress.log(f"note: --{name} is deprecated and goes in tfopt 0.3; write "
                   f"{options.replacement(name)}=VALUE (any setting takes that form)",
                   event="deprecated", flag=name, replacement=options.replacement(name))
  try:
    if FLAGS.task:
      return _run_task()
    config = config_from_flags()
    from tfopt.run import runner  # pylint: disable=g-import-not-at-top
    result = runner.run(config, force=FLAGS.force)
  except TfoptError as error:
    if progress.json_mode():
      progress.log(str(error), event="error")
    print(f"tfopt: error: {error}", file=sys.stderr)
    return 2
  from tfopt.stages.report import render_markdown  # pylint: disable=g-import-not-at-top
  if progress.json_mode():
    progress.log("done", event="done", outputs=result.outputs)
  else:
    print(render_markdown(result))
  return 0


# Flags a --task run does not read: its data, loss and metrics are the task file's.
_NOT_FOR_TASKS = ("recipe", "preset", "dataset", "data_dir", "labels_file", "image_size",
                  "color_mode", "input_range", "teacher", "teacher_epochs", "student")


def _run_task() -> int:
  """--model with --task: tfopt.run.task_run on the task file's data, loss, metrics."""
  from tfopt.run import task_run  # pylint: disable=g-import-not-at-top
  from tfopt.task import file as task_file, report as task_report
  given = [f"--{name}" for name in _NOT_FOR_TASKS if FLAGS[name].present]
  if given:
    raise ConfigError(f"{', '.join(given)} cannot go with --task: the task file gives "
                      "the data, loss and metrics; drop them.")
  if not FLAGS.model:
    raise ConfigError("--task needs --model: the trained Keras model to compress.")
  defined = task_file.load_task_file(FLAGS.task)
  stage_settings = _task_stage_flags(defined.pop("settings", None) or {})
  stem = os.path.splitext(os.path.basename(FLAGS.task))[0]
  result = task_run.compress(
      FLAGS.model, stages=_task_stages(), settings=stage_settings,
      quant_modes=tuple(FLAGS.quant_modes or ("float32", "int8")),
      output_dir=FLAGS.output_dir or f"runs/task-{stem}",
      batch_size=_given(FLAGS.batch_size, 32), num_threads=_given(FLAGS.num_threads, 1),
      seed=FLAGS.seed, allow_unsafe_model=FLAGS.allow_unsafe_model, **defined)
  print(task_report.render_markdown(result))
  return 0


def _task_stages() -> tuple:
  """--stages (default prune), with search last under --search."""
  stages = tuple(FLAGS.stages or ())
  if FLAGS.search and "search" not in stages:
    stages += ("search",)
  return stages or ("prune",)


# Flags whose section is not a task stage, and what they set on a task run.
_TASK_FLAGS = {"sensitivity_sparsities": ("sensitivity", "sparsities"),
               "sensitivity_target_sparsity": ("sensitivity", "target_sparsity"),
               "num_threads": None}


def _task_stage_flags(from_file: dict) -> dict:
  """{stage: {field: value}}: the task file's `settings`, then the command
  line's shared --finetune.* values, then each stage flag given
  (--target_sparsity, --prune.epochs=3, ...) over them."""
  from tfopt.run.task_run import task_stages  # pylint: disable=g-import-not-at-top
  stages = tuple(task_stages())
  if not isinstance(from_file, dict):
    return from_file  # tfopt.compress says what it must be
  given, unused = {}, []
  # --max_accuracy_drop (analysis and search, in accuracy points) is refused by name.
  aliases = dict(_OVERRIDES, max_accuracy_drop=("analysis", "max_accuracy_drop"))
  for flag_name, (section, field) in aliases.items():
    if section is None or FLAGS[flag_name].value is None or flag_name in _TASK_FLAGS:
      continue
    if section in stages:
      given.setdefault(section, {})[field] = FLAGS[flag_name].value
    else:
      unused.append(f"--{flag_name}")
  for flag_name, target in _TASK_FLAGS.items():
    if target and FLAGS[flag_name].value is not None:
      value = FLAGS[flag_name].value
      given.setdefault(target[0], {})[target[1]] = (
          tuple(float(item) for item in value) if isinstance(value, list) else value)
  if unused:
    raise ConfigError(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not "
                      f"apply to a --task run: its stages are "
                      f"{', '.join(stages)}; a task's own settings (e.g. the "
                      "sensitivity budget in its objective's units) go in the task file's "
                      "`settings` dict.")
  if FLAGS.slim_layers is not None:
    given.setdefault("slim", {})["layers"] = tuple(FLAGS.slim_layers)
  if FLAGS.compare_scratch:
    given.setdefault("distill", {})["compare_scratch"] = True
  shared = _task_assignments(given, stages)
  settings = {stage: dict(values) for stage, values in from_file.items()
              if isinstance(values, dict)}
  _share_finetune(settings, shared)
  for stage, values in given.items():
    settings.setdefault(stage, {}).update(values)
  return {**from_file, **settings}


def _task_assignments(given: dict, stages) -> list:
  """The --section.field=value settings of a --task run into `given`; returns
  the shared --finetune.* ones as given."""
  shared = [item for item in FLAGS.set or () if item.startswith(f"{recipe.FINETUNE}.")]
  for section, field, value in recipe.assignments(FLAGS.set or ()):
    if section == recipe.FINETUNE:
      continue
    if section not in stages:
      name = f"{section}.{field}" if section else field
      raise ConfigError(f"--set {name}: a --task run's settings are its stages' "
                        f"({', '.join(stages)}) or finetune's, e.g. "
                        "--prune.target_sparsity=0.8.")
    given.setdefault(section, {})[field] = tuple(value) if isinstance(value, list) else value
  return shared


def _share_finetune(settings: dict, shared: list):
  """--finetune.* values into every task stage that fine-tunes (FineTuneConfig)."""
  if not shared:
    return
  from tfopt.run.task_run import task_stages  # pylint: disable=g-import-not-at-top
  values, hooks = recipe.from_assignments(shared).finetune(), task_stages()
  for stage in FINE_TUNED_SECTIONS:
    if stage in hooks:
      fields = tuple(item.name for item in dataclasses.fields(hooks[stage].config_class))
      settings.setdefault(stage, {}).update(values.shared_with(fields))


def _given(value, default):
  return default if value is None else value


_DOTTED = re.compile(r"^--?([A-Za-z_]\w*\.\w+=.*)$", re.DOTALL)


def parse_flags(argv):
  """absl's flag parsing, with one `tfopt: error:` line and exit 2 on a bad flag.
  `--section.field=value` is read as `--set section.field=value`."""
  argv = [argv[0]] + [_DOTTED.sub(r"--set=\1", arg) for arg in argv[1:]]
  try:
    return FLAGS(argv)
  except flags.Error as error:
    prog = argv[0] if argv[0].startswith("tfopt") else "python -m tfopt.pipeline"
    print(f"tfopt: error: {error}. See {prog} --help.", file=sys.stderr)
    sys.exit(2)


def run_main():
  app.run(main, flags_parser=parse_flags)
