"""Classify image files with a tfopt deploy bundle, as on a Raspberry Pi.

    python examples/edge_infer.py runs/mnist/deploy digit.png [more.png ...]

Needs only ai-edge-litert, numpy and Pillow: no TensorFlow, no tfopt.
Everything the model expects (image size, color mode, pixel scaling, the int8
input's scale and zero-point, class names) is read from the bundle's
model.json, so the same script serves every bundle tfopt writes.
"""

import argparse
import json
import os
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image


class BundleClassifier:
  """A deploy/ bundle loaded once, classifying images one at a time."""

  def __init__(self, bundle_dir: str, num_threads: int = 1):
    with open(os.path.join(bundle_dir, "model.json"), encoding="utf-8") as stream:
      self.spec = json.load(stream)
    self.interpreter = Interpreter(
        model_path=os.path.join(bundle_dir, self.spec["model"]),
        num_threads=num_threads)
    self.interpreter.allocate_tensors()
    self.input = self.interpreter.get_input_details()[0]
    self.output = self.interpreter.get_output_details()[0]
    self.class_names = self.spec["class_names"]

  def preprocess(self, path: str) -> np.ndarray:
    """Image file -> the model's input tensor (batch of one)."""
    prep = self.spec["preprocessing"]
    height, width = prep["image_size"]
    image = Image.open(path).convert("L" if prep["color_mode"] == "grayscale" else "RGB")
    if image.size != (width, height):
      image = image.resize((width, height), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
      pixels = pixels[..., np.newaxis]
    values = pixels * prep["pixel_scale"] + prep["pixel_offset"]
    spec = self.spec["input"]
    if spec["dtype"] in ("int8", "uint8", "int16"):
      info = np.iinfo(spec["dtype"])
      values = np.clip(np.round(values / spec["scale"] + spec["zero_point"]),
                       info.min, info.max)
    return values[np.newaxis].astype(spec["dtype"])

  def classify(self, path: str) -> dict:
    """{"file", "index", "label", "probability"} of the most likely class."""
    self.interpreter.set_tensor(self.input["index"], self.preprocess(path))
    self.interpreter.invoke()
    raw = self.interpreter.get_tensor(self.output["index"])[0].astype(np.float32)
    spec = self.spec["output"]
    logits = (raw - spec["zero_point"]) * spec["scale"] if spec["scale"] else raw
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    index = int(np.argmax(logits))
    return {"file": path, "index": index, "label": self.class_names[index],
            "probability": float(probabilities[index])}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("bundle", help="a tfopt deploy/ directory")
  parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
  parser.add_argument("--json", action="store_true", help="one JSON object per line")
  args = parser.parse_args(argv)
  try:
    classifier = BundleClassifier(args.bundle)
  except (OSError, ValueError, KeyError) as error:
    print(f"edge_infer: error: {args.bundle} is not a usable tfopt bundle ({error}).",
          file=sys.stderr)
    return 2
  status = 0
  for path in args.images:
    try:
      result = classifier.classify(path)
    except (OSError, ValueError) as error:
      print(f"edge_infer: error: cannot classify {path}: {error}", file=sys.stderr)
      status = 2
      continue
    print(json.dumps(result) if args.json else
          f"{path}: {result['label']} ({result['probability']:.1%})")
  return status


if __name__ == "__main__":
  sys.exit(main())
