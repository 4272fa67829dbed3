"""int8 diagnosis along the graph, MSE-clipped ranges and the repair, on real files."""

import numpy as np
import pytest

from tfopt.core._keras import keras
from tfopt.litert import evaluate, int8_fidelity, int8_ranges, int8_repair
from tfopt.stages import tflite_files
from tfopt.stages.report import ModelRow, Report


def _model_with_a_bad_layer():
  """A conv net whose middle Dense has one huge input weight per column: its
  per-channel int8 scale rounds every other weight of the layer to zero."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="good_conv")(inputs)
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(16, activation="relu", name="bad_dense")(x)
  model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
  kernel = model.get_layer("bad_dense").kernel.numpy()
  kernel[0, :] = 200.0
  model.get_layer("bad_dense").kernel.assign(kernel)
  return model


def _images(count, seed):
  return np.random.default_rng(seed).random((count, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def bad_model_repair():
  model = _model_with_a_bad_layer()
  # bad_dense holds most of this small model's weights: in float it makes the
  # file 3.2x larger, which this user allows (the default budget is 1.1x), and
  # a few µs more at batch 1, which a loaded host can double
  return model, int8_repair.repair(model, _images(128, 0), _images(200, 1), 64,
                                   size_ratio=4.0, latency_ratio=4.0, experiments=3)


def test_diagnosis_finds_the_layer_that_loses_the_signal(bad_model_repair):
  _, repair = bad_model_repair
  worst = repair.diagnosis[0]
  assert worst.layer == "bad_dense" and worst.op == "FULLY_CONNECTED"
  assert worst.drop_db > 10  # it loses more than 10 dB of its input's SNR by itself
  good = next(row for row in repair.diagnosis if row.layer == "good_conv")
  assert good.snr_db > worst.snr_db + 10


def test_repair_keeps_that_layer_float_and_recovers_the_outputs(bad_model_repair, tmp_path):
  _, repair = bad_model_repair
  assert repair.changed
  assert "bad_dense" in [layer for _, layer in repair.chosen.choice.float_ops]
  assert repair.plain.agreement < 0.5 and repair.chosen.agreement > 0.95
  assert repair.chosen.output_snr_db > repair.plain.output_snr_db + 3
  # the experiment that proved it is in the record, measured
  record = repair.to_record()
  experiment = next(c for c in record["candidates"] if c["purpose"].startswith(
      "experiment: bad_dense"))
  assert experiment["output_snr_db"] > record["plain"]["output_snr_db"]
  # the report names the layers whose change alone recovered the most
  from tfopt.stages import tflite_files as convert_stage  # pylint: disable=g-import-not-at-top
  lines = convert_stage._repair_lines("baseline int8", record)  # pylint: disable=protected-access
  text = "\n".join(lines)
  named = text.split("the three that recovered the most: ")[1]
  assert named.startswith("bad_dense (FULLY_CONNECTED") and " pp agreement, " in named
  # the written file: int8 input and output, builtins only, runs in LiteRT
  path = tmp_path / "repaired.tflite"
  path.write_bytes(repair.content)
  contents = evaluate.inspect_tflite(str(path))
  assert contents.input_dtype == "int8" and contents.output_dtype == "int8"
  assert "CUSTOM" not in contents.ops and contents.ops.get("DEQUANTIZE", 0) >= 1
  assert contents.weight_dtypes.get("float32") == 1  # bad_dense's kernel, and only it
  assert repair.chosen.tflite_bytes <= 4.0 * repair.plain.tflite_bytes


def test_repair_off_writes_the_plain_file_and_still_diagnoses():
  model = _model_with_a_bad_layer()
  repair = int8_repair.repair(model, _images(64, 0), _images(50, 1), 64, mode="off")
  assert not repair.changed and len(repair.candidates) == 1
  assert repair.chosen.choice == int8_repair.Choice()
  assert repair.diagnosis[0].layer == "bad_dense"
  plain = int8_repair.quantize(int8_repair.calibrate(model, _images(64, 0), 64),
                               int8_repair.Choice())
  assert repair.content == plain


def test_over_the_size_budget_bias_correction_is_what_helps():
  """bad_dense in float makes the file 3.2x larger: the default budget
  refuses it. Most of what its rounding loses is a mean shift of its
  outputs, which bias correction (no labels: calibration images only) gives
  back within the budget."""
  model = _model_with_a_bad_layer()
  repair = int8_repair.repair(model, _images(64, 0), _images(100, 1), 64, experiments=2)
  assert all(layer != "bad_dense" for _, layer in repair.chosen.choice.float_ops)
  over = [c for c in repair.candidates if not c.within_budget]
  assert over and all(c.tflite_bytes > repair.plain.tflite_bytes for c in over)
  assert repair.chosen.choice.bias_correction and not repair.chosen.choice.float_ops
  assert repair.plain.agreement < 0.2 and repair.chosen.agreement > 0.8
  assert repair.chosen.tflite_bytes <= 1.1 * repair.plain.tflite_bytes
  assert "bias-corrected" in repair.to_record()["chosen"]["choice"]["description"]
  # per-tensor weights for one op alone were tried (spliced into the file)
  assert any(c.choice.per_tensor_ops for c in repair.candidates)


def test_bad_calibration_data_is_refused_with_one_clear_message():
  model = _model_with_a_bad_layer()
  images = _images(32, 0)
  images[3, 0, 0, 0] = np.nan
  with pytest.raises(int8_repair.RepairError, match="1 of the 32 calibration images hold NaN"):
    int8_repair.repair(model, images, _images(10, 1), 32)
  with pytest.raises(int8_repair.RepairError, match="validation images hold NaN or inf"):
    int8_repair.repair(model, _images(32, 0), images, 32)


def test_a_model_with_non_finite_outputs_is_refused():
  inputs = keras.Input((4,))
  outputs = keras.layers.Lambda(lambda x: x / 0.0)(keras.layers.Dense(3)(inputs))
  model = keras.Model(inputs, outputs)
  images = np.ones((16, 4), np.float32)
  with pytest.raises(int8_repair.RepairError, match="outputs are NaN or inf"):
    int8_repair.repair(model, images, images, 16)


def test_best_range_clips_a_long_tail_and_keeps_a_full_range():
  bins = int8_ranges.BINS
  tail = 1000 * np.exp(-np.linspace(0, 100, bins) / 2.0)  # most values near 0, a long tail
  low, high = int8_ranges.best_range(tail, 0.0, 100.0)
  assert low == 0.0 and 10.0 < high < 40.0
  uniform = np.full(bins, 10.0)
  assert int8_ranges.best_range(uniform, -1.0, 1.0) == (-1.0, 1.0)


def test_clipped_ranges_lower_the_error_of_a_long_tailed_tensor():
  """exp() of a Dense output: log-normal activations, whose min/max range
  the tail sets; MSE-clipped ranges make a file closer to float."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((16,))
  hidden = keras.layers.Dense(32, name="hidden", kernel_initializer=(
      keras.initializers.RandomNormal(stddev=0.5)))(inputs)
  hidden = keras.layers.Activation("exponential", name="tail")(hidden)
  model = keras.Model(inputs, keras.layers.Dense(8, name="out")(hidden))
  rng = np.random.default_rng(0)
  calibration = rng.normal(size=(512, 16)).astype(np.float32)
  calibrated = int8_repair.calibrate(model, calibration, 512)
  clipped = int8_ranges.clip_ranges(calibrated, calibration)
  moved = int8_ranges.changed_ranges(calibrated, clipped)
  assert moved and all(before[0] <= after[0] <= after[1] <= before[1] for before, after in
                       ((row["before"], row["after"]) for row in moved))
  unseen = rng.normal(size=(300, 16)).astype(np.float32)
  reference = int8_fidelity.FileRunner(calibrated).predict(unseen)
  snr = {name: int8_fidelity.output_snr_db(reference, int8_fidelity.FileRunner(
      int8_repair.quantize(statistics, int8_repair.Choice())).predict(unseen))
         for name, statistics in (("min/max", calibrated), ("clipped", clipped))}
  assert snr["clipped"] > snr["min/max"] + 1


