"""--search: every candidate a measured .tflite, the best feasible one deployed."""

import dataclasses
import hashlib
import json
import re
import types

import numpy as np
import pytest
from absl import flags

from conftest import synthetic_images, write_idx_dataset
from tfopt import pipeline
from tfopt.cli import compress as cli
from tfopt.config import (ConfigError, ConvertConfig, DataConfig, DistillConfig, EvaluateConfig,
                          PipelineConfig, SearchConfig, TrainConfig)
from tfopt.core._keras import keras
from tfopt.data.datasets import Dataset
from tfopt.keras_io import keras2_flatten
from tfopt.litert import evaluate
from tfopt.stages.report import ModelRow
from tfopt.techniques.qat import int4 as qat_int4
from tfopt.techniques.search import algorithm as search

FAST_EVALUATE = EvaluateConfig(latency_warmup=2, latency_runs=10, latency_breakdown=False)


def parse(*args) -> PipelineConfig:
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["tfopt compress", *args])
  return cli.config_from_flags()


def test_search_flags_choose_the_stages_and_the_budget():
  assert parse("--search").stages == ("teacher", "distill", "search")
  assert parse("--search", "--model", "m.keras").stages == ("teacher", "search")
  assert parse("--search", "--stages", "teacher,prune").stages == (
      "teacher", "prune", "search")
  config = parse("--search", "--objective", "latency", "--max_accuracy_drop", "0.2",
                 "--search_budget", "90", "--search_modes", "int8,dynamic_int4")
  assert config.search == dataclasses.replace(
      SearchConfig(), objective="latency", max_accuracy_drop=0.2, time_budget=90.0,
      modes=("int8", "dynamic_int4"))
  for bad, message in ((("--objective", "fastest"), "objective='fastest' is invalid"),
                       (("--search_modes", "int3"), "modes=('int3',) is invalid"),
                       (("--search_budget", "0"), "time_budget=0.0 is invalid")):
    with pytest.raises(ConfigError, match=re.escape(message)):
      parse("--search", *bad)


def test_search_run_deploys_the_smallest_feasible_file_and_resumes(tmp_path):
  write_idx_dataset(tmp_path / "data" / "mnist", train=400, test=100)
  fast = dict(epochs=2, batch_size=32)
  config = PipelineConfig(
      data=DataConfig(data_dir=str(tmp_path / "data")),
      teacher=TrainConfig(builder="student", **fast), distill=DistillConfig(**fast),
      search=SearchConfig(max_accuracy_drop=3.0, slim_rates=(0.5,), sparsities=(0.5, 0.8),
                          modes=("int8", "int4"), finetune_epochs=1, batch_size=32),
      convert=ConvertConfig(representative_examples=20), evaluate=FAST_EVALUATE,
      stages=("teacher", "distill", "search"), output_dir=str(tmp_path / "out"))
  report = pipeline.run(config)
  out = tmp_path / "out"
  entry = report.search
  candidates = entry["candidates"]
  names = {candidate["name"] for candidate in candidates}
  # Step 1 (no training) and the fine-tuned chains, each in both modes.
  for spec in ("as given", "sparsity 50% (no fine-tune)", "sparsity 50%", "slim 50%"):
    assert {f"{spec}, int8", f"{spec}, int4"} <= names, spec
  start = next(c for c in candidates if c["name"] == "as given, int8")
  for candidate in candidates:
    assert 0 <= candidate["accuracy"] <= 1 and candidate["gzip_bytes"] < candidate[
        "tflite_bytes"]
    assert candidate["feasible"] == (candidate["accuracy"] >= entry["floor"])
    if candidate["spec"]["sparsity"]:  # the zeros are in the file's Keras model
      assert candidate["nonzero_params"] < 0.75 * start["nonzero_params"]
    if candidate["spec"]["slim_rate"]:
      assert candidate["macs"] < 0.5 * start["macs"]
    if candidate["mode"] == "int4":
      assert candidate["tflite_bytes"] < 0.75 * next(
          other["tflite_bytes"] for other in candidates
          if other["spec"] == dict(candidate["spec"], int4_qat=False)
          and other["mode"] == "int8")
  # Last, when an int4 file was chosen: its model trained on the int4 grid, as int4.
  qat4 = [candidate for candidate in candidates if candidate["spec"]["int4_qat"]]
  assert len(qat4) <= 1 and all(candidate["mode"] == "int4" for candidate in qat4)
  chosen = next(candidate for candidate in candidates if candidate["chosen"])
  feasible = [candidate for candidate in candidates if candidate["feasible"]]
  smallest = min(candidate["gzip_bytes"] for candidate in feasible)
  near = [candidate for candidate in feasible
          if candidate["gzip_bytes"] <= smallest * (1 + search.TIE)]
  assert chosen["feasible"] and chosen in near
  assert chosen["accuracy"] == max(candidate["accuracy"] for candidate in near)
  # The chosen file is the run's last model, converted in its mode only, deployed.
  row = entry["chosen_row"]
  assert row["name"] == f"searched student {chosen['mode']}"
  bundle = json.loads((out / "deploy" / "model.json").read_text())
  assert bundle["source"]["file"] == row["path"]
  assert hashlib.sha256((out / row["path"]).read_bytes()).hexdigest() == bundle["sha256"]
  # The front's files are kept, run in LiteRT and give the test accuracy reported.
  front = [candidate for candidate in candidates if candidate["front"]]
  assert front and all((out / candidate["file"]).is_file() for candidate in front)
  data = report_dataset(tmp_path / "data")
  for candidate in front:
    assert evaluate.accuracy(str(out / candidate["file"]), data.x_test,
                             data.y_test) == pytest.approx(candidate["test_accuracy"])
  assert (out / "search.png").read_bytes()[:4] == b"\x89PNG"
  markdown = (out / "report.md").read_text()
  assert "## Search: the smallest file within 3.0 pp" in markdown
  manifest = json.loads((out / "manifest.json").read_text())
  listed = json.dumps(manifest)
  assert "search.png" in listed and all(candidate["file"] in listed for candidate in front)
  # A rerun keeps the search: the same record, no fine-tune again.
  again = pipeline.run(config)
  assert again.search["candidates"] == candidates


