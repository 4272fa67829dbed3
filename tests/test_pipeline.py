"""End to end: the CLI on a small MNIST slice, and bad input at the CLI."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, write_idx_dataset
from tfopt import pipeline
from tfopt.config import recipe
from tfopt.config import (AnalysisConfig, BinaryConfig, ClusterConfig, ConvertConfig, DataConfig,
                          LowRankConfig, QatConfig, SlimConfig, TrainConfig)
from tfopt.core.errors import TfoptError
from tfopt.data.datasets import DataError
from tfopt.keras_io.macs import count_macs
from tfopt.run import preflight


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
                   "--stages=teacher,distill,slim,prune", "--latency_runs=10",
                   env_data_dir=mnist_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  return output_dir, result


def test_every_training_stage_writes_tensorboard_curves(quick_run):
  """tensorboard/<stage>: epoch loss and accuracy per split; prune's sparsity ramp."""
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  output_dir, result = quick_run
  board = output_dir / "tensorboard"

  def tags(folder):
    events = EventAccumulator(str(board / folder))
    events.Reload()
    return {tag: [(event.step, float(tf.make_ndarray(event.tensor_proto)))
                  for event in events.Tensors(tag)] for tag in events.Tags()["tensors"]}

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  report = json.loads((output_dir / "report.json").read_text())
  for stage in ("teacher", "distill", "scratch", "slim", "slim-fit2", "prune"):
    train, validation = tags(f"{stage}/train"), tags(f"{stage}/validation")
    assert "epoch_loss" in train and "epoch_accuracy" in validation, stage
    assert len(train["epoch_loss"]) >= 1 and all(
        loss > 0 for _, loss in train["epoch_loss"]), stage
  assert [step for step, _ in tags("teacher/train")["epoch_loss"]] == list(
      range(report["config"]["teacher"]["epochs"]))
  ramp = tags("prune/metrics")
  kernels = [tag for tag in ramp if tag.endswith("/sparsity")]
  assert len(kernels) == 4  # the student's 3 convs and its Dense
  for tag in kernels:
    assert ramp[tag][0][1] == 0.0 and abs(ramp[tag][-1][1] - 0.7) < 0.01  # 0 -> target
  manifest = json.loads((output_dir / "manifest.json").read_text())
  listed = {entry["path"] for entry in manifest["artifacts"]}
  written = {str(path.relative_to(output_dir)) for path in board.rglob("*") if path.is_file()}
  assert written and written <= listed  # tfopt's files: a rerun keeps them
  assert f"tensorboard --logdir {output_dir}/tensorboard" in result.stdout