def test_measure_diagnoses_a_file_made_elsewhere(tmp_path, capsys):
  """`tfopt measure FILE --float_file F`: a plain converter int8 file, made
  outside tfopt, diagnosed against its float file."""
  from tfopt.cli import measure  # pylint: disable=g-import-not-at-top
  from tfopt.litert import convert
  model = _model_with_a_bad_layer()
  float_path, int8_path = tmp_path / "float.tflite", tmp_path / "int8.tflite"
  float_path.write_bytes(convert.to_tflite(model, "float32"))
  int8_path.write_bytes(convert.to_tflite(model, "int8", _images(64, 0), 64))
  fidelity = measure.diagnose_file(str(int8_path), str(float_path), _images(40, 1))
  assert fidelity["worst_ops"][0]["layer"] == "bad_dense"
  assert fidelity["agreement"] < 0.9
  with pytest.raises(evaluate.TFLiteError, match="does not exist"):
    measure.diagnose_file(str(int8_path), str(tmp_path / "missing.tflite"), _images(4, 1))


def test_inspect_diagnoses_a_file_against_its_float_file(tmp_path, capsys):
  """`tfopt inspect FILE --float_file F`: with no data, on random inputs over
  the int8 file's input range; with --images, on those; bad --images: exit 2."""
  import json  # pylint: disable=g-import-not-at-top
  from tfopt.cli import console  # pylint: disable=g-import-not-at-top
  from tfopt.litert import convert
  model = _model_with_a_bad_layer()
  float_path, int8_path = tmp_path / "float.tflite", tmp_path / "int8.tflite"
  float_path.write_bytes(convert.to_tflite(model, "float32"))
  int8_path.write_bytes(convert.to_tflite(model, "int8", _images(64, 0), 64))
  assert console.main(["inspect", str(int8_path), "--float_file", str(float_path)]) == 0
  text = capsys.readouterr().out
  assert "diagnosis on 64 random inputs over the file's input range" in text
  assert text.split("diagnosis on")[1].splitlines()[2].split()[0] == "bad_dense"
  images = tmp_path / "x.npy"
  np.save(images, _images(30, 1))
  assert console.main(["inspect", str(int8_path), "--float_file", str(float_path),
                       "--images", str(images), "--json"]) == 0
  fidelity = json.loads(capsys.readouterr().out)["fidelity"]
  assert fidelity["examples"] == 30 and fidelity["worst_ops"][0]["layer"] == "bad_dense"
  np.save(images, np.zeros((3, 5), np.float32))
  assert console.main(["inspect", str(int8_path), "--float_file", str(float_path),
                       "--images", str(images)]) == 2
  assert "holds inputs of shape (5,); the file takes (8, 8, 3)" in capsys.readouterr().err


