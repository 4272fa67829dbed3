"""End to end: the CLI on a small MNIST slice, and bad input at the CLI."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from tfopt import pipeline
from tfopt.config import DataConfig, PipelineConfig
from tfopt.data import DataError


def run_cli(*args, env_data_dir=None):
  env = dict(os.environ)
  env.pop("TFOPT_DATA_DIR", None)
  if env_data_dir:
    env["TFOPT_DATA_DIR"] = env_data_dir
  return subprocess.run([sys.executable, "-m", "tfopt.pipeline", *args],
                        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=900)


@pytest.fixture(scope="module")
def quick_run(mnist_dir, tmp_path_factory):
  output_dir = tmp_path_factory.mktemp("run") / "out"
  result = run_cli("--quick", "--compare_scratch", f"--output_dir={output_dir}",
                   "--latency_runs=10", env_data_dir=mnist_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  return output_dir, result


def test_quick_run_writes_report_and_artifacts(quick_run):
  output_dir, result = quick_run
  report = json.loads((output_dir / "report.json").read_text())
  names = [row["name"] for row in report["models"]]
  assert names == ["baseline float32", "baseline int8", "scratch student int8",
                   "distilled student int8", "pruned student int8"]
  for row in report["models"]:
    for key in ("name", "path", "accuracy", "tflite_bytes", "gzip_bytes",
                "latency_us", "params", "nonzero_params", "macs"):
      assert key in row
    assert (output_dir / row["path"]).stat().st_size == row["tflite_bytes"]
    assert 0.9 < row["accuracy"] <= 1.0
    assert row["latency_us"] > 0
  rows = {row["name"]: row for row in report["models"]}
  assert rows["baseline int8"]["tflite_bytes"] < rows["baseline float32"]["tflite_bytes"]
  assert rows["pruned student int8"]["gzip_bytes"] < rows["distilled student int8"]["gzip_bytes"]
  assert rows["pruned student int8"]["nonzero_params"] < rows["distilled student int8"]["nonzero_params"]
  assert rows["pruned student int8"]["weight_sparsity"] > 0.5
  assert rows["baseline int8"]["macs"] == rows["baseline float32"]["macs"] > 5 * rows[
      "distilled student int8"]["macs"] > 0
  assert report["test_examples"] == 1000
  assert {"teacher", "distill", "scratch", "prune", "convert", "evaluate",
          "total"} <= set(report["stages"])
  assert report["config"]["data"]["max_train_examples"] == 5000
  assert report["versions"]["tensorflow"] and report["machine"]["cores"]
  assert all(entry["sparsity"] >= 0.69 for entry in report["layer_sparsity"])
  for name in ("report.md", "report.png", "teacher.keras", "student_pruned.keras",
               "manifest.json"):
    assert (output_dir / name).stat().st_size > 0
  assert "| pruned student int8 |" in result.stdout
  assert "[tfopt] prune:" in result.stdout


def test_manifest_lists_every_artifact_with_its_hash(quick_run):
  from tfopt.artifacts import sha256_of
  output_dir, _ = quick_run
  manifest = json.loads((output_dir / "manifest.json").read_text())
  listed = {entry["path"]: entry for entry in manifest["artifacts"]}
  on_disk = set(os.listdir(output_dir)) - {"manifest.json"}
  assert set(listed) == on_disk
  for name, entry in listed.items():
    assert entry["sha256"] == sha256_of(str(output_dir / name))


def test_rerun_into_its_own_output_dir_is_allowed(quick_run):
  output_dir, _ = quick_run
  pipeline.check_output_dir(str(output_dir))  # raises if refused


@pytest.mark.parametrize("flag, expected", [
    ("--dataset=imagenet", "dataset='imagenet'"),
    ("--target_sparsity=1.5", "target_sparsity=1.5"),
    ("--temperature=0", "temperature=0.0"),
    ("--distill_epochs=0", "epochs=0"),
    ("--student=resnet9000", "Unknown model builder 'resnet9000'"),
])
def test_bad_input_fails_fast_with_one_message(flag, expected, tmp_path):
  output_dir = tmp_path / "out"
  result = run_cli(flag, f"--output_dir={output_dir}", "--data_dir=/nonexistent")
  assert result.returncode != 0
  assert expected in result.stderr
  assert "Traceback" not in result.stderr
  assert not output_dir.exists()


def test_missing_data_fails_before_training(tmp_path):
  output_dir = tmp_path / "out"
  config = PipelineConfig.quick(
      data=DataConfig(data_dir=str(tmp_path / "none")), output_dir=str(output_dir))
  with pytest.raises(DataError, match="does not exist") as error:
    pipeline.run(config)
  assert "TFOPT_DATA_DIR" in str(error.value)
  assert not output_dir.exists()


def test_output_dir_with_foreign_files_is_refused(tmp_path):
  (tmp_path / "my_thesis.tex").write_text("precious")
  with pytest.raises(pipeline.OutputDirError, match="my_thesis.tex"):
    pipeline.run(PipelineConfig.quick(output_dir=str(tmp_path)))
  assert (tmp_path / "my_thesis.tex").read_text() == "precious"
  assert sorted(os.listdir(tmp_path)) == ["my_thesis.tex"]


def test_output_dir_with_a_corrupt_manifest_is_refused(tmp_path):
  from tfopt.artifacts import ManifestError
  (tmp_path / "manifest.json").write_text("{not json")
  with pytest.raises(ManifestError, match="not a readable tfopt manifest"):
    pipeline.check_output_dir(str(tmp_path))
