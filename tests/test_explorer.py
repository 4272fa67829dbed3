"""`tfopt inspect --explorer`: per-layer overlays as Model Explorer node data,
keyed so that Model Explorer's own .tflite adapter finds every node."""

import json
import os
import re

import pytest

from tfopt.cli import console
from tfopt.core.artifacts import write_bytes_atomic
from tfopt.litert import convert, explorer


def graph_tensor_names(path: str) -> set:
  """The output tensor names of the op nodes Model Explorer builds from the file."""
  adapter = pytest.importorskip("model_explorer.builtin_tflite_flatbuffer_adapter")
  graphs = json.loads(json.dumps(adapter.BuiltinTfliteFlatbufferAdapter().convert(path, {}),
                                 default=lambda value: value.__dict__))
  names = set()
  for collection in graphs["graphCollections"]:
    for graph in collection["graphs"]:
      for node in graph["nodes"]:
        if node["label"] == "pseudo_const":
          continue  # the weights themselves; overlays colour the ops
        names |= {attr["value"] for output in node["outputsMetadata"]
                  for attr in output["attrs"] if attr["key"] == "tensor_name"}
  return names


def test_overlays_are_written_and_match_the_graph_model_explorer_builds(
    trained_teacher, dataset, tmp_path, capsys, monkeypatch):
  path = write_bytes_atomic(str(tmp_path / "model_int4.tflite"), convert.to_tflite(
      trained_teacher, "int4", dataset.x_train, 50, int4_layers="block[23]|logits"))
  monkeypatch.chdir(tmp_path)
  assert console.main(["inspect", path, "--explorer"]) == 0
  printed = capsys.readouterr().out
  assert "model-explorer " + path + " --node_data_paths=" in printed
  folder = tmp_path / "model_int4.explorer"
  written = sorted(os.listdir(folder))
  assert written == ["model_int4.bits.json", "model_int4.distinct.json",
                     "model_int4.sparsity.json"]  # no run report beside it
  bits = json.loads((folder / "model_int4.bits.json").read_text())
  values = sorted(result["value"] for result in bits["results"].values())
  assert values == [4, 4, 4, 8]  # block1 stayed int8
  assert bits["gradient"][0]["stop"] == 0 and bits["gradient"][-1]["stop"] == 1
  keys = set(bits["results"])
  assert keys <= graph_tensor_names(path)  # every overlay value lands on a node


def test_a_file_in_a_run_dir_gets_latency_and_sensitivity_overlays(tmp_path):
  """report.json beside the file gives the latency share and sensitivity."""
  from conftest import synthetic_dataset  # pylint: disable=g-import-not-at-top
  from tfopt.keras_io import models  # pylint: disable=g-import-not-at-top
  data = synthetic_dataset(train=64, val=16, test=16)
  model = models.build_model("student", data.input_shape, 10)
  path = write_bytes_atomic(str(tmp_path / "student_int8.tflite"),
                            convert.to_tflite(model, "int8", data.x_train, 20))
  report = {"models": [{"name": "student int8", "path": "student_int8.tflite"}],
            "latency_breakdown": {"student int8": [
                {"layer": "block1_conv", "latency_us": 3.0},
                {"layer": "block2_conv", "latency_us": 1.0},
                {"layer": "logits", "latency_us": -0.1}]},  # timing noise reads as 0
            "sensitivity": {"points": [
                {"layer": "block1_conv", "sparsity": 0.5, "drop": 0.1},
                {"layer": "block1_conv", "sparsity": 0.9, "drop": 2.5},
                {"layer": "logits", "sparsity": 0.9, "drop": 0.4}]}}
  (tmp_path / "report.json").write_text(json.dumps(report))
  found = explorer.overlays(path)
  latency = {re.search(r"block\d_conv|StatefulPartitionedCall", key).group(0): value
             for key, value in found["latency_share"].items()}
  assert latency == {"block1_conv": 75.0, "block2_conv": 25.0, "StatefulPartitionedCall": 0.0}
  assert sorted(found["sensitivity"].values()) == [0.4, 2.5]
  (tmp_path / "report.json").write_text(json.dumps({"models": [{"path": "other.tflite"}]}))
  assert set(explorer.overlays(path)) == {"sparsity", "distinct", "bits"}
