"""The base of every error tfopt raises for bad input or an unmet check.

The CLI turns a TfoptError into one clear message and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

import argparse
import sys

__all__ = ["TfoptError", "ModelLoadError", "ImageFolderError", "OneLineArgumentParser"]


class TfoptError(Exception):
  """Bad input or an unmet check, with a message that says what to do."""


class ModelLoadError(TfoptError, ValueError):
  """A model file cannot be loaded (or carried over to Keras 2) as asked."""


class ImageFolderError(TfoptError, ValueError):
  """An image folder cannot be read as a labelled data set."""


class OneLineArgumentParser(argparse.ArgumentParser):
  """argparse for `tfopt measure` / `tfopt inspect`: a bad argument is one
  `tfopt: error:` line and exit 2, as for `tfopt compress`, not the usage."""

  def error(self, message: str):
    sys.stderr.write(f"tfopt: error: {self.prog}: {message}. See {self.prog} --help.\n")
    sys.exit(2)
