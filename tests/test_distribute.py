"""tf.distribute: two logical CPUs (MirroredStrategy), two local workers.

Logical devices and MultiWorkerMirroredStrategy must be set up before
TensorFlow starts, so those runs are processes of their own
(tests/distributed_worker.py).
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from absl import flags

from conftest import REPO_ROOT, write_idx_dataset
from tfopt import pipeline
from tfopt.cli import compress as cli
from tfopt.config import ConfigError, PipelineConfig
from tfopt.training import distribute

WORKER = str(REPO_ROOT / "tests" / "distributed_worker.py")
ROWS = ("baseline int8", "distilled student int8", "pruned student int8")
# Flags shared by every run compared here; --batch_size is per replica.
# (The small builder as teacher: the big one is unstable on 720 images.)
FLAGS = ["--quick", "--teacher=student", "--teacher_epochs=4",
         "--distill_epochs=4", "--prune_epochs=4", "--latency_runs=2",
         "--nolatency_breakdown"]


def run_worker(cpus, *args, env=None, **popen):
  return subprocess.Popen([sys.executable, WORKER, str(cpus), *args], cwd=REPO_ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **popen)


def finish(process):
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output[-3000:]
  return output


def accuracies(output_dir):
  report = json.loads((output_dir / "report.json").read_text())
  return {row["name"]: row["accuracy"] for row in report["models"]}, report


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("distribute")
  write_idx_dataset(root / "mnist", train=800, test=200)
  return root


@pytest.fixture(scope="module")
def one_device(data_dir, tmp_path_factory):
  """The reference: the same flags on one device, batch 32 (in this process)."""
  output_dir = tmp_path_factory.mktemp("one") / "out"
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["tfopt.pipeline", *FLAGS, "--batch_size=32", f"--data_dir={data_dir}",
               f"--output_dir={output_dir}"])
  pipeline.run(cli.config_from_flags())
  return accuracies(output_dir)[0]


def assert_matches_one_device(result, one_device):
  print("one device", one_device, "distributed", result)
  for row in ROWS:
    assert abs(result[row] - one_device[row]) <= 0.05, (row, result, one_device)
    assert result[row] > 0.85


def test_distiller_loss_is_averaged_over_the_global_batch():
  """One Distiller step on 2 replicas moves the weights as on 1 device."""
  output = finish(run_worker(2, "distiller_step"))
  measured = json.loads(output.strip().splitlines()[-1])
  assert measured["replicas"] == 2
  assert measured["max_difference"] < 1e-5


@pytest.mark.slow  # the multi-worker test below covers the same distributed code
def test_mirrored_on_two_cpus_matches_one_device(data_dir, one_device, tmp_path):
  output_dir = tmp_path / "out"
  log = finish(run_worker(2, "pipeline", *FLAGS, "--strategy=mirrored", "--batch_size=16",
                          f"--data_dir={data_dir}", f"--output_dir={output_dir}"))
  assert "mirrored: 2 replica(s)" in log and "global batch of batch_size x 2" in log
  result, report = accuracies(output_dir)
  assert report["config"]["strategy"] == "mirrored"
  assert_matches_one_device(result, one_device)


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for handle in sockets:
    handle.bind(("127.0.0.1", 0))
  ports = [handle.getsockname()[1] for handle in sockets]
  for handle in sockets:
    handle.close()
  return ports


def test_two_local_workers_match_one_device(data_dir, one_device, tmp_path):
  output_dir, scratch = tmp_path / "out", tmp_path / "tmp"
  scratch.mkdir()
  cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
  workers = []
  for index in range(2):
    env = dict(os.environ, TMPDIR=str(scratch), TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    workers.append(run_worker(1, "pipeline", *FLAGS, "--strategy=multi_worker",
                              "--batch_size=16", f"--data_dir={data_dir}",
                              f"--output_dir={output_dir}", env=env))
  logs = [finish(worker) for worker in workers]
  assert "worker worker:1" in logs[1] and "multi_worker: 2 replica(s)" in logs[0]
  result, _ = accuracies(output_dir)  # written by worker 0 only
  assert_matches_one_device(result, one_device)
  assert os.listdir(scratch) == []  # worker 1's files were removed


def test_a_dead_worker_stops_the_other_with_one_error_naming_it(data_dir, tmp_path):
  """Worker 1 is SIGKILLed in the teacher's training: worker 0 does not wait
  forever in its next collective but exits with one tfopt error naming it."""
  cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
  workers = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    workers.append(run_worker(1, "pipeline", *FLAGS, "--teacher_epochs=40",
                              "--strategy=multi_worker", f"--data_dir={data_dir}",
                              f"--output_dir={tmp_path / 'out'}", env=env))
  seen = ""
  for line in workers[0].stdout:  # worker 0 logs the epochs it trains
    seen += line
    if line.startswith("Epoch 3/40"):
      break
  workers[1].kill()
  workers[1].wait()
  killed = time.monotonic()
  output, _ = workers[0].communicate(timeout=180)
  assert workers[0].returncode == 2, (seen + output)[-3000:]
  assert time.monotonic() - killed < 120
  assert ("tfopt: error: The multi-worker run stopped: worker worker:1 "
          f"({cluster['worker'][1]}) stopped answering") in output
  assert "Traceback" not in output


@pytest.mark.parametrize("tf_config, message", [
    (None, "TF_CONFIG environment variable, which is not set"),
    ("{not json", "TF_CONFIG is malformed"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     "task index 1 with 1 worker(s)"),
    ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG is malformed (KeyError: 'task')"),
])
def test_bad_tf_config_is_refused(tf_config, message):
  environ = {} if tf_config is None else {"TF_CONFIG": tf_config}
  with pytest.raises(distribute.DistributionError, match=re.escape(message)):
    distribute.read_tf_config(environ)


def test_unknown_strategy_is_refused():
  with pytest.raises(ConfigError, match="strategy='tpu' is invalid"):
    PipelineConfig(strategy="tpu")


def test_multi_worker_after_tensorflow_started_says_what_to_do(monkeypatch):
  import tensorflow as tf
  tf.constant(1.0)  # TensorFlow is running in this (test) process
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
       "task": {"type": "worker", "index": 0}}))
  with pytest.raises(distribute.DistributionError,
                     match="before any other TensorFlow work in the process"):
    distribute.Distribution("multi_worker")
