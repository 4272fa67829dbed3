"""`python -m tfopt ...`: the same as the `tfopt` command (tfopt.console)."""

from tfopt.console import run

run()
