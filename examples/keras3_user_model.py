"""Trains and saves a plain Keras 3 MNIST classifier, as a user would.

    python examples/keras3_user_model.py --data_dir ../shared/data --out my_model.keras
    python -m tfopt.pipeline --model my_model.keras --dataset mnist --data_dir ../shared/data

It uses `import keras` (Keras 3), feeds raw 0..255 pixels to a Rescaling
layer, and ends in softmax: the usual shape of a user's model, and the case
tfopt's --model has to carry over to Keras 2 for tfmot.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # Keras 3, not tf_keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from tfopt.data import read_idx  # pylint: disable=g-import-not-at-top


def build(input_shape=(28, 28, 1), classes=10) -> keras.Model:
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
  parser.add_argument("--data_dir", required=True, help="holds the MNIST IDX .gz files")
  parser.add_argument("--out", default="my_model.keras")
  parser.add_argument("--epochs", type=int, default=3)
  args = parser.parse_args()
  folder = os.path.join(args.data_dir, "mnist")
  folder = folder if os.path.isdir(folder) else args.data_dir
  images = read_idx(os.path.join(folder, "train-images-idx3-ubyte.gz"))[..., None]
  labels = read_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"))
  keras.utils.set_random_seed(0)
  model = build()
  model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
  model.fit(images.astype(np.float32), labels, batch_size=128, epochs=args.epochs,
            validation_split=0.1, verbose=2)
  model.save(args.out)
  print(f"saved {args.out} (Keras {keras.__version__})")


if __name__ == "__main__":
  main()
