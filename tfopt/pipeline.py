"""The main job: train a teacher, distill a student, prune it, convert, measure.

    python -m tfopt.pipeline --dataset mnist [--data_dir DIR] [--quick]

This module is the entry point only. `run(PipelineConfig(...))` (from
tfopt.run.runner) is the library call; the command line's flags live in
tfopt.cli.compress; the stages are in tfopt/stages/, one module each, listed in
tfopt.config.registry.
"""

import sys

if __name__ == "__main__":
  # The CLI keeps TensorFlow's C++ start-up lines out of the user's terminal
  # unless --verbose; library users keep their own setting.
  from tfopt.core import quiet_start  # pylint: disable=g-import-not-at-top
  _verbose, sys.argv[1:] = quiet_start.take_verbose(sys.argv[1:])
  quiet_start.import_tensorflow(_verbose)

from tfopt.run.preflight import OutputDirError, check_output_dir  # noqa: E402
from tfopt.run.runner import run  # noqa: E402

__all__ = ["run", "OutputDirError", "check_output_dir"]

if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfopt.cli import compress as cli  # pylint: disable=g-import-not-at-top
  flags.adopt_module_key_flags(cli)  # so that --help lists them
  cli.run_main()
