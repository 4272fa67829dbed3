"""Resumable runs: kept stages, redone stages, --force, kill -9, leftovers."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT, write_idx_dataset
from tfopt import pipeline
from tfopt.config import ConvertConfig, DataConfig, EvaluateConfig, PruneConfig, recipe
from tfopt.core.artifacts import TEMPORARY_PREFIX, sha256_of
from tfopt.run.resume import to_json

STAGES = ["teacher", "distill", "scratch", "prune", "convert", "evaluate"]


def quick_config(data_dir, output_dir, **overrides):
  return recipe.quick(data=DataConfig(data_dir=str(data_dir)),
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
  # Each training stage also keeps its TensorBoard event files.
  for name in ("teacher", "distill"):
    curves = [path for path in by_stage[name]["files"] if path.startswith("tensorboard/")]
    assert {path.split("/")[2] for path in curves} == {"train", "validation"}, name
  files = lambda name: [path for path in by_stage[name]["files"]
                        if not path.startswith("tensorboard/")]
  assert files("teacher") == ["teacher.keras"]
  assert set(files("distill")) == {"student_distilled.keras", "student_initial_weights.npz",
                                   "teacher_logits.npy"}
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


def test_a_changed_setting_redoes_that_stage_and_every_later_one(first_run, tmp_path,
                                                                capsys):
  data_dir, output_dir, first = copy_run(first_run, tmp_path)
  teacher_time = os.stat(output_dir / "teacher.keras").st_mtime_ns
  capsys.readouterr()
  changed = pipeline.run(quick_config(data_dir, output_dir,
                                      prune=PruneConfig(target_sparsity=0.5, epochs=1,
                                                        batch_size=64)))
  assert changed.resumed_stages == ["teacher", "distill", "scratch"]
  # distill stored the teacher's logits; the redone prune reads them back.
  assert "prune: the teacher's logits read back from teacher_logits.npy" in (
      capsys.readouterr().out)
  distill_files = next(stage["files"] for stage in manifest_of(output_dir)["stages"]
                       if stage["stage"] == "distill")
  assert "teacher_logits.npy" in distill_files
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
  saving = output_dir / "checkpoints" / "prune" / f"{TEMPORARY_PREFIX}fit1-epoch2_temp"
  saving.mkdir(parents=True)  # TensorFlow writes a checkpoint's shards here first
  (saving / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half a shard")
  pipeline.check_output_dir(str(output_dir))  # the leftovers are not foreign
  result = pipeline.run(quick_config(data_dir, output_dir))
  assert result.resumed_stages == STAGES
  assert not leftover.exists() and not saving.exists()


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


KILL_AFTER_EPOCH = """
import os, signal, sys
from tfopt.cli import compress as cli
from tfopt.training import epoch_checkpoints
stage, fit, epoch = sys.argv.pop(1).split(":")
save = epoch_checkpoints.FitCheckpoints.save
def save_then_die(self, checkpoint, saved):
  save(self, checkpoint, saved)
  if (self.stage.stage, self.number, saved) == (stage, int(fit), int(epoch)):
    os.kill(os.getpid(), signal.SIGKILL)
