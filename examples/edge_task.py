"""Run a task's deploy bundle (any outputs: boxes, masks, scores) on inputs
saved as .npy, as on a Raspberry Pi.

    python examples/edge_task.py runs/detector/deploy inputs.npy --out outputs.npz

Needs only ai-edge-litert and numpy: no TensorFlow, no tfopt. inputs.npy
holds float inputs as the Keras model takes them (batch first); the bundle's
model.json gives the int8 input's scale and zero-point and, for every
output, its name, scale and zero-point, so each output is written to the
.npz under its name, as float values (dequantized), and summarized on stdout.
"""

import argparse
import json
import os
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter


class TaskBundle:
  """A task bundle (model.json format 2) loaded once, run one input at a time."""

  def __init__(self, bundle_dir: str, num_threads: int = 1):
    with open(os.path.join(bundle_dir, "model.json"), encoding="utf-8") as stream:
      self.spec = json.load(stream)
    if not self.spec.get("format", "").startswith("tfopt deploy bundle 2"):
      raise ValueError(f"{bundle_dir} is not a task bundle; classifier bundles run with "
                       "examples/edge_infer.py.")
    self.interpreter = Interpreter(model_path=os.path.join(bundle_dir, self.spec["model"]),
                                   num_threads=num_threads)
    self.interpreter.allocate_tensors()

  def run(self, example: np.ndarray) -> dict:
    """{output name: float array} for one input (no batch dimension)."""
    spec = self.spec["inputs"][0]
    values = example[np.newaxis].astype(np.float32)
    if spec["dtype"] in ("int8", "uint8", "int16"):
      info = np.iinfo(spec["dtype"])
      values = np.clip(np.round(values / spec["scale"] + spec["zero_point"]),
                       info.min, info.max)
    self.interpreter.set_tensor(spec["index"], values.astype(spec["dtype"]))
    # A recurrent model's LSTM states are variables that outlive an invoke;
    # each example starts from zero states (a no-op for other files).
    self.interpreter.reset_all_variables()
    self.interpreter.invoke()
    outputs = {}
    for output in self.spec["outputs"]:
      raw = self.interpreter.get_tensor(output["index"])[0].astype(np.float32)
      outputs[output["name"]] = ((raw - output["zero_point"]) * output["scale"]
                                 if output["scale"] else raw)
    return outputs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("bundle", help="the deploy/ folder of a tfopt task run")
  parser.add_argument("inputs", help=".npy of float inputs, batch first")
  parser.add_argument("--out", help="write every output, by name, to this .npz")
  args = parser.parse_args(argv)
  try:
    bundle = TaskBundle(args.bundle)
    inputs = np.load(args.inputs, allow_pickle=False)
    results = [bundle.run(example) for example in inputs]
  except (OSError, ValueError, KeyError, RuntimeError) as error:
    print(f"edge_task: error: {error}", file=sys.stderr)
    return 2
  joined = {name: np.stack([result[name] for result in results]) for name in results[0]}
  for name, values in joined.items():
    print(f"{name}: shape {values.shape}, mean {values.mean():.4f}, "
          f"range {values.min():.3f}..{values.max():.3f}")
  if args.out:
    np.savez(args.out, **joined)
  return 0


if __name__ == "__main__":
  sys.exit(main())