def report_dataset(data_dir) -> Dataset:
  from tfopt.data.datasets import load_dataset  # pylint: disable=g-import-not-at-top
  return load_dataset(DataConfig(data_dir=str(data_dir)))


def test_the_time_budget_stops_the_walk_after_the_model_as_given(trained_teacher, dataset):
  config = SearchConfig(time_budget=1e-3, max_accuracy_drop=100, sparsities=(0.5,),
                        modes=("int8",))
  result = search.search(trained_teacher, dataset, config, 1.0, FAST_EVALUATE, 20,
                         log=lambda line: None)
  assert [candidate.spec for candidate in result.candidates] == [search.Spec()]
  assert result.skipped[0] == "sparsity 50% (no fine-tune) and after: the time budget"
  assert all(line.endswith("the time budget") for line in result.skipped)
  assert result.candidates[result.chosen].feasible and result.model is trained_teacher


def _candidate(spec, gzip_bytes, accuracy, feasible=True, latency_us=10.0):
  return search.Candidate.of(spec, "int8", accuracy=accuracy, tflite_bytes=2 * gzip_bytes,
                            gzip_bytes=gzip_bytes, latency_us=latency_us, params=100,
                            nonzero_params=50, macs=1000, seconds=1.0, feasible=feasible)


def test_the_report_rows_and_the_search_candidates_share_one_row_type():
  shared = [field.name for field in dataclasses.fields(evaluate.FileRow)]
  # The report's rows: FileRow's fields, then its own, in report.json's key order.
  assert [field.name for field in dataclasses.fields(ModelRow)] == [
      "name", "path", "accuracy", "tflite_bytes", "gzip_bytes", "latency_us", "params",
      "nonzero_params", "macs", "agreement", "weight_sparsity", "input_dtype",
      "weight_dtypes"]
  assert shared == [field.name for field in dataclasses.fields(ModelRow)][:len(shared)]
  candidate = _candidate(search.Spec(0, 0.7, True), 10_000, 0.98)
  assert isinstance(candidate, evaluate.FileRow)
  assert (candidate.name, candidate.path) == ("sparsity 70%, int8", "sparse70_int8.tflite")
  as_json = candidate.to_json()
  assert list(as_json) == [name for name in shared if name != "path"] + [
      "spec", "mode", "seconds", "feasible"]
  assert as_json["spec"]["sparsity"] == 0.7 and json.dumps(as_json)