def test_quick_run_writes_report_and_artifacts(quick_run):
  output_dir, result = quick_run
  report = json.loads((output_dir / "report.json").read_text())
  names = [row["name"] for row in report["models"]]
  assert names == ["baseline float32", "baseline int8", "distilled student int8",
                   "scratch student int8", "slimmed student int8",
                   "slimmed, pruned student int8"]
  for row in report["models"]:
    for key in ("name", "path", "accuracy", "tflite_bytes", "gzip_bytes",
                "latency_us", "params", "nonzero_params", "macs"):
      assert key in row
    assert (output_dir / row["path"]).stat().st_size == row["tflite_bytes"]
    assert 0.8 < row["accuracy"] <= 1.0  # --quick: 5k images, 1-2 epochs
    assert row["latency_us"] > 0
  rows = {row["name"]: row for row in report["models"]}
  distilled, slimmed = rows["distilled student int8"], rows["slimmed student int8"]
  pruned = rows["slimmed, pruned student int8"]
  assert rows["baseline int8"]["tflite_bytes"] < rows["baseline float32"]["tflite_bytes"]
  # Slimming shrinks the network itself: the file, the params and the MACs.
  assert slimmed["tflite_bytes"] < 0.7 * distilled["tflite_bytes"]
  assert slimmed["params"] < 0.6 * distilled["params"]
  assert slimmed["macs"] < 0.6 * distilled["macs"]
  # Pruning then zeros weights of the slimmed student: smaller gzip only.
  assert pruned["params"] == slimmed["params"]
  assert pruned["gzip_bytes"] < slimmed["gzip_bytes"]
  assert pruned["nonzero_params"] < 0.4 * slimmed["params"]
  assert pruned["weight_sparsity"] > 0.5
  assert rows["baseline int8"]["macs"] == rows["baseline float32"]["macs"] > 5 * distilled[
      "macs"] > 0
  assert report["test_examples"] == 1000
  assert {"teacher", "distill", "scratch", "slim", "prune", "convert",
          "evaluate", "total"} <= set(report["stages"])
  steps = report["slim_steps"]
  assert [step["step"] for step in steps] == [1, 2]
  assert steps[0]["channels"] > steps[1]["channels"] == sum(
      entry["after"] for entry in report["slim_channels"])
  # the step table measures the converter's plain int8 file; the row is the
  # repaired one (tfopt.litert.int8_repair), within its 1.1x size budget
  assert slimmed["tflite_bytes"] <= 1.1 * steps[1]["tflite_bytes"]
  assert all(0.5 < step["accuracy"] <= 1 and step["latency_us"] > 0 for step in steps)
  for name in ("baseline int8", "slimmed student int8"):
    segments = report["latency_breakdown"][name]
    assert [segment["macs"] for segment in segments] == [
        entry.macs for entry in count_macs(keras_model(output_dir, name, report))]
    assert segments[-1]["cumulative_us"] > 0
  assert report["config"]["data"]["max_train_examples"] == 5000
  assert report["versions"]["tensorflow"] and report["machine"]["cores"]
  assert all(entry["sparsity"] >= 0.69 for entry in report["layer_sparsity"])
  for name in ("report.md", "report.png", "teacher.keras",
               "student_slimmed_pruned.keras", "student_slimmed_step1_int8.tflite",
               "manifest.json"):
    assert (output_dir / name).stat().st_size > 0
  assert "| slimmed, pruned student int8 |" in result.stdout
  assert "## Where latency comes from" in result.stdout
  assert "[tfopt] prune:" in result.stdout


def keras_model(output_dir, row_name, report):
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  path = next(row["path"] for row in report["models"] if row["name"] == row_name)
  stem = path.rsplit("_", 1)[0].replace("baseline", "teacher")
  return keras.models.load_model(str(output_dir / f"{stem}.keras"))


def test_lowrank_stage_from_python(tmp_path):
  data_dir = write_idx_dataset(tmp_path / "data" / "mnist", train=300, test=60)
  config = recipe.quick(
      data=DataConfig(data_dir=str(tmp_path / "data")),
      teacher=TrainConfig(epochs=1, batch_size=32),
      lowrank=LowRankConfig(param_ratio=0.2, finetune_epochs=1, batch_size=32),
      stages=("teacher", "lowrank"), output_dir=str(tmp_path / "out"))
  assert os.path.isdir(data_dir)
  result = pipeline.run(config)
  assert [row.name for row in result.models] == [
      "baseline float32", "baseline int8", "low-rank teacher int8"]
  (entry,) = result.lowrank_layers
  assert entry["layer"] == "fc" and entry["params_before"] >= 3 * entry["params_after"]
  baseline, lowrank = result.row("baseline int8"), result.row("low-rank teacher int8")
  assert lowrank.params == baseline.params - entry["params_before"] + entry["params_after"]
  assert lowrank.tflite_bytes < 0.5 * baseline.tflite_bytes
  assert lowrank.macs < baseline.macs
  assert "| fc | (3136, 128) |" in (tmp_path / "out" / "report.md").read_text()


def test_manifest_lists_every_artifact_with_its_hash(quick_run):
  from tfopt.core.artifacts import sha256_of
  output_dir, _ = quick_run
  manifest = json.loads((output_dir / "manifest.json").read_text())
  listed = {entry["path"]: entry for entry in manifest["artifacts"]}
  # The run's lock file stays (deleting a lock file races the next run).
  on_disk = set(preflight.files_below(str(output_dir))) - {"manifest.json",
                                                           *preflight.LOCK_FILES}
  assert "deploy/model.json" in on_disk
  assert set(listed) == on_disk
  for name, entry in listed.items():
    assert entry["sha256"] == sha256_of(str(output_dir / name))


def test_rerun_into_its_own_output_dir_is_allowed(quick_run):
  output_dir, _ = quick_run
  pipeline.check_output_dir(str(output_dir))  # raises if refused


