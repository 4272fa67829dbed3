"""The deploy bundle, and the edge script that runs it without TensorFlow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, write_idx_dataset
from tfopt import pipeline
from tfopt.config import DataConfig, recipe, TrainConfig
from tfopt.core.artifacts import sha256_of
from tfopt.litert import evaluate

# Runs edge_infer.py with tensorflow (and tfopt, which imports it) unimportable.
WITHOUT_TF = """
import runpy, sys
for name in ("tensorflow", "tf_keras", "keras", "tfopt"):
    sys.modules[name] = None
sys.argv = ["edge_infer.py"] + sys.argv[1:]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.fixture(scope="module")
def bundle_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("deploy")
  write_idx_dataset(root / "data" / "mnist", train=300, test=40)
  config = recipe.quick(
      data=DataConfig(data_dir=str(root / "data")),
      teacher=TrainConfig("student", epochs=2, batch_size=32),
      stages=("teacher", "prune"), output_dir=str(root / "out"))
  return root, pipeline.run(config)


def test_bundle_describes_the_final_int8_file(bundle_run):
  root, result = bundle_run
  deploy = root / "out" / "deploy"
  spec = json.loads((deploy / "model.json").read_text())
  row = result.row("pruned teacher int8")
  assert spec["source"]["row"] == row.name
  assert spec["sha256"] == sha256_of(str(deploy / "model.tflite"))
  assert (deploy / "model.tflite").read_bytes() == (root / "out" / row.path).read_bytes()
  assert spec["input"]["dtype"] == "int8" and spec["input"]["shape"] == [1, 28, 28, 1]
  assert spec["input"]["scale"] > 0
  assert spec["preprocessing"]["color_mode"] == "grayscale"
  assert spec["measured"]["accuracy"] == row.accuracy
  assert (deploy / "labels.txt").read_text().split("\n")[:-1] == spec["class_names"]
  assert len(spec["class_names"]) == 10
  # how the int8 file was quantized: the recipe the repair chose, as measured
  repair = result.int8_repair[row.name]
  assert spec["quantization"]["recipe"] == repair["chosen"]["choice"]
  assert spec["quantization"]["validation_agreement_with_float"] == repair["chosen"]["agreement"]
  assert repair["plain"]["choice"]["description"].startswith("per-channel weights")
  assert "## int8 files: where they part" in (root / "out" / "report.md").read_text()
  manifest = json.loads((root / "out" / "manifest.json").read_text())
  assert {"deploy/model.tflite", "deploy/model.json", "deploy/labels.txt"} <= {
      entry["path"] for entry in manifest["artifacts"]}
  pipeline.check_output_dir(str(root / "out"))  # its own files: a rerun is allowed


def test_edge_script_runs_without_tensorflow_and_matches_the_report(bundle_run, tmp_path):
  root, result = bundle_run
  from tfopt.data.datasets import load_dataset  # pylint: disable=g-import-not-at-top
  data = load_dataset(DataConfig(data_dir=str(root / "data")))
  paths = []
  for index, image in enumerate(data.x_test):
    path = tmp_path / f"{index}.png"
    Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(path)
    paths.append(str(path))
  script = str(REPO_ROOT / "examples" / "edge_infer.py")
  completed = subprocess.run(
      [sys.executable, "-c", WITHOUT_TF.format(script=script),
       str(root / "out" / "deploy"), "--json", *paths],
      capture_output=True, text=True, timeout=300,
      env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
  assert completed.returncode == 0, completed.stderr[-2000:]
  predicted = [json.loads(line)["index"] for line in completed.stdout.splitlines()]
  row = result.row("pruned teacher int8")
  np.testing.assert_array_equal(predicted, evaluate.top1(
      str(root / "out" / row.path), data.x_test))
  assert np.mean(np.array(predicted) == data.y_test) == pytest.approx(row.accuracy)


def test_edge_script_reports_a_bad_image(bundle_run, tmp_path):
  root, _ = bundle_run
  bad = tmp_path / "not_an_image.png"
  bad.write_text("hello")
  completed = subprocess.run(
      [sys.executable, str(REPO_ROOT / "examples" / "edge_infer.py"),
       str(root / "out" / "deploy"), str(bad)], capture_output=True, text=True,
      timeout=300)
  assert completed.returncode == 2
  assert "cannot classify" in completed.stderr and "not_an_image.png" in completed.stderr
