"""Every chain --stages accepts runs: each ordered pair of stages after teacher.

For each pair (A, B), `--stages teacher,A,B` is either refused when the
config is made (one ConfigError, before any training) or runs to its report
and deploy bundle. The chains sharing teacher,A run into one output dir one
after the other, so resume keeps teacher and A and only B onwards is redone:
that also checks that a stage's output reloads correctly for the next one
(QAT's .h5 model, clustered and pruned models, ...).
"""

import itertools
import json

import pytest

from conftest import write_idx_dataset
from tfopt import pipeline
from tfopt.config import (AnalysisConfig, BinaryConfig, ClusterConfig, ConfigError, ConvertConfig,
                          DataConfig, DistillConfig, EvaluateConfig, LowRankConfig, PipelineConfig,
                          PruneConfig, QatConfig, SlimConfig, StridedConfig, TrainConfig)
from tfopt.config import registry
from tfopt.core.errors import TfoptError
from tfopt.run import preflight

STAGES = [name for name in registry.names() if name != "teacher"]


def tiny_config(data_dir, output_dir, stages):
  """One epoch of everything on the small builder; figures are meaningless."""
  fast = dict(epochs=1, batch_size=64)
  return PipelineConfig(
      data=DataConfig(data_dir=str(data_dir)),
      teacher=TrainConfig(builder="student", **fast),
      distill=DistillConfig(**fast), prune=PruneConfig(**fast),
      slim=SlimConfig(finetune_epochs=1, sparsity_epochs=1, prune_count=1, batch_size=64),
      strided=StridedConfig(finetune_epochs=1, batch_size=64),
      lowrank=LowRankConfig(finetune_epochs=1, batch_size=64),
      cluster=ClusterConfig(epochs=1, batch_size=64, number_of_clusters=8),
      qat=QatConfig(**fast), binary=BinaryConfig(**fast),
      analysis=AnalysisConfig(bits=(4,), granularities=("per_channel",),
                              sweep_qualities=(0.5,), sensitivity_sparsities=(0.5,),
                              max_accuracy_drop=100),  # chance-level models here
      convert=ConvertConfig(representative_examples=10),
      evaluate=EvaluateConfig(latency_warmup=1, latency_runs=1, latency_breakdown=False),
      output_dir=str(output_dir), stages=("teacher",) + stages)


def refusal(data_dir, output_dir, stages):
  """Why this chain is refused before any training (the config, or a stage's
  preflight on the model it will see), or None when it is accepted."""
  try:
    preflight.check_inputs(tiny_config(data_dir, output_dir, stages))
    return None
  except TfoptError as error:
    return str(error)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("pairs")
  write_idx_dataset(root / "mnist", train=300, test=60)
  return root


@pytest.mark.slow
@pytest.mark.parametrize("first", STAGES)
def test_every_stage_after_first_runs_or_is_refused(data_dir, tmp_path, first):
  output_dir = tmp_path / "out"
  ran, refused = [], []
  for second in [name for name in STAGES if name != first]:
    message = refusal(data_dir, output_dir, (first, second))
    if message is not None:
      refused.append(f"{second} ({message[:80]}...)")
      continue
    report = pipeline.run(tiny_config(data_dir, output_dir, (first, second)))
    assert report.models, (first, second)
    saved = json.loads((output_dir / "report.json").read_text())
    assert saved["config"]["stages"][-1] == second
    assert (output_dir / "deploy" / "model.tflite").exists()
    ran.append(second)
  print(f"after {first}: ran {ran}; refused {refused}")
  assert ran or refused


def test_refused_pairs_are_refused_before_any_work(tmp_path):
  """What the config refuses, it refuses with one message and no output dir."""
  for first, second in itertools.permutations(STAGES, 2):
    try:
      tiny_config(tmp_path / "data", tmp_path / "out", (first, second))
    except ConfigError as error:
      assert str(error).count("\n") == 0 and "invalid" in str(error), str(error)
  assert not (tmp_path / "out").exists()
