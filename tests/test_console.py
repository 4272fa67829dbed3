"""The `tfopt` command: subcommands, and `tfopt inspect` read back from real files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from tfopt.cli import console
from tfopt.core._keras import clone_model
from tfopt.core.artifacts import write_bytes_atomic
from tfopt.litert import convert


def test_help_lists_the_subcommands_and_unknown_ones_are_refused(capsys):
  assert console.main(["--help"]) == 0
  out = capsys.readouterr().out
  assert all(name in out for name in ("compress", "measure", "inspect"))
  assert console.main(["squash"]) == 2
  assert "unknown subcommand 'squash'" in capsys.readouterr().err


def _shaped(trained_teacher):
  """The model with a half-zero logits kernel and 4 values per block1_conv filter."""
  model = clone_model(trained_teacher)
  dense = model.get_layer("logits").kernel.numpy()
  dense[::2] = 0.0
  model.get_layer("logits").kernel.assign(dense)
  conv = model.get_layer("block1_conv").kernel.numpy()
  levels = np.array([-0.2, -0.05, 0.05, 0.2], np.float32)
  conv[...] = levels[np.arange(conv.size).reshape(conv.shape) % 4]
  model.get_layer("block1_conv").kernel.assign(conv)
  return model


def test_inspect_reads_sparsity_and_distinct_values_back(trained_teacher, dataset, tmp_path,
                                                         capsys):
  model = _shaped(trained_teacher)
  path = write_bytes_atomic(str(tmp_path / "shaped_int8.tflite"), convert.to_tflite(
      model, "int8", dataset.x_train, 50))
  assert console.main(["inspect", path, "--json"]) == 0
  found = json.loads(capsys.readouterr().out)
  assert found["input_dtype"] == "int8" and found["ops"]["CONV_2D"] == 3
  kernels = {kernel["name"].split("/")[1]: kernel for kernel in found["kernels"]
             if kernel["name"].count("/") >= 2}
  fc = next(kernel for name, kernel in kernels.items() if name == "logits")
  assert fc["dtype"] == "int8" and abs(fc["sparsity"] - 0.5) < 0.01
  conv = next(kernel for name, kernel in kernels.items() if name.startswith("block1_conv"))
  assert conv["max_distinct_per_channel"] <= 4 and conv["scales"] == conv["shape"][0]
  assert console.main(["inspect", path]) == 0
  table = capsys.readouterr().out
  row = next(line for line in table.splitlines() if line.endswith("logits/MatMul"))
  assert "per channel (10)" in row and f"{100 * fc['sparsity']:.1f}%" in row


def _run(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=300)


def test_the_console_script_runs_as_a_module_and_shows_only_its_own_lines(tmp_path):
  # What a user sees is tfopt's: no TensorFlow C++ start-up lines (absl's
  # InitializeLog warning, "Could not find cuda drivers", the cuInit error).
  completed = _run("tfopt", "inspect", str(tmp_path / "missing.tflite"))
  assert completed.returncode == 2 and "is not a file" in completed.stderr
  assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
  helped = _run("tfopt", "compress", "--help")
  assert helped.returncode == 0 and "--stages" in helped.stdout and "--verbose" in helped.stdout
  assert helped.stderr == ""
  refused = _run("tfopt.pipeline", "--dataset", "nosuch", "--verbose")
  assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
      "tfopt: error: dataset='nosuch'")  # --verbose is taken, not an unknown flag
  quiet = _run("tfopt.pipeline", "--dataset", "nosuch")
  assert quiet.stderr.strip().splitlines() == refused.stderr.strip().splitlines()[-1:]


def test_a_bad_flag_is_one_error_line_and_exit_2(capsys):
  assert console.main(["compress", "--bogus_flag=1"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("tfopt: error: Unknown command line flag 'bogus_flag'")
  assert err.strip().endswith("See tfopt compress --help.")  # as measure and inspect say
  with pytest.raises(SystemExit) as refused:  # argparse's exit, with one line
    console.main(["measure", "model.tflite", "--bogus_flag=1"])
  assert refused.value.code == 2
  assert capsys.readouterr().err.strip().endswith("See tfopt measure --help.")


def test_measuring_a_file_shows_no_litert_start_up_line(trained_teacher, dataset, tmp_path):
  # LiteRT's once-per-process "Created TensorFlow Lite XNNPACK delegate" INFO
  # line is spent at start-up; --verbose shows it.
  from conftest import write_idx_dataset  # pylint: disable=g-import-not-at-top
  write_idx_dataset(tmp_path / "data" / "mnist", train=60, test=40)
  path = write_bytes_atomic(str(tmp_path / "model_int8.tflite"), convert.to_tflite(
      trained_teacher, "int8", dataset.x_train, 20))
  args = ("tfopt", "measure", path, "--data_dir", str(tmp_path / "data"))
  measured = _run(*args)
  assert measured.returncode == 0 and "accuracy" in measured.stdout, measured.stderr
  assert measured.stderr == ""
  assert "XNNPACK delegate" in _run(*args, "--verbose").stderr
