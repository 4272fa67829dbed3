"""Command-line flags for ``python -m tfopt.pipeline``: flags -> config -> run.

The flags live here, in one place; the library never reads them.
"""

import dataclasses
import sys

from absl import app, flags

from tfopt.config import (ConvertConfig, DataConfig, DistillConfig,
                          EvaluateConfig, PipelineConfig, PruneConfig,
                          TrainConfig)
from tfopt.errors import TfoptError

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset", "mnist", "Data set: mnist or fashion_mnist.")
flags.DEFINE_string("data_dir", None, "Directory with the data set's IDX .gz "
                    "files or .npz (default: $TFOPT_DATA_DIR, then download).")
flags.DEFINE_string("output_dir", None, "Where artifacts and the report go "
                    "(default: runs/<dataset>, or runs/<dataset>-quick).")
flags.DEFINE_integer("seed", 0, "Random seed for splits, initialization, shuffling.")
flags.DEFINE_bool("quick", False, "A fast look: a small slice of the data and "
                  "one epoch per stage. Figures are not representative.")
flags.DEFINE_bool("compare_scratch", False, "Also train the student from "
                  "scratch with the same epochs, as a control for distillation.")
flags.DEFINE_string("teacher", None, "Teacher builder (teacher, student, mobilenet_v1).")
flags.DEFINE_integer("teacher_epochs", None, "Teacher training epochs.")
flags.DEFINE_float("teacher_learning_rate", None, "Teacher peak learning rate.")
flags.DEFINE_string("student", None, "Student builder (student, mobilenet_v1, ...).")
flags.DEFINE_integer("distill_epochs", None, "Distillation epochs.")
flags.DEFINE_float("distill_learning_rate", None, "Distillation peak learning rate.")
flags.DEFINE_float("temperature", None, "Distillation softmax temperature (> 0).")
flags.DEFINE_float("alpha", None, "Weight of the distillation term, in [0, 1].")
flags.DEFINE_float("target_sparsity", None, "Pruning target sparsity, in [0, 1).")
flags.DEFINE_integer("prune_epochs", None, "Pruning fine-tuning epochs.")
flags.DEFINE_integer("batch_size", None, "Batch size of every training stage.")
flags.DEFINE_bool("dynamic_range", None, "Also write dynamic-range int8 files.")
flags.DEFINE_integer("num_threads", None, "LiteRT threads for the measurements.")
flags.DEFINE_integer("latency_runs", None, "Timed invokes for the latency median.")

# flag name -> (PipelineConfig section, field name)
_OVERRIDES = {
    "dataset": ("data", "dataset"), "data_dir": ("data", "data_dir"),
    "teacher": ("teacher", "builder"), "teacher_epochs": ("teacher", "epochs"),
    "teacher_learning_rate": ("teacher", "learning_rate"),
    "student": ("distill", "builder"), "distill_epochs": ("distill", "epochs"),
    "distill_learning_rate": ("distill", "learning_rate"),
    "temperature": ("distill", "temperature"), "alpha": ("distill", "alpha"),
    "target_sparsity": ("prune", "target_sparsity"),
    "prune_epochs": ("prune", "epochs"),
    "dynamic_range": ("convert", "dynamic_range"),
    "num_threads": ("evaluate", "num_threads"),
    "latency_runs": ("evaluate", "latency_runs"),
}


def config_from_flags() -> PipelineConfig:
  """Builds the PipelineConfig from the parsed flags (raises ConfigError)."""
  base = PipelineConfig.quick() if FLAGS.quick else PipelineConfig()
  sections = {name: dataclasses.asdict(getattr(base, name))
              for name in ("data", "teacher", "distill", "prune", "convert",
                           "evaluate")}
  for flag_name, (section, field_name) in _OVERRIDES.items():
    value = FLAGS[flag_name].value
    if value is not None and (FLAGS[flag_name].present or flag_name == "dataset"):
      sections[section][field_name] = value
  if FLAGS.batch_size is not None:
    for section in ("teacher", "distill", "prune"):
      sections[section]["batch_size"] = FLAGS.batch_size
  classes = dict(data=DataConfig, teacher=TrainConfig, distill=DistillConfig,
                 prune=PruneConfig, convert=ConvertConfig, evaluate=EvaluateConfig)
  suffix = "-quick" if FLAGS.quick else ""
  return PipelineConfig(
      **{name: classes[name](**values) for name, values in sections.items()},
      output_dir=FLAGS.output_dir or f"runs/{sections['data']['dataset']}{suffix}",
      seed=FLAGS.seed, compare_scratch=FLAGS.compare_scratch)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = config_from_flags()
    from tfopt import pipeline  # pylint: disable=g-import-not-at-top
    result = pipeline.run(config)
  except TfoptError as error:
    print(f"tfopt: error: {error}", file=sys.stderr)
    return 2
  from tfopt.report import render_markdown  # pylint: disable=g-import-not-at-top
  print(render_markdown(result))
  return 0


def run_main():
  flags.adopt_module_key_flags(sys.modules[__name__])  # listed by --help
  app.run(main)