def test_event_file_of_an_epoch_cut_short_is_no_foreign_file(quick_run):
  """A run killed mid-epoch leaves that epoch's TensorBoard file unlisted: the
  rerun takes the folder, removes it, and keeps the listed ones."""
  output_dir, _ = quick_run
  listed = sorted(name for name in preflight.files_below(str(output_dir))
                  if name.startswith("tensorboard/"))
  cut_short = output_dir / "tensorboard" / "distill" / "train" / "events.out.tfevents.1.vm.2.v2"
  cut_short.write_bytes(b"partial")
  pipeline.check_output_dir(str(output_dir))  # raises if refused
  preflight.remove_half_written(str(output_dir))
  assert not cut_short.exists()
  assert sorted(name for name in preflight.files_below(str(output_dir))
                if name.startswith("tensorboard/")) == listed


@pytest.mark.parametrize("flag, expected", [
    ("--dataset=imagenet", "dataset='imagenet'"),
    ("--target_sparsity=1.5", "target_sparsity=1.5"),
    ("--temperature=0", "temperature=0.0"),
    ("--distill_epochs=0", "epochs=0"),
    ("--student=resnet9000", "Unknown model builder 'resnet9000'"),
    ("--stages=distill,prune", "must be a list that starts with teacher"),
    ("--stages=teacher,squeeze", "stages='teacher,squeeze' is invalid"),
    ("--slim_rate=1", "rate=1.0 is invalid"),
    ("--lowrank_energy=0", "energy=0.0 is invalid"),
    ("--slim_scope=everywhere", "scope='everywhere' is invalid"),
    ("--lowrank_ranks=fc", "--lowrank_ranks entry 'fc' is invalid"),
    ("--quant_modes=int8,int3", "quant_modes='int8,int3' is invalid"),
    ("--int4_layers=block[", "int4_layers='block[' is invalid"),
    ("--clusters=1", "number_of_clusters=1 is invalid"),
    ("--cluster_init=median", "centroid_init='median' is invalid"),
    ("--qat_scheme=int4", "scheme='int4' is invalid"),
    ("--stages=teacher,prune,qat --qat_scheme=pcqat", "put cluster before qat"),
    ("--binary_mode=ternary", "mode='ternary' is invalid"),
    ("--bits=8,eight", "--bits=8,eight is invalid"),
    ("--max_accuracy_drop=-1", "max_accuracy_drop=-1.0 is invalid"),
    ("--sensitivity_target_sparsity=1.5", "sensitivity_target_sparsity=1.5 is invalid"),
    ("--model=/nonexistent/m.keras", "Model '/nonexistent/m.keras' does not exist"),
    ("--model=m.keras --teacher_epochs=3", "--teacher_epochs set how a teacher is trained"),
    ("--dataset=folder", "Image folder '/nonexistent' does not exist"),
    ("--input_range=1,0", "input_range=(1.0, 0.0) is invalid"),
    ("--image_size=32", "image_size is for image folders"),
    ("--dataset=folder --color_mode=cmyk", "color_mode='cmyk' is invalid"),
])
def test_bad_input_fails_fast_with_one_message(flag, expected, tmp_path):
  output_dir = tmp_path / "out"
  result = run_cli(*flag.split(), f"--output_dir={output_dir}", "--data_dir=/nonexistent")
  assert result.returncode != 0
  assert expected in result.stderr
  assert "Traceback" not in result.stderr
  assert not output_dir.exists()


def test_missing_data_fails_before_training(tmp_path):
  output_dir = tmp_path / "out"
  config = recipe.quick(
      data=DataConfig(data_dir=str(tmp_path / "none")), output_dir=str(output_dir))
  with pytest.raises(DataError, match="does not exist") as error:
    pipeline.run(config)
  assert "TFOPT_DATA_DIR" in str(error.value)
  assert not output_dir.exists()


def test_output_dir_with_foreign_files_is_refused(tmp_path):
  (tmp_path / "my_thesis.tex").write_text("precious")
  with pytest.raises(pipeline.OutputDirError, match="my_thesis.tex"):
    pipeline.run(recipe.quick(output_dir=str(tmp_path)))
  assert (tmp_path / "my_thesis.tex").read_text() == "precious"
  assert sorted(os.listdir(tmp_path)) == ["my_thesis.tex"]


def test_output_dir_with_a_corrupt_manifest_is_refused(tmp_path):
  from tfopt.core.artifacts import ManifestError
  (tmp_path / "manifest.json").write_text("{not json")
  with pytest.raises(ManifestError, match="not a readable tfopt manifest"):
    pipeline.check_output_dir(str(tmp_path))