def test_a_candidate_must_agree_significantly_more_not_by_chance():
  base = np.ones(1000, bool)
  base[100:160] = False  # the plain file misses 60 of 1,000 images

  def candidate(gained, lost, snr=20.0):
    agrees = base.copy()
    agrees[100:100 + gained] = True  # images only this file agrees on
    agrees[:lost] = False  # images only the plain file agrees on
    return int8_repair.Candidate(int8_repair.Choice(), "", float(agrees.mean()), snr, 1, 1.0,
                                 agrees=agrees)
  plain = candidate(0, 0)
  assert not candidate(8, 2).beats(plain)  # +6 images of 1,000: chance
  assert candidate(8, 2, snr=21.5).beats(plain)  # ... with 1.5 dB less output noise
  assert not candidate(2, 8, snr=25.0).beats(plain)  # fewer agree: SNR does not make up
  assert candidate(50, 10).beats(plain) and not plain.beats(candidate(50, 10))


def test_a_recipe_that_cannot_be_made_costs_one_candidate_not_the_run(monkeypatch):
  from tfopt.litert import int8_bias_correction  # pylint: disable=g-import-not-at-top

  def broken(*_, **__):
    raise RuntimeError("Node number 2 (FULLY_CONNECTED) failed to prepare.")
  monkeypatch.setattr(int8_bias_correction, "correct", broken)
  repair = int8_repair.repair(_model_with_a_bad_layer(), _images(64, 0), _images(50, 1), 64,
                              experiments=1)
  assert not repair.chosen.choice.bias_correction
  (recipe, why), = repair.to_record()["failed"].items()
  assert "bias-corrected" in recipe and "failed to prepare" in why


def test_a_layer_with_no_int8_kernel_stays_float_and_is_named():
  """tf.math.cos has no integer kernel in LiteRT: the converter keeps it
  float between DEQUANTIZE and QUANTIZE, and the record names it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Lambda(tf.math.cos, name="cosine")(keras.layers.Conv2D(4, 3)(inputs))
  model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
  repair = int8_repair.repair(model, _images(64, 0), _images(40, 1), 64, mode="off")
  assert repair.to_record()["kept_float"] == ["cosine (COS)"]
  assert int8_fidelity.float_ops(repair.content)[0][:2] == ("COS", "cosine")


def _row(name, agreement):
  return ModelRow(name=name, path=f"{name}.tflite", accuracy=0.9, tflite_bytes=100,
                  gzip_bytes=90, latency_us=10.0, params=10, nonzero_params=10, macs=100,
                  agreement=agreement, weight_sparsity=0.0, input_dtype="int8",
                  weight_dtypes={"int8": 1})


def test_the_report_names_the_runs_qat_files_as_the_next_step_below_the_target():
  """The QAT rows come from the QAT section (typed), not from words in row names."""
  record = {"chosen": {"agreement": 0.95}}
  rows = [_row("pruned student int8", 0.95), _row("QAT-like name student int8", 0.97),
          _row("pruned, PQAT student int8", 0.985)]
  report = Report("mnist", 100, "baseline", rows, {}, {}, {}, {}, {}, sections={
      "qat": [{"row": "pruned, PQAT student int8", "mode": "int8"}]})
  text = " ".join(tflite_files._next_step(report, "pruned student int8", record))
  assert "QAT in this run: pruned, PQAT student int8 agrees with its Keras model on 98.50%" in text
  assert "QAT-like name" not in text
  report.sections["qat"] = []
  assert "Quantization-aware training is the next step" in " ".join(
      tflite_files._next_step(report, "pruned student int8", record))
  assert tflite_files._next_step(report, "x", {"chosen": {"agreement": 0.995}}) == []
