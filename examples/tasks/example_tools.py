"""What the task examples share: MNIST digits, and their command line.

MNIST is read from the original IDX files in $TFOPT_DATA_DIR (the folder
holding mnist/ or the IDX files), else ../shared/data; $TASK_EXAMPLES caps
how many images each split takes (a quick look, or the test suite).

Each example module defines build_model() and, as a task file does, train,
val, test, loss, metrics (and maybe score); `main` trains the model with
them, saves it, and (without --train_only) compresses it with tfopt.compress.
"""

import argparse
import json
import os

import numpy as np

from tfopt.data.datasets import read_idx

_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def data_dir() -> str:
  folder = os.environ.get("TFOPT_DATA_DIR") or os.path.join("..", "shared", "data")
  nested = os.path.join(folder, "mnist")
  return nested if os.path.isdir(nested) else folder


def digits(split: str, limit: int = None):
  """(uint8 images N x 28 x 28, int labels N) of the train or test split."""
  images_file, labels_file = _FILES[split]
  images = read_idx(os.path.join(data_dir(), images_file))
  labels = read_idx(os.path.join(data_dir(), labels_file)).astype(np.int64)
  limit = limit or int(os.environ.get("TASK_EXAMPLES", "0")) or len(images)
  return images[:limit], labels[:limit]


def split_off(count: int, *arrays):
  """(the first len - count of each array, the last count of each)."""
  return tuple(array[:-count] for array in arrays), tuple(array[-count:] for array in arrays)


def train_model(example, epochs: int, learning_rate: float):
  """The example's model, trained on its task as a Keras user trains one."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  model = example.build_model()
  model.compile(keras.optimizers.Adam(learning_rate), loss=example.loss,
                metrics=example.metrics)
  model.fit(example.train(), validation_data=example.val(), epochs=epochs, verbose=2)
  return model


def main(example, name: str, epochs: int, learning_rate: float, argv=None):
  """Trains and saves the example's model; then, unless --train_only,
  compresses it with tfopt.compress on the same task and returns the report."""
  parser = argparse.ArgumentParser(description=example.__doc__.splitlines()[0])
  parser.add_argument("--model", default=f"{name}.keras", help="where the model is saved")
  parser.add_argument("--out", default=f"runs/{name}", help="tfopt's output directory")
  parser.add_argument("--epochs", type=int, default=epochs)
  parser.add_argument("--stages", default="slim,prune", help="tfopt's task stages, in order")
  parser.add_argument("--finetune_epochs", type=int, default=2,
                      help="epochs of each slim step's and of prune's fine-tuning")
  parser.add_argument("--target_sparsity", type=float, default=0.5, help="prune's target")
  parser.add_argument("--settings", type=json.loads, default={},
                      help='more stage settings as JSON, e.g. \'{"slim": {"rate": 0.3}}\'')
  parser.add_argument("--reuse", action="store_true",
                      help="compress the model at --model if it exists, not a new one")
  parser.add_argument("--train_only", action="store_true")
  args = parser.parse_args(argv)
  if args.reuse and os.path.exists(args.model):
    import keras  # pylint: disable=g-import-not-at-top
    model = keras.models.load_model(args.model)
  else:
    model = train_model(example, args.epochs, learning_rate)
    model.save(args.model)
  if args.train_only:
    return None
  import tfopt  # pylint: disable=g-import-not-at-top
  scoring = {key: getattr(example, key) for key in ("score", "score_name", "higher_is_better")
             if hasattr(example, key)}
  settings = {"slim": {"finetune_epochs": args.finetune_epochs},
              "prune": {"epochs": args.finetune_epochs, "target_sparsity": args.target_sparsity}}
  for stage, values in args.settings.items():
    settings[stage] = dict(settings.get(stage, {}), **values)
  return tfopt.compress(model, train=example.train(), val=example.val(), test=example.test(),
                        loss=example.loss, metrics=example.metrics,
                        stages=args.stages.split(","), settings=settings,
                        output_dir=args.out, **scoring)
