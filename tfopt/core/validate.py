"""Checks for configuration values: each raises ConfigError naming the field.

The settings dataclasses (tfopt.config, each tfopt/techniques/<name>/settings.py) call these in
``__post_init__``, so a bad value fails before any work starts.
"""

from tfopt.core.errors import TfoptError

__all__ = ["ConfigError", "require", "require_positive_int", "require_fraction",
           "require_positive_number"]


class ConfigError(TfoptError, ValueError):
  """A configuration value is invalid."""


def require(ok, name, value, allowed):
  if not ok:
    raise ConfigError(f"{name}={value!r} is invalid: it must be {allowed}.")


def require_positive_int(name, value):
  require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
          name, value, "an integer >= 1")


def require_fraction(name, value, low_open=False, high_open=True):
  is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
  low_ok = is_number and (value > 0 if low_open else value >= 0)
  high_ok = is_number and (value < 1 if high_open else value <= 1)
  interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
  require(low_ok and high_ok, name, value, f"a number in {interval}")


def require_positive_number(name, value):
  require(isinstance(value, (int, float)) and not isinstance(value, bool)
          and value > 0, name, value, "a number > 0")