@pytest.mark.parametrize("stages, section, error", [
    # after distill, slim sees the student, which has no block1a_conv
    (("teacher", "distill", "slim"), dict(slim=SlimConfig(layers=("block1a_conv",))),
     "no layer 'block1a_conv'"),
    (("teacher", "slim"), dict(slim=SlimConfig(layers=("fc",))),
     "'fc' cannot be slimmed"),
    (("teacher", "lowrank"),
     dict(lowrank=LowRankConfig(param_ratio=None, ranks={"block1_pool": 4})),
     "'block1_pool' is a MaxPooling2D"),
    (("teacher", "cluster"), dict(cluster=ClusterConfig(layers=("block1a_bn",))),
     "only Conv2D and Dense"),
    (("teacher", "distill", "binary"), dict(binary=BinaryConfig(layers=("fc",))),
     "no layer 'fc'"),
    # the student's first conv has 144 weights
    (("teacher", "distill", "cluster"), dict(cluster=ClusterConfig(number_of_clusters=200)),
     "'block1_conv' has 144 weights, fewer than 200 clusters"),
])
def test_bad_layer_names_fail_before_training(stages, section, error, tmp_path):
  write_idx_dataset(tmp_path / "data" / "mnist")
  output_dir = tmp_path / "out"
  config = recipe.quick(data=DataConfig(data_dir=str(tmp_path / "data")),
                                stages=stages, output_dir=str(output_dir),
                                **section)
  with pytest.raises(TfoptError, match=error):
    pipeline.run(config)
  assert not output_dir.exists()


def test_prune_cluster_pcqat_stages_from_python(tmp_path):
  write_idx_dataset(tmp_path / "data" / "mnist", train=400, test=80)
  config = recipe.quick(
      data=DataConfig(data_dir=str(tmp_path / "data")),
      teacher=TrainConfig("student", epochs=2, batch_size=32),
      convert=ConvertConfig(modes=("float16", "int8"), representative_examples=50),
      stages=("teacher", "prune", "cluster", "qat"), output_dir=str(tmp_path / "out"))
  result = pipeline.run(config)
  assert [row.name for row in result.models] == [
      "baseline float32", "baseline float16", "pruned teacher float16",
      "pruned, clustered (16) teacher float16", "baseline int8",
      "pruned teacher int8", "pruned, clustered (16) teacher int8",
      "pruned, clustered (16), PCQAT teacher int8"]
  (run,) = result.qat
  assert run["scheme"] == "pcqat" and run["target_sparsity"] == 0.7
  assert abs(run["file_sparsity"] - 0.7) < 0.01
  assert run["max_distinct_per_channel"] <= 16
  assert set(result.weight_sharing) == {
      "pruned, clustered (16) teacher float16", "pruned, clustered (16) teacher int8",
      "pruned, clustered (16), PCQAT teacher int8"}
  for kernels in result.weight_sharing.values():
    assert all(kernel["holds"] for kernel in kernels) and len(kernels) == 4
  pcqat = result.row("pruned, clustered (16), PCQAT teacher int8")
  assert pcqat.params == result.row("baseline int8").params
  assert pcqat.gzip_bytes < 0.7 * result.row("baseline int8").gzip_bytes
  assert (tmp_path / "out" / "teacher_pruned_clustered_pcqat.h5").stat().st_size > 0
  assert "## Quantization-aware training" in (tmp_path / "out" / "report.md").read_text()
  # Run again: every stage is kept, the QAT .h5 reloads, the summaries replay.
  again = pipeline.run(config)
  assert again.resumed_stages == ["teacher", "prune", "cluster", "qat", "convert",
                                  "evaluate"]
  assert again.models == result.models
  assert again.qat[0]["max_distinct_per_channel"] == run["max_distinct_per_channel"]
  assert again.weight_sharing.keys() == result.weight_sharing.keys()