def test_the_choice_is_the_most_accurate_within_a_tie_of_the_smallest():
  start, slim, pruned = search.Spec(), search.Spec(0.5, 0, True), search.Spec(0, 0.7, True)
  candidates = [_candidate(start, 30_000, 0.992), _candidate(slim, 10_000, 0.985),
                _candidate(pruned, 10_200, 0.988), _candidate(pruned, 8_000, 0.97, False)]
  assert search._best(candidates, "size") == 2  # 2 % larger, more accurate
  candidates[2].gzip_bytes = 10_400  # 4 % larger: the smaller one
  assert search._best(candidates, "size") == 1
  assert search._best(candidates, "latency") == 0  # equal latency: the most accurate
  for candidate in candidates:
    candidate.feasible = False
  assert search._best(candidates, "size") == 0  # none feasible: the model as given


@pytest.mark.parametrize("miss, tried_at_25", [(0.002, [0.5, 0.9]), (0.02, [0.5])])
def test_a_higher_slim_rate_tries_the_sparsity_a_lower_one_nearly_made(miss, tried_at_25):
  """Rate 0 fails at sparsity 90 %: by 0.2 pp (near) slim 25 % tries 90 % too;
  by 2 pp it stops before it."""
  config = SearchConfig(slim_rates=(0.25,), sparsities=(0.5, 0.9))
  space = types.SimpleNamespace(near=search.PROMISING_PP / 100)
  walk = search._Walk(None, config, 0.99, lambda line: None, space)
  tried = []

  def slim(rate, epochs, spec=None):
    walk.bases[rate] = (None, {0.5: {}, 0.9: {}})
    return True

  def prune(spec, epochs):
    tried.append((spec.slim_rate, spec.sparsity))
    accuracy = 0.99 - miss if (spec.slim_rate, spec.sparsity) == (0.0, 0.9) else 0.995
    walk.candidates.append(_candidate(spec, 1000, accuracy, accuracy >= 0.99))
    return accuracy >= 0.99

  walk.bases[0.0] = (None, {0.5: {}, 0.9: {}})
  walk.fits, walk.slim, walk.prune = (lambda epochs, what: True), slim, prune
  walk.chains()
  assert tried == [(0.0, 0.5), (0.0, 0.9)] + [(0.25, sparsity) for sparsity in tried_at_25]


def test_nothing_feasible_keeps_the_model_as_given(trained_teacher, dataset):
  config = SearchConfig(time_budget=1e-3, max_accuracy_drop=0.0, sparsities=(0.9,),
                        modes=("int8",))
  result = search.search(trained_teacher, dataset, config, 1.01, FAST_EVALUATE, 20,
                         log=lambda line: None)
  assert not any(candidate.feasible for candidate in result.candidates)
  assert result.candidates[result.chosen].spec == search.Spec()
  assert result.model is trained_teacher


def test_a_chosen_int4_file_is_trained_on_the_int4_grid_last(trained_teacher, dataset):
  config = SearchConfig(max_accuracy_drop=100, slim_rates=(), sparsities=(0.5,),
                        modes=("int4",), finetune_epochs=1, batch_size=32)
  result = search.search(trained_teacher, dataset, config, 1.0, FAST_EVALUATE, 20,
                         log=lambda line: None)
  *before, qat4 = result.candidates
  source = next(candidate for candidate in before
                if candidate.spec == dataclasses.replace(qat4.spec, int4_qat=False))
  assert qat4.spec.int4_qat and qat4.spec.sparsity == 0.5 and qat4.mode == "int4"
  # The zeros kept (weights under half a grid step round to new ones).
  assert qat4.nonzero_params <= source.nonzero_params
  assert sum(candidate.spec.int4_qat for candidate in result.candidates) == 1
  if result.candidates[result.chosen] is qat4:
    for name in qat_int4.grid_layers(result.model):
      kernel = result.model.get_layer(name).kernel.numpy()
      assert np.array_equal(qat_int4.on_grid(kernel), kernel)


def _nested_mobilenet_dataset(size=32, count=160) -> Dataset:
  splits = []
  for seed, number in ((0, count), (1, 40), (2, 40)):
    images, labels = synthetic_images(number, seed, num_classes=4, size=size)
    splits += [np.repeat(images, 3, axis=-1), labels]
  return Dataset("synthetic-rgb", *splits, ["a", "b", "c", "d"], "synthetic")


