"""tfopt: compress Keras image classifiers into small, fast .tflite files.

Importing the package is cheap; TensorFlow is loaded by the submodules that
need it (``tfopt.models``, ``tfopt.prune``, ...).
"""

__version__ = "0.2.0"