def test_binary_stage_from_python(tmp_path):
  write_idx_dataset(tmp_path / "data" / "mnist", train=300, test=60)
  config = recipe.quick(
      data=DataConfig(data_dir=str(tmp_path / "data")),
      teacher=TrainConfig("student", epochs=2, batch_size=32),
      stages=("teacher", "binary"), output_dir=str(tmp_path / "out"))
  result = pipeline.run(config)
  assert [row.name for row in result.models] == [
      "baseline float32", "baseline int8", "BWN teacher int8"]
  (entry,) = result.binary
  (file_row,) = entry["files"]
  assert file_row["max_distinct_per_channel"] <= 2
  assert entry["effective_bytes"] < file_row["tflite_bytes"] / 3
  assert entry["binary_weights"] == result.row("BWN teacher int8").params - entry[
      "other_params"]
  for name in ("teacher_binary.keras", "teacher_binary_trainable.keras"):
    assert (tmp_path / "out" / name).stat().st_size > 0
  assert "## Binary weights" in (tmp_path / "out" / "report.md").read_text()


def test_analysis_and_sensitivity_stages_from_python(tmp_path):
  write_idx_dataset(tmp_path / "data" / "mnist", train=400, test=80)
  config = recipe.quick(
      data=DataConfig(data_dir=str(tmp_path / "data")),
      teacher=TrainConfig("student", epochs=2, batch_size=32),
      analysis=AnalysisConfig(bits=(8, 2), sweep_qualities=(0.0, 1.0, 2.0),
                              sensitivity_sparsities=(0.5, 0.9),
                              max_accuracy_drop=5.0),
      qat=QatConfig(epochs=1, batch_size=32),
      stages=("teacher", "bitwidth", "sweep", "sensitivity", "qat"),
      output_dir=str(tmp_path / "out"))
  result = pipeline.run(config)
  assert [row.name for row in result.models] == [
      "baseline float32", "baseline int8", "uniformly pruned teacher int8",
      "sensitivity-pruned teacher int8", "sensitivity-pruned, PQAT teacher int8"]
  # QAT knows its base was pruned, and how far, from what the sensitivity
  # stage applied (not from prune's settings: prune never ran).
  (qat_run,) = result.qat
  assert qat_run["scheme"] == "pqat"
  assert qat_run["target_sparsity"] == pytest.approx(result.sensitivity["overall_sparsity"])
  assert qat_run["target_sparsity"] != config.prune.target_sparsity
  assert [(entry["bits"], entry["granularity"]) for entry in result.bitwidth] == [
      (8, "per_tensor"), (8, "per_channel"), (2, "per_tensor"), (2, "per_channel")]
  assert [point["quality"] for point in result.sweep] == [0.0, 1.0, 2.0]
  entry = result.sensitivity
  assert set(entry["chosen"]) == {"block1_conv", "block2_conv", "block3_conv", "logits"}
  uniform, chosen = entry["compared"]["uniform_pruned"], entry["compared"]["sensitivity_pruned"]
  # Same number of weights removed, allocated differently.
  assert abs(uniform["nonzero_params"] - chosen["nonzero_params"]) < 0.02 * uniform["params"]
  measured = {layer["layer"]: layer["zeros"] / layer["size"]
              for layer in entry["sensitivity_layers"]}
  for layer, target in entry["chosen"].items():
    assert abs(measured.get(layer, 0.0) - target) < 0.01
  assert (tmp_path / "out" / "sweep.png").stat().st_size > 0
  text = (tmp_path / "out" / "report.md").read_text()
  for heading in ("## Bit-width study", "## Pruning sweep",
                  "## Sensitivity-chosen vs uniform sparsity"):
    assert heading in text


def test_cifar10_shaped_data_runs_end_to_end(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  arrays = {f"x_{split}": rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
            for split, count in (("train", 200), ("test", 40))}
  arrays.update({f"y_{split}": rng.integers(0, 10, size=(count, 1)).astype(np.uint8)
                 for split, count in (("train", 200), ("test", 40))})
  np.savez(tmp_path / "cifar10.npz", **arrays)
  config = recipe.quick(
      data=DataConfig(dataset="cifar10", data_dir=str(tmp_path)),
      teacher=TrainConfig("student", epochs=1, batch_size=32),
      stages=("teacher",), output_dir=str(tmp_path / "out"))
  result = pipeline.run(config)
  assert [row.name for row in result.models] == ["baseline float32", "baseline int8"]
  spec = json.loads((tmp_path / "out" / "deploy" / "model.json").read_text())
  assert spec["input"]["shape"] == [1, 32, 32, 3]
  assert spec["preprocessing"]["color_mode"] == "rgb"
  assert spec["class_names"][-1] == "truck"
