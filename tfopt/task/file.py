"""`tfopt compress --model M --task my_task.py`: a task as a Python file.

The file defines, as values or as functions of no arguments returning them:

    train, test          required: the data (see tfopt.task.definition for the forms)
    val                  validation data (fine-tuning is then monitored on it)
    loss, metrics        as compile takes them (default: the model's own
                         compiled loss and metrics)
    score                fn(y_true, y_pred) -> float on the whole test set
    score_name           its name in the report (default: the function's)
    higher_is_better     the score's direction (default True)
    distill_loss         fn(teacher_output, student_output), or a dict per
                         output, where the default distillation does not fit
    settings             {stage: {setting: value}}, as tfopt.compress takes
                         them (the command line's stage flags go over them)

It is run once, as the user's own code (like a Keras training script).
"""

import importlib.util
import inspect
import os
import sys
import traceback
from typing import Dict

from tfopt.task.definition import TaskError

__all__ = ["REQUIRED", "OPTIONAL", "load_task_file"]

REQUIRED = ("train", "test")
OPTIONAL = ("val", "loss", "metrics", "score", "score_name", "higher_is_better",
            "distill_loss", "settings")


def load_task_file(path: str) -> Dict[str, object]:
  """{name: value} of what the task file defines, for tfopt.compress.

  Raises:
    TaskError: the file is missing, does not run (its line and error named),
      or lacks train / test.
  """
  if not os.path.isfile(path):
    raise TaskError(f"Task file {path!r} does not exist; give a Python file that "
                    f"defines {' and '.join(REQUIRED)} (see tfopt/task/file.py).")
  module = _run(path)
  missing = [name for name in REQUIRED if not hasattr(module, name)]
  if missing:
    raise TaskError(f"Task file {path} does not define {', '.join(missing)}: it must "
                    f"define {', '.join(REQUIRED)} (and may define {', '.join(OPTIONAL)}).")
  return {name: _value(path, name, getattr(module, name))
          for name in REQUIRED + OPTIONAL if hasattr(module, name)}


def _run(path: str):
  """Imports the file (its folder on sys.path, for its own helper modules)."""
  folder = os.path.dirname(os.path.abspath(path))
  name = "tfopt_task_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise TaskError(f"Task file {path} cannot be imported: give a .py file.")
  module = importlib.util.module_from_spec(spec)
  # Registered, as an import would be: AutoGraph looks a function's module up
  # there to convert the file's dataset.map functions.
  sys.modules[name] = module
  sys.path.insert(0, folder)
  try:
    spec.loader.exec_module(module)
  except Exception as error:  # the user's code may raise anything
    sys.modules.pop(name, None)
    raise TaskError(f"Task file {path} failed{_where(path, error)}: "
                    f"{type(error).__name__}: {error}") from error
  finally:
    sys.path.remove(folder)
  return module


def _where(path: str, error: BaseException) -> str:
  """' at line N' of the task file where `error` was raised (deepest frame there)."""
  if isinstance(error, SyntaxError) and error.lineno:
    return f" at line {error.lineno}"
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == os.path.abspath(path)]
  return f" at line {lines[-1]}" if lines else ""


def _value(path: str, name: str, value):
  """The value, or what a function of no arguments returns (a loss or score
  function takes (y_true, y_pred), so it is kept as it is)."""
  if not callable(value) or not _takes_no_arguments(value):
    return value
  try:
    return value()
  except Exception as error:  # the user's code may raise anything
    raise TaskError(f"Task file {path}: {name}() failed{_where(path, error)}: "
                    f"{type(error).__name__}: {error}") from error


def _takes_no_arguments(function) -> bool:
  try:
    parameters = inspect.signature(function).parameters.values()
  except (TypeError, ValueError):  # builtins, some Keras objects
    return False
  return not any(parameter.default is inspect.Parameter.empty and parameter.kind in (
      parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD) for parameter in parameters)
