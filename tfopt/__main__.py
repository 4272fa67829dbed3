"""`python -m tfopt ...`: the same as the `tfopt` command (tfopt.cli.console)."""

from tfopt.cli.console import run

run()
