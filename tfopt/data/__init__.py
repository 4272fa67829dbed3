"""Data: the built-in data sets and the user's image folders.

    datasets      MNIST / Fashion-MNIST / CIFAR-10 / a folder -> Dataset
    image_folder  a folder of class subfolders, read or streamed
    image_files   streaming image files as tf.data (decode, resize, augment)

`from tfopt.data import load_dataset, read_idx` reads from tfopt.data.datasets.
"""

# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.data.datasets import *
from tfopt.data.datasets import __all__
