"""Command-line flags for ``python -m tfopt.pipeline``: flags -> config -> run.

The flags live here, in one place; the library never reads them.
"""

import dataclasses
import sys

from absl import app, flags

from tfopt.config import PipelineConfig
from tfopt.errors import TfoptError

FLAGS = flags.FLAGS
_DEFAULT = PipelineConfig()

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
flags.DEFINE_string("teacher", None, f"Teacher builder: teacher, student or mobilenet_v1 (default {_DEFAULT.teacher.builder}).")
flags.DEFINE_integer("teacher_epochs", None, f"Teacher training epochs (default {_DEFAULT.teacher.epochs}).")
flags.DEFINE_float("teacher_learning_rate", None, f"Teacher peak learning rate (default {_DEFAULT.teacher.learning_rate}).")
flags.DEFINE_string("student", None, f"Student builder (default {_DEFAULT.distill.builder}).")
flags.DEFINE_integer("distill_epochs", None, f"Distillation epochs (default {_DEFAULT.distill.epochs}).")
flags.DEFINE_float("distill_learning_rate", None, f"Distillation peak learning rate (default {_DEFAULT.distill.learning_rate}).")
flags.DEFINE_float("temperature", None, f"Distillation softmax temperature > 0 (default {_DEFAULT.distill.temperature}).")
flags.DEFINE_float("alpha", None, f"Weight of the distillation term in [0, 1] (default {_DEFAULT.distill.alpha}).")
flags.DEFINE_float("target_sparsity", None, f"Pruning target sparsity in [0, 1) (default {_DEFAULT.prune.target_sparsity}).")
flags.DEFINE_integer("prune_epochs", None, f"Pruning fine-tuning epochs (default {_DEFAULT.prune.epochs}).")
flags.DEFINE_integer("batch_size", None, f"Batch size of every training stage (default {_DEFAULT.teacher.batch_size}).")
flags.DEFINE_bool("dynamic_range", None, "Also write dynamic-range int8 files (default false).")
flags.DEFINE_integer("num_threads", None, f"LiteRT threads for the measurements (default {_DEFAULT.evaluate.num_threads}).")
flags.DEFINE_integer("latency_runs", None, f"Timed invokes for the latency median (default {_DEFAULT.evaluate.latency_runs}).")

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
  changes = {}
  for flag_name, (section, field_name) in _OVERRIDES.items():
    if FLAGS[flag_name].value is not None:
      changes.setdefault(section, {})[field_name] = FLAGS[flag_name].value
  if FLAGS.batch_size is not None:
    for section in ("teacher", "distill", "prune"):
      changes.setdefault(section, {})["batch_size"] = FLAGS.batch_size
  sections = {section: dataclasses.replace(getattr(base, section), **values)
              for section, values in changes.items()}  # validates each one
  dataset = sections.get("data", base.data).dataset
  default_output_dir = f"runs/{dataset}" + ("-quick" if FLAGS.quick else "")
  return dataclasses.replace(
      base, **sections, seed=FLAGS.seed, compare_scratch=FLAGS.compare_scratch,
      output_dir=FLAGS.output_dir or default_output_dir)


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
  app.run(main)
