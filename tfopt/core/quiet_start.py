"""TensorFlow's C++ start-up lines, kept out of the terminal unless --verbose.

On a machine without a GPU, importing TensorFlow and touching its devices
writes, from C++: absl's "All log messages before absl::InitializeLog() ..."
warning, "Could not find cuda drivers on your machine" (twice) and an
`E0000 ... failed call to cuInit` *error* line. TF_CPP_MIN_LOG_LEVEL does not
hold back the first ones (they are written before TensorFlow reads it). So the
command-line entry points import TensorFlow, and list its devices, with the
process's stderr (file descriptor 2, what C++ writes to) pointed at a
temporary file. What was written there is shown if that fails, and nothing is
redirected with --verbose. Library users (`import tfopt`) are not touched.

LiteRT writes one more line, "INFO: Created TensorFlow Lite XNNPACK delegate
for CPU.", once per process, when its first interpreter applies XNNPACK. The
entry points open one interpreter on a four-number model while stderr is held
back, so that line is spent there.
"""

import contextlib
import os
import sys
import tempfile
from typing import Iterator, List, Tuple

VERBOSE_FLAG = "--verbose"


def take_verbose(argv: List[str]) -> Tuple[bool, List[str]]:
  """(whether --verbose was given, argv without it)."""
  rest = [arg for arg in argv if arg != VERBOSE_FLAG]
  return len(rest) != len(argv), rest


def import_tensorflow(verbose: bool) -> None:
  """Imports TensorFlow (and initializes its devices) quietly unless `verbose`.

  Afterwards TensorFlow's C++ log keeps its warnings and errors out too
  (TF_CPP_MIN_LOG_LEVEL=2, as the CLI always set), unless `verbose`, or the
  user set the variable themselves.
  """
  if verbose:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with _stderr_held_back():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name
    tf.config.list_physical_devices()
    _first_interpreter(tf)


def _first_interpreter(tf) -> None:
  """One LiteRT interpreter with XNNPACK on a tiny model (~0.1 s): LiteRT's
  once-per-process delegate INFO line is written here. Best effort: if it
  fails, that line shows later, nothing else changes."""
  try:
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    double = tf.function(lambda x: x * 2.0,
                         input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [double.get_concrete_function()], double)
    Interpreter(model_content=converter.convert()).allocate_tensors()
  except Exception:  # pylint: disable=broad-except
    pass


@contextlib.contextmanager
def _stderr_held_back() -> Iterator[None]:
  """File descriptor 2 goes to a temporary file inside; its text is written
  to the real stderr if the body raises."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      _restore(saved)
      held.seek(0)
      sys.stderr.write(held.read().decode("utf-8", "replace"))
      raise
    else:
      _restore(saved)


def _restore(saved: int) -> None:
  sys.stderr.flush()
  os.dup2(saved, 2)
  os.close(saved)