epoch_checkpoints.FitCheckpoints.save = save_then_die
cli.run_main()
"""


def keras_weights(path):
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  return keras.models.load_model(str(path), compile=False).get_weights()


@pytest.mark.parametrize("stages, kill_at, extra", [
    ("teacher,distill", "teacher:1:2", ["--teacher_epochs=3"]),
    pytest.param("teacher,slim", "slim:2:1",  # a stage of 3 fits, killed in the 2nd
                 ["--slim_prune_count=2", "--slim_finetune_epochs=2"], marks=pytest.mark.slow),
    pytest.param("teacher,search", "search:2:1",  # the search's 2nd fine-tune
                 ["--search_modes=int8"], marks=pytest.mark.slow),
])
def test_kill_9_inside_a_stage_resumes_at_that_epoch(tmp_path, stages, kill_at, extra):
  """SIGKILL right after an epoch's checkpoint: the rerun goes on from there and
  ends with the weights of a run that was never interrupted."""
  write_idx_dataset(tmp_path / "data" / "mnist", train=300, test=60)
  flags = ["--quick", f"--stages={stages}", f"--data_dir={tmp_path / 'data'}",
           "--teacher_epochs=2", "--latency_runs=2", "--nolatency_breakdown"] + extra

  def tfopt(output_dir, *before):
    return subprocess.run([sys.executable, *before, *flags, f"--output_dir={output_dir}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)

  killed = tfopt(tmp_path / "out", "-c", KILL_AFTER_EPOCH, kill_at)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  stage, fit, epoch = kill_at.split(":")
  checkpoints = os.listdir(tmp_path / "out" / "checkpoints" / stage)
  assert f"fit{fit}-epoch{epoch}.index" in checkpoints
  assert_manifest_is_true(tmp_path / "out")
  resumed = tfopt(tmp_path / "out", "-m", "tfopt.pipeline")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resume: {stage}: fit {fit} goes on after epoch {epoch}" in resumed.stdout
  assert f"stage {1 if stage == 'teacher' else 2} of 4: {stage} (0 min" in resumed.stdout
  assert not (tmp_path / "out" / "checkpoints").exists()  # gone with the stage
  assert not [entry for entry in manifest_of(tmp_path / "out")["artifacts"]
              if entry["path"].startswith("checkpoints/")]
  assert_manifest_is_true(tmp_path / "out")
  assert tfopt(tmp_path / "uninterrupted", "-m", "tfopt.pipeline").returncode == 0
  for name in os.listdir(tmp_path / "uninterrupted"):
    if name.endswith(".keras"):
      for resumed_weights, weights in zip(keras_weights(tmp_path / "out" / name),
                                          keras_weights(tmp_path / "uninterrupted" / name)):
        np.testing.assert_allclose(resumed_weights, weights, atol=1e-5, err_msg=name)


def test_checkpoints_of_other_settings_are_not_resumed(tmp_path):
  """A changed setting of the killed stage: its checkpoints are deleted, not used."""
  write_idx_dataset(tmp_path / "data" / "mnist", train=300, test=60)
  flags = ["--quick", "--stages=teacher", f"--data_dir={tmp_path / 'data'}",
           "--latency_runs=2", "--nolatency_breakdown", f"--output_dir={tmp_path / 'out'}"]
  killed = subprocess.run([sys.executable, "-c", KILL_AFTER_EPOCH, "teacher:1:1",
                           *flags, "--teacher_epochs=2"], cwd=REPO_ROOT, timeout=600,
                          capture_output=True, text=True)
  assert killed.returncode == -signal.SIGKILL
  rerun = subprocess.run([sys.executable, "-m", "tfopt.pipeline", *flags,
                          "--teacher_epochs=3"], cwd=REPO_ROOT, timeout=600,
                         capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "goes on after epoch" not in rerun.stdout
  assert "checkpoints/teacher/fit1-epoch1.index" in rerun.stdout  # named as removed
  assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_second_run_into_a_held_output_dir_stops_at_once(first_run, tmp_path):
  from tfopt.run import preflight  # pylint: disable=g-import-not-at-top
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


def test_a_fit_reports_to_the_checkpoints_and_clock_it_is_given(dataset, tmp_path):
  """No module state: each fit writes to the FitContext passed to it, and a fit
  given none writes nothing (two stages' contexts side by side stay apart)."""
  from tfopt.core import progress  # pylint: disable=g-import-not-at-top
  from tfopt.keras_io import models
  from tfopt.training import epoch_checkpoints, train
  from tfopt.core.artifacts import Manifest  # pylint: disable=g-import-not-at-top
  from tfopt.config import TrainConfig  # pylint: disable=g-import-not-at-top
  manifest = Manifest(str(tmp_path))
  clock = progress.Progress(["a", "b"], {"a": 2, "b": 1})
  clock.stage_started("a", 1)
  contexts = {stage: train.FitContext(epoch_checkpoints.StageCheckpoints(
      manifest, stage, f"key-{stage}", seed=0, log=lambda line: None), clock)
              for stage in ("a", "b")}
  config = TrainConfig("student", epochs=2, batch_size=64)
  model = models.build_model("student", dataset.input_shape, 10)
  train.train_classifier(model, dataset, config, verbose=0, fits=contexts["a"])
  train.train_classifier(model, dataset, dataclasses.replace(config, epochs=1), verbose=0,
                         fits=contexts["b"])
  train.train_classifier(model, dataset, config, verbose=0)  # no context: nothing written
  listed = sorted(os.listdir(tmp_path / "checkpoints" / "a"))
  assert [name for name in listed if name.endswith(".index")] == ["fit1-epoch2.index"]
  assert sorted(name for name in os.listdir(tmp_path / "checkpoints" / "b")
                if name.endswith(".index")) == ["fit1-epoch1.index"]
  assert clock.epochs_done == {"a": 3} and clock.epoch_seconds > 0
  assert not hasattr(epoch_checkpoints, "active") and not hasattr(progress, "active")