def test_latency_search_slims_a_nested_keras_applications_backbone():
  """The transfer guide's shape: MobileNetV2 nested in the user's model."""
  data = _nested_mobilenet_dataset()
  base = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35,
                                        input_shape=(32, 32, 3))
  inputs = keras.Input((32, 32, 3))
  x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
  user_model = keras.Model(inputs, keras.layers.Dense(4)(x))
  model = keras2_flatten.flatten_nested_models(user_model)
  model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(data.x_train, data.y_train, epochs=1, verbose=0)
  config = SearchConfig(objective="latency", max_accuracy_drop=100, slim_rates=(0.5,),
                        modes=("int8",), finetune_epochs=1, batch_size=32)
  lines = []
  result = search.search(model, data, config, 1.0, FAST_EVALUATE, 20, log=lines.append)
  by_spec = {candidate.spec: candidate for candidate in result.candidates}
  # No sparsity for latency; the chosen slimmed model is fine-tuned longer at the end.
  slim_50 = search.Spec(0.5, 0.0, True)
  assert set(by_spec) <= {search.Spec(), slim_50, search.Spec(0.5, 0.0, True, True)}
  assert by_spec[slim_50].macs < 0.6 * by_spec[search.Spec()].macs
  assert by_spec[slim_50].tflite_bytes < by_spec[search.Spec()].tflite_bytes
  chosen = result.candidates[result.chosen]
  fastest = min(candidate.latency_us for candidate in result.candidates)
  assert chosen.latency_us <= fastest * (1 + search.TIE)
  assert any("slim 50%" in line for line in lines)
  assert any(line.startswith("strided: ") and "no 2 x 2 pool" in line for line in result.skipped)


def test_latency_search_folds_pools_into_strides_and_slims_from_there(trained_teacher,
                                                                      dataset):
  config = SearchConfig(objective="latency", max_accuracy_drop=100, slim_rates=(0.5,),
                        modes=("int8",), finetune_epochs=1, batch_size=32)
  result = search.search(trained_teacher, dataset, config, 1.0, FAST_EVALUATE, 20,
                         log=lambda line: None)
  by_spec = {candidate.spec: candidate for candidate in result.candidates}
  start = by_spec[search.Spec()]
  strided = by_spec[search.Spec(finetuned=True, longer=True, strided=True)]
  assert strided.macs < 0.65 * start.macs and strided.params == start.params
  # Feasible, so the slim chain starts from the strided model.
  slimmed = by_spec[search.Spec(0.5, 0.0, True, strided=True)]
  assert slimmed.macs < strided.macs and search.Spec(0.5, 0.0, True) not in by_spec
  chosen = result.candidates[result.chosen]
  assert chosen.spec.strided
  assert [layer.strides for layer in result.model.layers
          if layer.name in ("block1_conv", "block2_conv")] == [(2, 2), (2, 2)]


def test_a_file_that_cannot_be_written_is_noted_and_the_walk_goes_on(
    trained_teacher, dataset, monkeypatch):
  from tfopt.litert import convert  # pylint: disable=g-import-not-at-top
  real = convert.to_tflite

  def int4_fails(model, mode, *args, **kwargs):
    if mode == "int4":
      raise convert.ConversionError("LiteRT's quantizer refused it. More text")
    return real(model, mode, *args, **kwargs)

  monkeypatch.setattr(convert, "to_tflite", int4_fails)
  config = SearchConfig(time_budget=1e-3, max_accuracy_drop=100, modes=("int8", "int4"))
  result = search.search(trained_teacher, dataset, config, 1.0, FAST_EVALUATE, 20,
                         log=lambda line: None)
  assert [candidate.mode for candidate in result.candidates] == ["int8"]
  assert "as given, int4: LiteRT's quantizer refused it" in result.skipped
  monkeypatch.setattr(convert, "to_tflite", lambda *args, **kwargs: int4_fails(
      args[0], "int4"))
  with pytest.raises(search.SearchError, match="could not be converted and measured"):
    search.search(trained_teacher, dataset, config, 1.0, FAST_EVALUATE, 20,
                  log=lambda line: None)
