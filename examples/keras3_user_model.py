"""Trains and saves a plain Keras 3 classifier, as a user would.

    python examples/keras3_user_model.py --data_dir ../shared/data --out my_model.keras
    python -m tfopt.pipeline --model my_model.keras --dataset mnist --data_dir ../shared/data

    # or on an image folder (see make_image_folder.py), then compress it there:
    python examples/keras3_user_model.py --folder digits_food11 --out food_model.keras
    python -m tfopt.pipeline --model food_model.keras --dataset folder \
        --data_dir digits_food11 --labels_file digits_food11/labels.txt

It uses `import keras` (Keras 3), feeds raw 0..255 pixels to a Rescaling
layer, and ends in softmax: the usual shape of a user's model, and the case
tfopt's --model has to carry over to Keras 2 for tfmot. --arch picks it:

  cnn        conv/BN/ReLU/pool blocks, Flatten, Dense, Dropout (default)
  resnet     a ResNet-style net: stem, 5 basic blocks (residual Add), two 1x1
             projection shortcuts, 13 convs
  mobilenet_v2  the transfer-learning guide's model: RandomFlip, Rescaling
             to [-1, 1], keras.applications.MobileNetV2 (weights=None here:
             no downloads) nested as one layer, pooling, Dropout, Dense
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # Keras 3, not tf_keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from tfopt.data.datasets import read_idx  # pylint: disable=g-import-not-at-top
from tfopt.data.image_folder import load_image_folder  # pylint: disable=g-import-not-at-top


def mnist(data_dir: str):
  folder = os.path.join(data_dir, "mnist")
  folder = folder if os.path.isdir(folder) else data_dir
  images = read_idx(os.path.join(folder, "train-images-idx3-ubyte.gz"))[..., None]
  labels = read_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"))
  return images, labels, 10


def image_folder(path: str):
  """The training split of a folder (labels.txt beside it names the classes)."""
  labels_file = os.path.join(path, "labels.txt")
  folder = load_image_folder(path, labels_file if os.path.isfile(labels_file) else None)
  train = folder.images["train"]  # image files, decoded here as uint8 pixels
  return train.pixels(np.arange(len(train))), folder.labels["train"], len(folder.class_names)


def _conv_bn(x, filters, strides=1, kernel_size=3, relu=True):
  x = keras.layers.Conv2D(filters, kernel_size, strides, padding="same", use_bias=False)(x)
  x = keras.layers.BatchNormalization(momentum=0.9)(x)
  return keras.layers.ReLU()(x) if relu else x


def build_resnet(input_shape, classes) -> keras.Model:
  """Stem + 5 basic blocks (32, 64/2, 64, 128/2, 128): 13 convs, two projections."""
  inputs = keras.Input(input_shape)
  x = _conv_bn(keras.layers.Rescaling(1 / 255.0)(inputs), 32)
  for filters, strides in ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1)):
    shortcut = x
    y = _conv_bn(x, filters, strides)
    y = _conv_bn(y, filters, relu=False)
    if strides != 1 or shortcut.shape[-1] != filters:
      shortcut = _conv_bn(x, filters, strides, kernel_size=1, relu=False)
    x = keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))
  x = keras.layers.GlobalAveragePooling2D()(x)
  outputs = keras.layers.Dense(classes, activation="softmax")(x)
  return keras.Model(inputs, outputs, name="user_resnet")


def build_transfer(input_shape, classes) -> keras.Model:
  """A MobileNetV2 backbone nested as one layer, as the transfer-learning guide does."""
  base = keras.applications.MobileNetV2(include_top=False, weights=None,
                                        input_shape=input_shape, alpha=0.5)
  # weights=None: no ImageNet download here, so the backbone trains from
  # scratch; with Keras' BN momentum of 0.999 a short run would leave its
  # moving statistics near their initial values (poor inference accuracy).
  for layer in base.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = 0.9
  inputs = keras.Input(input_shape)
  x = keras.layers.RandomFlip("horizontal")(inputs)
  x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
  x = base(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(0.2)(x)
  outputs = keras.layers.Dense(classes)(x)
  return keras.Model(inputs, outputs, name="user_transfer_mobilenet_v2")


def build(input_shape, classes) -> keras.Model:
  """Conv / BN / ReLU / pooling / Dense / Dropout behind a Rescaling layer."""
  inputs = keras.Input(input_shape)
  x = keras.layers.Rescaling(1 / 255.0)(inputs)
  for filters in (32, 64):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(128, activation="relu")(x)
  x = keras.layers.Dropout(0.3)(x)
  outputs = keras.layers.Dense(classes, activation="softmax")(x)
  return keras.Model(inputs, outputs, name="user_cnn")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", help="holds the MNIST IDX .gz files")
  parser.add_argument("--folder", help="an image folder to train on instead")
  parser.add_argument("--out", default="my_model.keras")
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--arch", choices=sorted(BUILDERS), default="cnn")
  args = parser.parse_args()
  if bool(args.data_dir) == bool(args.folder):
    parser.error("give --data_dir (MNIST) or --folder (an image folder)")
  images, labels, classes = mnist(args.data_dir) if args.data_dir else image_folder(args.folder)
  keras.utils.set_random_seed(0)
  order = np.random.default_rng(0).permutation(len(images))  # folders come sorted by class
  images, labels = images[order], labels[order]
  model = BUILDERS[args.arch](images.shape[1:], classes)
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=args.arch == "mobilenet_v2")
  model.compile("adam", loss, metrics=["accuracy"])
  model.fit(images.astype(np.float32), labels, batch_size=128, epochs=args.epochs,
            validation_split=0.1, verbose=2)
  model.save(args.out)
  print(f"saved {args.out} (Keras {keras.__version__})")


BUILDERS = {"cnn": build, "resnet": build_resnet, "mobilenet_v2": build_transfer}

if __name__ == "__main__":
  main()
