"""The `tfopt` command: one entry point, a subcommand per job.

    tfopt compress [flags]        compress a model (python -m tfopt.pipeline)
    tfopt measure FILE [flags]    measure a .tflite or deploy bundle in LiteRT
    tfopt inspect FILE [--json]   what a .tflite holds: ops, dtypes, sparsity

`tfopt SUBCOMMAND --help` describes each. Installed as a console script by
setup.cfg; `python -m tfopt` does the same.
"""

import sys
from typing import List, Optional

from tfopt.core import quiet_start

SUBCOMMANDS = {
    "compress": "compress a model: distill, prune, slim, ... and measure every .tflite",
    "measure": "measure a .tflite file or deploy/ bundle in LiteRT on a data set",
    "inspect": "show what a .tflite file holds: ops, dtypes, sparsity, distinct values",
}


def _usage() -> str:
  lines = ["usage: tfopt SUBCOMMAND [options]", "", "subcommands:"]
  lines += [f"  {name:<9} {text}" for name, text in SUBCOMMANDS.items()]
  lines += ["", "`tfopt SUBCOMMAND --help` lists a subcommand's options; `--verbose` with any",
            "subcommand also shows TensorFlow's own C++ start-up log lines."]
  return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(_usage())
    return 0
  command, rest = argv[0], argv[1:]
  if command not in SUBCOMMANDS:
    print(f"tfopt: error: unknown subcommand {command!r}.\n\n{_usage()}", file=sys.stderr)
    return 2
  verbose, rest = quiet_start.take_verbose(rest)
  quiet_start.import_tensorflow(verbose)  # without its C++ start-up lines
  if command == "compress":
    return _compress(rest)
  if command == "measure":
    from tfopt.cli import measure  # pylint: disable=g-import-not-at-top
    return measure.main(rest, prog="tfopt measure")
  from tfopt.cli import inspect as inspect_file  # pylint: disable=g-import-not-at-top
  return inspect_file.main(rest)


def _compress(rest: List[str]) -> int:
  """The pipeline's absl flags, parsed from `rest`."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from tfopt.cli import compress as cli  # pylint: disable=g-import-not-at-top
  if any(arg in ("-h", "--help", "--helpshort", "--helpfull") for arg in rest):
    print("usage: tfopt compress [flags] [--verbose]\n\n" + SUBCOMMANDS["compress"] + ".\n"
          "--verbose also shows TensorFlow's own C++ start-up log lines.\n")
    print(flags.FLAGS.module_help(cli))
    return 0
  try:
    return app.run(cli.main, argv=["tfopt compress"] + rest,
                   flags_parser=cli.parse_flags) or 0
  except SystemExit as done:  # app.run exits; the console script wants a code
    return done.code if isinstance(done.code, int) else 0


def run() -> None:
  sys.exit(main())


if __name__ == "__main__":
  run()
