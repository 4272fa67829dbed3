"""Writes MNIST digits as an image folder of JPEGs, to try tfopt on folders.

    python examples/make_image_folder.py --data_dir ../shared/data --out digits_food11
    python -m tfopt.pipeline --dataset folder --data_dir digits_food11 \
        --labels_file digits_food11/labels.txt --student mobilenet_v1

--layout food11 (default) writes the Food-11 data set's layout: flat
`<label>_<index>.jpg` files in training/, validation/ and evaluation/, and a
labels.txt; --layout classes writes one subfolder per class instead. With
--rgb (default) each digit gets random foreground and background colors, so
the images are real three-channel JPEGs.
"""

import argparse
import os

import numpy as np
from PIL import Image

from tfopt.data.datasets import read_idx

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def colorize(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A gray digit as RGB: a random bright color on a random dark one."""
  alpha = digit[..., None].astype(np.float32) / 255.0
  background = rng.integers(0, 96, size=3)
  foreground = rng.integers(128, 256, size=3)
  return (background * (1 - alpha) + foreground * alpha).astype(np.uint8)


def write_split(out: str, split: str, images, labels, layout: str, size: int,
                rgb: bool, rng: np.random.Generator):
  for index, (digit, label) in enumerate(zip(images, labels)):
    pixels = colorize(digit, rng) if rgb else digit
    image = Image.fromarray(pixels).resize((size, size), Image.BILINEAR)
    if layout == "food11":
      path = os.path.join(out, split, f"{label}_{index}.jpg")
    else:
      path = os.path.join(out, split, NAMES[label], f"{index}.jpg")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, quality=90)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="holds the MNIST IDX .gz files")
  parser.add_argument("--out", required=True)
  parser.add_argument("--layout", choices=("food11", "classes"), default="food11")
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--rgb", action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument("--train", type=int, default=6000)
  parser.add_argument("--val", type=int, default=1000)
  parser.add_argument("--test", type=int, default=2000)
  args = parser.parse_args()
  if os.path.exists(args.out):
    parser.error(f"{args.out} exists; give a new --out folder.")
  folder = os.path.join(args.data_dir, "mnist")
  folder = folder if os.path.isdir(folder) else args.data_dir
  train_x = read_idx(os.path.join(folder, "train-images-idx3-ubyte.gz"))
  train_y = read_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"))
  test_x = read_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"))
  test_y = read_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))
  rng = np.random.default_rng(0)
  splits = {"training": (train_x[:args.train], train_y[:args.train]),
            "validation": (train_x[-args.val:], train_y[-args.val:]),
            "evaluation": (test_x[:args.test], test_y[:args.test])}
  for split, (images, labels) in splits.items():
    write_split(args.out, split, images, labels, args.layout, args.size, args.rgb, rng)
  with open(os.path.join(args.out, "labels.txt"), "w", encoding="utf-8") as stream:
    stream.write("\n".join(NAMES) + "\n")
  print(f"wrote {sum(len(images) for images, _ in splits.values())} images to {args.out}")


if __name__ == "__main__":
  main()
