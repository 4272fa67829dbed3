"""Resumable runs: kept stages, redone stages, --force, kill -9, leftovers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT, write_idx_dataset
from tfopt import pipeline
from tfopt.artifacts import TEMPORARY_PREFIX, sha256_of
from tfopt.config import (ConvertConfig, DataConfig, EvaluateConfig, PipelineConfig,
                          PruneConfig)
from tfopt.resume import to_json

STAGES = ["teacher", "distill", "scratch", "prune", "convert", "evaluate"]


def quick_config(data_dir, output_dir, **overrides):
  return PipelineConfig.quick(data=DataConfig(data_dir=str(data_dir)),
                              stages=("teacher", "distill", "prune"),
                              compare_scratch=True, output_dir=str(output_dir),
                              convert=ConvertConfig(representative_examples=20),
                              evaluate=EvaluateConfig(latency_warmup=1, latency_runs=2,
                                                      latency_breakdown=False),
                              **overrides)


def manifest_of(output_dir):
  return json.loads((output_dir / "manifest.json").read_text())


def assert_manifest_is_true(output_dir):
  """Every listed file exists with its sha256; every finished stage's files are listed."""
  manifest = manifest_of(output_dir)
  listed = {entry["path"]: entry["sha256"] for entry in manifest["artifacts"]}
  for name, digest in listed.items():
    assert sha256_of(str(output_dir / name)) == digest, name
  for stage in manifest["stages"]:
    assert set(stage["files"]) <= set(listed), stage["stage"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("resume")
  write_idx_dataset(root / "data" / "mnist", train=300, test=60)
  result = pipeline.run(quick_config(root / "data", root / "out"))
  return root, result


def copy_run(first_run, tmp_path):
  root, result = first_run
  shutil.copytree(root / "out", tmp_path / "out")
  return root / "data", tmp_path / "out", result


def test_a_finished_run_records_each_stage_with_its_files(first_run):
  root, result = first_run
  manifest = manifest_of(root / "out")
  assert [stage["stage"] for stage in manifest["stages"]] == STAGES
  by_stage = {stage["stage"]: stage for stage in manifest["stages"]}
  assert by_stage["teacher"]["files"] == ["teacher.keras"]
  assert set(by_stage["distill"]["files"]) == {"student_distilled.keras",
                                                "student_initial_weights.npz"}
  assert by_stage["evaluate"]["output"]["rows"]
  assert len({stage["key"] for stage in manifest["stages"]}) == len(STAGES)
  assert result.resumed_stages == []
  assert_manifest_is_true(root / "out")


def test_same_command_again_keeps_every_stage(first_run, tmp_path):
  data_dir, output_dir, first = copy_run(first_run, tmp_path)
  model_time = os.stat(output_dir / "student_pruned.keras").st_mtime_ns
  again = pipeline.run(quick_config(data_dir, output_dir))
  assert again.resumed_stages == STAGES
  assert again.models == first.models  # the same measured rows, not re-measured
  assert again.layer_sparsity == to_json(first.layer_sparsity)
  assert os.stat(output_dir / "student_pruned.keras").st_mtime_ns == model_time
  assert "(kept from an earlier run, files verified)" in (
      output_dir / "report.md").read_text()
  assert_manifest_is_true(output_dir)


def test_a_changed_setting_redoes_that_stage_and_every_later_one(first_run, tmp_path):
  data_dir, output_dir, first = copy_run(first_run, tmp_path)
  teacher_time = os.stat(output_dir / "teacher.keras").st_mtime_ns
  changed = pipeline.run(quick_config(data_dir, output_dir,
                                      prune=PruneConfig(target_sparsity=0.5, epochs=1,
                                                        batch_size=64)))
  assert changed.resumed_stages == ["teacher", "distill", "scratch"]
  assert os.stat(output_dir / "teacher.keras").st_mtime_ns == teacher_time
  assert abs(changed.row("pruned student int8").weight_sparsity - 0.5) < 0.02
  assert abs(first.row("pruned student int8").weight_sparsity - 0.7) < 0.02
  # Rows of kept models are measured again (their files were converted again).
  assert changed.row("distilled student int8").accuracy == pytest.approx(
      first.row("distilled student int8").accuracy)
  assert_manifest_is_true(output_dir)


def test_a_changed_artifact_redoes_its_stage(first_run, tmp_path):
  data_dir, output_dir, _ = copy_run(first_run, tmp_path)
  with open(output_dir / "student_distilled.keras", "r+b") as stream:
    stream.truncate(100)  # e.g. a disk error
  result = pipeline.run(quick_config(data_dir, output_dir))
  assert result.resumed_stages == ["teacher"]
  assert_manifest_is_true(output_dir)


def test_force_redoes_everything(first_run, tmp_path):
  data_dir, output_dir, _ = copy_run(first_run, tmp_path)
  result = pipeline.run(quick_config(data_dir, output_dir), force=True)
  assert result.resumed_stages == []
  assert [stage["stage"] for stage in manifest_of(output_dir)["stages"]] == STAGES


def test_other_data_redoes_everything(first_run, tmp_path):
  _, output_dir, _ = copy_run(first_run, tmp_path)
  write_idx_dataset(tmp_path / "data2" / "mnist", train=300, test=60, seed=5)
  result = pipeline.run(quick_config(tmp_path / "data2", output_dir))
  assert result.resumed_stages == []


def test_half_written_files_of_a_killed_run_are_removed(first_run, tmp_path):
  data_dir, output_dir, _ = copy_run(first_run, tmp_path)
  leftover = output_dir / f"{TEMPORARY_PREFIX}abc123.keras"
  leftover.write_bytes(b"half a model")
  pipeline.check_output_dir(str(output_dir))  # the leftover is not foreign
  result = pipeline.run(quick_config(data_dir, output_dir))
  assert result.resumed_stages == STAGES
  assert not leftover.exists()


def test_kill_9_mid_run_then_resume(tmp_path):
  """SIGKILL after distill finished, in the middle of the next stage."""
  write_idx_dataset(tmp_path / "data" / "mnist", train=300, test=60)
  output_dir = tmp_path / "out"
  command = [sys.executable, "-m", "tfopt.pipeline", "--quick", "--compare_scratch",
             "--stages=teacher,distill,prune", f"--data_dir={tmp_path / 'data'}",
             f"--output_dir={output_dir}", "--latency_runs=2", "--nolatency_breakdown"]
  process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  try:
    while time.time() < deadline and process.poll() is None:
      manifest = (manifest_of(output_dir) if (output_dir / "manifest.json").exists()
                  else {"stages": []})
      if [stage["stage"] for stage in manifest["stages"]][-1:] == ["distill"]:
        break
      time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
  finally:
    process.wait()
  assert process.returncode == -signal.SIGKILL
  finished = [stage["stage"] for stage in manifest_of(output_dir)["stages"]]
  assert finished[:2] == ["teacher", "distill"] and "evaluate" not in finished
  assert_manifest_is_true(output_dir)
  resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  report = json.loads((output_dir / "report.json").read_text())
  assert report["resumed_stages"][:2] == ["teacher", "distill"]
  assert [stage["stage"] for stage in manifest_of(output_dir)["stages"]] == STAGES
  assert_manifest_is_true(output_dir)
  assert not [name for name in os.listdir(output_dir) if name.startswith(TEMPORARY_PREFIX)]


def test_a_second_run_into_a_held_output_dir_stops_at_once(first_run, tmp_path):
  from tfopt import preflight  # pylint: disable=g-import-not-at-top
  data_dir, output_dir, _ = copy_run(first_run, tmp_path)
  before = {entry["path"]: entry["sha256"] for entry in manifest_of(output_dir)["artifacts"]}
  with preflight.output_dir_lock(str(output_dir)):  # this process plays the first run
    command = [sys.executable, "-m", "tfopt.pipeline", "--quick", "--compare_scratch",
               "--stages=teacher,distill,prune", f"--data_dir={data_dir}",
               f"--output_dir={output_dir}", "--force"]
    second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 2
    assert f"Another tfopt run (process {os.getpid()} on" in second.stderr
    assert "Traceback" not in second.stderr
    with pytest.raises(pipeline.OutputDirError, match="Another tfopt run"):
      pipeline.run(quick_config(data_dir, output_dir), force=True)
  # Nothing was touched; released, the directory takes a run again.
  assert {entry["path"]: entry["sha256"]
          for entry in manifest_of(output_dir)["artifacts"]} == before
  assert_manifest_is_true(output_dir)
  assert pipeline.run(quick_config(data_dir, output_dir)).resumed_stages == STAGES
  assert not (output_dir / ".tfopt.lock.owner").exists()
