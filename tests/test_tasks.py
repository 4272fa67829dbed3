"""Any one-input model on the user's own task: tfopt.compress and --task files."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

keras3 = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from tfopt.config import registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from tfopt.core._keras import keras as tf_keras  # pylint: disable=g-import-not-at-top,wrong-import-position
from tfopt.core.errors import TfoptError  # pylint: disable=g-import-not-at-top,wrong-import-position
from tfopt.run import task_run  # pylint: disable=g-import-not-at-top,wrong-import-position
from tfopt.stages.base import Stage, TaskStage  # pylint: disable=g-import-not-at-top,wrong-import-position
from tfopt.task import file as task_file
from tfopt.task.definition import TaskError  # pylint: disable=g-import-not-at-top,wrong-import-position


def two_head_detector():
  """A tiny YOLO-style net in Keras 3: LeakyReLU, a residual block, an
  upsample + concatenate neck and two dict-named heads."""
  layers = keras3.layers
  inputs = keras3.Input((32, 32, 1))
  x = layers.LeakyReLU(0.1)(layers.Conv2D(8, 3, strides=2, padding="same")(inputs))
  skip = layers.Add()([x, layers.LeakyReLU(0.1)(layers.Conv2D(8, 3, padding="same")(x))])
  deep = layers.LeakyReLU(0.1)(layers.Conv2D(16, 3, strides=2, padding="same")(skip))
  up = layers.UpSampling2D()(layers.Conv2D(8, 1)(deep))
  neck = layers.Concatenate()([up, skip])
  outputs = {"coarse": layers.Conv2D(6, 1, name="coarse_head")(deep),
             "fine": layers.Conv2D(6, 1, name="fine_head")(neck)}
  return keras3.Model(inputs, outputs, name="tiny_yolo")


def detector_data(count=96, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random((count, 32, 32, 1)).astype("float32")
  pooled = x.reshape(count, 8, 4, 8, 4).mean(axis=(2, 4))  # a learnable target
  y = {"coarse": np.repeat(pooled[..., None], 6, -1),
       "fine": np.repeat(np.repeat(np.repeat(pooled[..., None], 2, 1), 2, 2), 6, -1)}
  return x, y


def mean_abs_error_coarse(y_true, y_pred):
  return float(np.mean(np.abs(y_true["coarse"] - y_pred["coarse"])))


def test_a_two_head_keras3_detector_on_tf_data_is_pruned_and_measured(tmp_path):
  model = two_head_detector()
  x, y = detector_data()
  data = tf.data.Dataset.from_tensor_slices((x, y))
  report = task_run.compress(
      model, train=data.take(64).batch(16), val=data.skip(64).take(16).batch(16),
      test=data.skip(80), loss={"coarse": "mse", "fine": keras3.losses.MeanSquaredError()},
      metrics={"coarse": ["mae"], "fine": [keras3.metrics.MeanAbsoluteError(name="mae")]},
      score=mean_abs_error_coarse, higher_is_better=False, batch_size=16,
      settings={"prune": {"epochs": 1}},
      output_dir=str(tmp_path / "run"))
  names = [row.name for row in report.rows]
  assert names == ["baseline Keras", "baseline float32", "baseline int8", "pruned Keras",
                   "pruned float32", "pruned int8"]
  keras_row, float_row, int8_row = report.rows[:3]
  # The float32 file in LiteRT computes what the Keras model computes.
  assert float_row.metrics == pytest.approx(keras_row.metrics, rel=1e-4)
  assert float_row.score == pytest.approx(keras_row.score, rel=1e-4)
  assert {item.output for item in int8_row.fidelity} == {"coarse", "fine"}
  assert all(item.cosine > 0.99 for item in int8_row.fidelity)
  assert int8_row.tflite_bytes < float_row.tflite_bytes
  assert set(keras_row.metrics) == {"loss", "coarse/mean_absolute_error", "fine/mae"}
  assert report.stages["pruned"]["sparsity"] > 0.45
  # A task row is a FileRow: the file's figures and its Keras model's parameter
  # counts, the pruned model's zeros among them, in task_report.json too.
  rows = {row.name: row for row in report.rows}
  assert rows["pruned int8"].params == rows["baseline int8"].params
  assert rows["pruned int8"].nonzero_params < 0.7 * rows["baseline int8"].nonzero_params
  assert keras_row.tflite_bytes is None and keras_row.macs == rows["pruned int8"].macs > 0
  assert (keras_row.path, rows["pruned int8"].path) == (None, "pruned_int8.tflite")
  saved_rows = json.loads((tmp_path / "run" / "task_report.json").read_text())["rows"]
  assert list(saved_rows[1])[:9] == [
      "name", "path", "accuracy", "tflite_bytes", "gzip_bytes", "latency_us", "params",
      "nonzero_params", "macs"]
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  pruned = keras.models.load_model(str(tmp_path / "run" / "pruned.keras"), compile=False)
  kernel = pruned.get_layer("fine").kernel.numpy()  # the output layers take the keys' names
  assert np.mean(kernel == 0) >= 0.45
  bundle = json.loads((tmp_path / "run" / "deploy" / "model.json").read_text())
  assert [output["name"] for output in bundle["outputs"]] == ["coarse", "fine"]
  assert [output["shape"][1:] for output in bundle["outputs"]] == [[8, 8, 6], [16, 16, 6]]
  assert bundle["outputs"][0]["dtype"] == "int8" and bundle["outputs"][0]["scale"] > 0
  assert "| pruned int8 |" in (tmp_path / "run" / "task_report.md").read_text()
  # The edge example runs the two-output bundle without TensorFlow, each output
  # by its name, as LiteRT ran the file for the report.
  np.save(tmp_path / "inputs.npy", x[80:84])
  done = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "edge_task.py"),
                         str(tmp_path / "run" / "deploy"), str(tmp_path / "inputs.npy"),
                         "--out", str(tmp_path / "outputs.npz")], capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  edge = np.load(tmp_path / "outputs.npz")
  from tfopt.litert import int8_fidelity  # pylint: disable=g-import-not-at-top
  from tfopt.task import measure as task_measure
  runner = int8_fidelity.FileRunner((tmp_path / "run" / "pruned_int8.tflite").read_bytes())
  runner.invoke([x[80:84]])
  values = runner.output_values()
  for name, position in zip(("coarse", "fine"),
                            task_measure.file_outputs(runner, ["coarse", "fine"])):
    np.testing.assert_allclose(edge[name], values[position], atol=1e-6)
  # tfopt's saved model names its outputs as the data does, so it takes the
  # same task again (e.g. a later stage on it).
  again = task_run.compress(
      str(tmp_path / "run" / "pruned.keras"), train=data.take(64).batch(16),
      test=data.skip(80), loss={"coarse": "mse", "fine": "mse"}, batch_size=16, stages=[],
      quant_modes=("float32",), output_dir=str(tmp_path / "again"))
  assert [output["name"] for output in again.outputs] == ["coarse", "fine"]


def test_targets_that_do_not_match_the_outputs_are_refused_before_anything_is_written(tmp_path):
  model = two_head_detector()
  x, y = detector_data(16)
  missing = tf.data.Dataset.from_tensor_slices((x, {"coarse": y["coarse"]})).batch(8)
  with pytest.raises(TaskError) as error:
    task_run.compress(model, train=missing, test=missing, loss="mse",
                      output_dir=str(tmp_path / "run"))
  assert "outputs with no target: ['fine']" in str(error.value)
  assert "coarse: (8, 8, 6), fine: (16, 16, 6)" in str(error.value)  # the model's
  assert "coarse: float32(None, 8, 8, 6)" in str(error.value)  # the data's
  wrong = tf.data.Dataset.from_tensor_slices((x, {"coarse": y["coarse"], "fine": y["coarse"]}))
  with pytest.raises(TaskError, match="output 'fine' and its target disagree"):
    task_run.compress(model, train=wrong, test=wrong, loss="mse",
                      output_dir=str(tmp_path / "run"))
  with pytest.raises(TaskError, match="do not take a task yet"):
    task_run.compress(model, train=wrong, test=wrong, stages=["bitwidth"],
                      output_dir=str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


class Digits(keras3.utils.PyDataset):
  """A PyDataset of (images, one-hot labels) batches, as the Keras guides write one."""

  def __init__(self, x, y, batch):
    super().__init__()
    self.x, self.y, self.batch = x, y, batch

  def __len__(self):
    return len(self.x) // self.batch

  def __getitem__(self, index):
    part = slice(index * self.batch, (index + 1) * self.batch)
    return self.x[part], np.eye(3, dtype="float32")[self.y[part]]


def small_classifier():
  inputs = keras3.Input((12,))
  hidden = keras3.layers.Dense(16, activation="relu")(inputs)
  return keras3.Model(inputs, keras3.layers.Dense(3)(hidden), name="small")


def test_numpy_tuples_a_py_dataset_and_the_compiled_loss_are_taken(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(120, 12)).astype("float32")
  labels = np.argmax(x[:, :3], axis=1)
  model = small_classifier()
  model.compile(keras3.optimizers.Adam(0.02), metrics=["accuracy"],
                loss=keras3.losses.CategoricalCrossentropy(from_logits=True))
  model.fit(x, np.eye(3)[labels], epochs=40, verbose=0)
  report = task_run.compress(model, train=Digits(x[:96], labels[:96], 16),
                             test=(x[96:], np.eye(3, dtype="float32")[labels[96:]]),
                             stages=[], quant_modes=("float32", "int8", "int4"),
                             output_dir=str(tmp_path / "run"))
  keras_row, _, int8_row, int4_row = report.rows
  assert keras_row.metrics["accuracy"] > 0.8  # "accuracy" on one-hot targets
  assert int8_row.fidelity[0].agreement > 0.9  # class scores: top-1 agreement
  assert int4_row.name == "baseline int4" and int4_row.fidelity[0].cosine > 0.9
  assert report.outputs[0]["meaning"] == "class scores"


def test_a_metric_that_is_not_finite_is_named_with_its_row(tmp_path):
  x = np.random.default_rng(0).normal(size=(32, 12)).astype("float32")
  data = (x, np.zeros((32, 3), "float32"))

  def broken(y_true, y_pred):
    return tf.reduce_mean(y_pred) * np.nan
  with pytest.raises(TaskError, match="The broken of baseline Keras is nan"):
    task_run.compress(small_classifier(), train=data, test=data, loss="mse",
                      metrics=[broken], stages=[], output_dir=str(tmp_path / "run"))


def write(path, text):
  path.write_text(text)
  return str(path)


def test_a_task_file_that_fails_is_named_with_its_line(tmp_path):
  with pytest.raises(TaskError, match=r"bad\.py failed at line 3: ZeroDivisionError"):
    task_file.load_task_file(write(tmp_path / "bad.py", "import numpy\n\nx = 1 / 0\n"))
  with pytest.raises(TaskError, match="does not define test"):
    task_file.load_task_file(write(tmp_path / "partial.py", "train = (1, 2)\n"))
  with pytest.raises(TaskError, match=r"train\(\) failed at line 2"):
    task_file.load_task_file(write(tmp_path / "lazy.py",
                                   "def train():\n  raise OSError('no data here')\ntest = 1\n"))
  loaded = task_file.load_task_file(write(tmp_path / "good.py", (
      "import numpy as np\n"
      "def train():\n  return (np.zeros((4, 2)), np.zeros(4))\n"
      "test = train\nloss = 'mse'\n"
      "def score(y_true, y_pred):\n  return 0.0\n")))
  assert set(loaded) == {"train", "test", "loss", "score"}
  assert loaded["train"][0].shape == (4, 2) and callable(loaded["score"])


def test_the_anomaly_example_runs_as_a_task_file_from_the_command_line(mnist_dir, tmp_path):
  env = {"TFOPT_DATA_DIR": mnist_dir, "TASK_EXAMPLES": "700", "PATH": "/usr/bin:/bin"}
  example = str(REPO_ROOT / "examples" / "tasks" / "anomaly_autoencoder.py")
  model = str(tmp_path / "ae.keras")
  subprocess.run([sys.executable, example, "--train_only", "--model", model, "--epochs", "2"],
                 env=env, check=True, capture_output=True, cwd=tmp_path)
  # The example's task with stage settings of its own; a flag goes over them.
  task = write(tmp_path / "ae_task.py", (
      f"import sys\nsys.path.insert(0, {str(REPO_ROOT / 'examples' / 'tasks')!r})\n"
      "from anomaly_autoencoder import train, val, test, loss, score, score_name\n"
      "settings = {'sensitivity': {'sparsities': (0.5, 0.9), 'target_sparsity': 0.8,"
      " 'examples': 200, 'metric': 'loss'}, 'prune': {'epochs': 3}}\n"))
  done = subprocess.run(
      [sys.executable, "-m", "tfopt", "compress", "--model", model, "--task", task,
       "--stages", "sensitivity", "--prune_epochs", "1", "--sensitivity_target_sparsity",
       "0.7", "--sensitivity.target_sparsity=0.6", "--output_dir", str(tmp_path / "run")],
      env=env, capture_output=True, text=True, cwd=tmp_path)
  assert done.returncode == 0, done.stderr[-2000:]
  # The task file's dataset.map lambda is converted (its module is registered).
  assert "AutoGraph could not transform" not in done.stderr
  report = json.loads((tmp_path / "run" / "task_report.json").read_text())
  assert report["score"] == {"name": "roc_auc", "higher_is_better": True}
  record = report["stages"]["sensitivity_pruned"]
  # The reconstruction loss on normal digits judges the layers (the AUC needs
  # the test set's anomaly labels); the report gives the AUC of every file.
  assert record["objective"] == "loss" and record["higher_is_better"] is False
  assert {point["sparsity"] for point in record["points"]} == {0.5, 0.9}
  assert record["target_sparsity"] == 0.6 and record["overall_sparsity"] >= 0.6
  rows = {row["name"]: row for row in report["rows"]}
  assert 0 <= rows["sensitivity_pruned int8"]["score"] <= 1
  assert rows["sensitivity_pruned int8"]["fidelity"][0]["cosine"] > 0.99
  # A task row names its figures as the classifier report's rows do.
  assert (rows["sensitivity_pruned int8"]["tflite_bytes"]
          < rows["baseline float32"]["tflite_bytes"])
  for flags, message in ((["--max_accuracy_drop", "2"],
                          "--max_accuracy_drop does not apply to a --task run"),
                         (["--teacher.epochs=3"], "--set teacher.epochs: a --task run's "
                          "settings are its stages'"),
                         (["--stages", "sensitivity", "--sensitivity_sparsities", "0.5"],
                          "sensitivity: the objective roc_auc cannot be measured on the "
                          "validation data: roc_auc raised IndexError")):
    bad = subprocess.run(
        [sys.executable, "-m", "tfopt", "compress", "--model", model, "--task", example,
         "--output_dir", str(tmp_path / "bad")] + flags,
        env=env, capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr[-1000:]
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()


def small_unet():
  """A Keras 3 U-Net as the segmentation tutorials write it, tiny."""
  layers = keras3.layers
  inputs = keras3.Input((16, 16, 1))
  skip = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inputs)))
  down = layers.ReLU()(layers.BatchNormalization()(
      layers.Conv2D(16, 3, strides=2, padding="same")(skip)))
  up = layers.Conv2DTranspose(8, 2, strides=2)(down)
  up = layers.ReLU()(layers.BatchNormalization()(up))
  joined = layers.Concatenate()([up, skip])
  x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(joined)))
  return keras3.Model(inputs, layers.Conv2D(3, 1, name="mask")(x), name="unet")


def test_slim_shrinks_a_unet_through_its_transposed_convs_and_skips(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.random((64, 16, 16, 1)).astype("float32")
  masks = (x[..., 0] > 0.33).astype("int64") + (x[..., 0] > 0.66)
  data = tf.data.Dataset.from_tensor_slices((x, masks)).batch(16)
  report = task_run.compress(
      small_unet(), train=data, test=data.take(2), stages=["slim", "prune"],
      loss=keras3.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=[keras3.metrics.MeanIoU(3, sparse_y_pred=False, name="iou")],
      settings={"slim": {"finetune_epochs": 1, "prune_count": 1},
                "prune": {"epochs": 1}}, output_dir=str(tmp_path / "run"))
  record = report.stages["slimmed"]
  assert record["params"][-1] < 0.5 * record["params"][0]
  assert record["macs"][-1] < 0.5 * record["macs"][0]
  assert any("conv2d_transpose" in name for group in record["groups"].values()
             for name in group)  # the up stage lost channels too
  rows = {row.name: row for row in report.rows}
  assert rows["slimmed float32"].tflite_bytes < 0.6 * rows["baseline float32"].tflite_bytes
  assert rows["slimmed_pruned int8"].fidelity[0].cosine > 0.99
  assert 0 <= rows["slimmed_pruned int8"].metrics["iou"] <= 1
  bundle = json.loads((tmp_path / "run" / "deploy" / "model.json").read_text())
  assert bundle["source"]["row"] == "slimmed_pruned int8"


@dataclasses.dataclass(frozen=True)
class RoundConfig:
  """Every weight rounded to a grid.

  decimals: digits kept after the point.
  """
  decimals: int = 3


def _round_on_task(run, model, config: RoundConfig):
  model.set_weights([np.round(weights, config.decimals) for weights in model.get_weights()])
  run.add(run.name("rounded"), model, {"decimals": config.decimals})
  return model


def _check_round(model, task, config: RoundConfig, stages):
  del model, task, stages
  if config.decimals < 0:
    raise TaskError(f"round: decimals={config.decimals}; give 0 or more.")


class RoundStage(Stage):
  """A technique from outside tfopt: its task stage comes with its registration."""
  name, config_class = "round", RoundConfig
  on_task = TaskStage(RoundConfig, _round_on_task, defaults={"decimals": 1},
                      check=_check_round)


def test_a_stage_registered_from_outside_tfopt_runs_on_a_task(tmp_path):
  rng = np.random.default_rng(0)
  data = (rng.normal(size=(64, 12)).astype("float32"), rng.normal(size=(64, 3)).astype("float32"))
  registry.register(RoundStage())
  try:
    assert list(task_run.task_stages())[-1] == "round"
    report = task_run.compress(small_classifier(), train=data, test=data, loss="mse",
                               stages=["round"], output_dir=str(tmp_path / "run"))
    assert [row.name for row in report.rows] == [
        "baseline Keras", "baseline float32", "baseline int8", "rounded Keras",
        "rounded float32", "rounded int8"]
    assert report.stages["rounded"]["decimals"] == 1  # the stage's task default
    saved = tf_keras.models.load_model(tmp_path / "run" / "rounded.keras")  # tf_keras's file
    assert all(np.allclose(weights, np.round(weights, 1)) for weights in saved.get_weights())
    with pytest.raises(TaskError, match="round: decimals=-1; give 0 or more"):
      task_run.compress(small_classifier(), train=data, test=data, loss="mse",
                        stages=["round"], settings={"round": {"decimals": -1}},
                        output_dir=str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()
  finally:
    registry.unregister("round")
  with pytest.raises(TaskError, match="do not take a task yet"):
    task_run.compress(small_classifier(), train=data, test=data, loss="mse",
                      stages=["round"], output_dir=str(tmp_path / "bad"))


def test_stage_settings_are_checked_by_their_config(tmp_path):
  data = (np.zeros((8, 12), "float32"), np.zeros((8, 3), "float32"))
  with pytest.raises(TfoptError, match="rate"):
    task_run.compress(small_classifier(), train=data, test=data, loss="mse",
                      stages=["slim"], settings={"slim": {"rate": 2.0}},
                      output_dir=str(tmp_path / "run"))
  with pytest.raises(TaskError, match=r"not task stages"):
    task_run.compress(small_classifier(), train=data, test=data, loss="mse",
                      settings={"bitwidth": {"bits": 4}}, output_dir=str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_distill_trains_a_half_width_student_per_output_with_its_scratch_control(tmp_path):
  """Two outputs: class scores (KL at a temperature) and a regression (MSE)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(256, 12)).astype("float32")
  inputs = keras3.Input((12,))
  hidden = keras3.layers.Dense(32, activation="relu")(keras3.layers.Dense(32, activation="relu")(inputs))
  teacher = keras3.Model(inputs, {"kind": keras3.layers.Dense(3, name="kind")(hidden),
                                  "size": keras3.layers.Dense(1, name="size")(hidden)})
  targets = {"kind": np.argmax(x[:, :3], 1), "size": x[:, 3:4] * 2}
  teacher.compile(keras3.optimizers.Adam(0.01),
                  loss={"kind": keras3.losses.SparseCategoricalCrossentropy(from_logits=True),
                        "size": "mse"})
  teacher.fit(x, targets, epochs=30, verbose=0)
  data = tf.data.Dataset.from_tensor_slices((x, targets)).batch(32)
  report = task_run.compress(
      teacher, train=data, test=data.take(2), stages=["distill"],
      metrics={"kind": ["accuracy"]},
      settings={"distill": {"width": 0.5, "epochs": 3, "compare_scratch": True}},
      output_dir=str(tmp_path / "run"))
  record = report.stages["distilled"]
  assert record["params"] < 0.4 * record["teacher_params"]
  names = [row.name for row in report.rows]
  assert "distilled int8" in names and "distilled_scratch int8" in names
  student = {row.name: row for row in report.rows}["distilled Keras"]
  assert 0 <= student.metrics["kind/accuracy"] <= 1 and student.metrics["loss"] > 0
  bundle = json.loads((tmp_path / "run" / "deploy" / "model.json").read_text())
  assert bundle["source"]["row"] == "distilled int8"  # the control is not deployed
  assert [output["meaning"] for output in bundle["outputs"]] == ["class scores", "values"]


def test_distillation_losses_are_chosen_per_output():
  from tfopt.task import definition as task  # pylint: disable=g-import-not-at-top
  from tfopt.techniques.distill.on_task import distill_losses  # pylint: disable=g-import-not-at-top
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((4,))
  model = keras.Model(inputs, [keras.layers.Dense(3, name="kind")(inputs),
                               keras.layers.Dense(3, activation="softmax", name="probs")(inputs),
                               keras.layers.Dense(2, name="box")(inputs)])
  data = (np.zeros((4, 4), "float32"), {"kind": np.zeros(4), "probs": np.zeros(4),
                                        "box": np.zeros((4, 2), "float32")})
  fitted = task.make_task(model, data, data, loss={
      "kind": keras3.losses.SparseCategoricalCrossentropy(from_logits=True),
      "probs": "sparse_categorical_crossentropy", "box": "mse"})
  kl_logits, kl_probabilities, mse = distill_losses(fitted, model, temperature=4.0)
  logits = tf.constant([[2.0, 0.0, -1.0]])
  assert float(kl_logits(logits, logits)) == pytest.approx(0, abs=1e-5)
  assert float(kl_logits(logits, tf.constant([[0.0, 2.0, -1.0]]))) > 0.1
  # A softmax head is softened at the same temperature as logits: the same
  # loss from its probabilities as from the logits behind them.
  other = tf.constant([[0.0, 2.0, -1.0]])
  assert float(kl_probabilities(tf.nn.softmax(logits), tf.nn.softmax(other))) == pytest.approx(
      float(kl_logits(logits, other)), rel=1e-4)
  assert float(kl_probabilities(tf.nn.softmax(logits), tf.nn.softmax(logits))) == pytest.approx(
      0, abs=1e-5)
  assert float(mse(tf.constant([[1.0, 3.0]]), tf.constant([[0.0, 1.0]]))) == pytest.approx(2.5)


def _regression_mlp(seed=0):
  """A trained MLP on a regression task (in Keras 3, compiled with its loss)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(256, 16)).astype("float32")
  y = np.tanh(x[:, :4] @ rng.normal(size=(4, 8))).astype("float32")
  inputs = keras3.Input((16,))
  hidden = keras3.layers.Dense(64, activation="relu", name="hidden_1")(inputs)
  hidden = keras3.layers.Dense(64, activation="relu", name="hidden_2")(hidden)
  model = keras3.Model(inputs, keras3.layers.Dense(8, name="values")(hidden), name="mlp")
  model.compile(keras3.optimizers.Adam(0.01), loss="mse")
  model.fit(x, y, epochs=20, verbose=0)
  return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


def test_lowrank_prune_cluster_and_qat_chain_on_a_regression_task(tmp_path):
  model, data = _regression_mlp()
  report = task_run.compress(
      model, train=data, test=data.take(2), metrics=["mae"],
      stages=["prune", "cluster", "qat"],
      settings={"prune": {"epochs": 1}, "cluster": {"epochs": 1, "number_of_clusters": 8},
                "qat": {"epochs": 1}}, output_dir=str(tmp_path / "run"))
  names = [row.name for row in report.rows]
  chain = "pruned_clustered_qat"
  assert f"{chain} int8" in names and f"{chain} float32" not in names  # QAT: int8 only
  assert report.stages[chain]["scheme"] == "pcqat"
  assert report.stages["pruned_clustered"]["preserve_sparsity"] is True
  assert all(distinct <= 9 for _, distinct in report.stages["pruned_clustered"]["kernels"].values())
  final = {row.name: row for row in report.rows}[f"{chain} int8"]
  assert final.fidelity[0].cosine > 0.99
  factorized = task_run.compress(
      model, train=data, test=data.take(2), stages=["lowrank"],
      settings={"lowrank": {"finetune_epochs": 1, "layers": ("hidden_2",)}},
      output_dir=str(tmp_path / "lowrank"))
  assert factorized.stages["factorized"]["layers"]["hidden_2"] < 64
  for stages, message in ((["qat", "prune"], "qat must be the last stage"),
                          (["lowrank", "qat"], "qat cannot follow lowrank")):
    with pytest.raises(TaskError, match=message):
      task_run.compress(model, train=data, test=data, stages=stages,
                        output_dir=str(tmp_path / "other"))


def test_a_keras2_model_object_with_a_nested_backbone_is_taken(tmp_path):
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  inner_in = keras.Input((8, 8, 1))
  backbone = keras.Model(inner_in, keras.layers.Conv2D(4, 3, padding="same")(inner_in),
                         name="backbone")
  inputs = keras.Input((8, 8, 1))
  features = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
  model = keras.Model(inputs, keras.layers.Dense(2)(features))
  x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
  prepared = task_run.prepare(model, train=(x, np.zeros((16, 2), "float32")),
                              test=(x, np.zeros((16, 2), "float32")), loss="mse",
                              stages=["slim"], settings={"slim": {"criterion": "l1"}})
  assert not any(isinstance(layer, keras.Model) for layer in prepared.model.layers)


def test_sensitivity_chooses_sparsities_by_a_lower_is_better_metric(tmp_path):
  model, data = _regression_mlp()
  report = task_run.compress(
      model, train=data, val=data.take(4), test=data.take(2), loss="mse", metrics=["mae"],
      stages=["sensitivity", "qat"],
      settings={"sensitivity": {"metric": "mean_absolute_error", "sparsities": (0.3, 0.6, 0.9),
                                "max_drop": 0.02},
                "prune": {"epochs": 1}, "qat": {"epochs": 1}}, output_dir=str(tmp_path / "run"))
  record = report.stages["sensitivity_pruned"]
  assert record["objective"] == "mean_absolute_error" and record["higher_is_better"] is False
  drops = {(point["layer"], point["sparsity"]): point["drop"] for point in record["points"]}
  values = {(point["layer"], point["sparsity"]): point["value"] for point in record["points"]}
  # Lower is better: a drop is the error's rise, so pruning 90 % of the first
  # layer is a positive drop, and its MAE is higher than at 30 %.
  assert drops[("hidden_1", 0.9)] > 0.02
  assert values[("hidden_1", 0.9)] > values[("hidden_1", 0.3)]
  # Each layer takes the highest sparsity whose MAE rises by at most 0.02.
  for layer, chosen in record["chosen"].items():
    assert chosen == 0 or drops[(layer, chosen)] <= 0.02
    assert all(drops[(layer, sparsity)] > 0.02 for sparsity in (0.3, 0.6, 0.9)
               if sparsity > chosen)
  assert record["overall_sparsity"] > 0
  names = [row.name for row in report.rows]
  assert "uniform_pruned int8" in names and "sensitivity_pruned int8" in names
  # QAT after sensitivity keeps its zeros (PQAT): the run knows the chain was
  # pruned from the stage, not from a model's name.
  assert report.stages["sensitivity_pruned_qat"]["scheme"] == "pqat"
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  pruned = keras.models.load_model(str(tmp_path / "run" / "sensitivity_pruned.keras"),
                                   compile=False)
  for layer, sparsity in record["chosen"].items():
    zeros = np.mean(pruned.get_layer(layer).kernel.numpy() == 0)
    assert zeros == pytest.approx(sparsity, abs=0.02), layer
  markdown = (tmp_path / "run" / "task_report.md").read_text()
  assert "## Sensitivity scan of sensitivity_pruned: drop of mean_absolute_error" in markdown
  with pytest.raises(TaskError, match="not measured by the task; choose score, loss or "
                     "one of its metrics: mean_absolute_error"):
    task_run.compress(model, train=data, test=data, metrics=["mae"], stages=["sensitivity"],
                      settings={"sensitivity": {"metric": "iou"}},
                      output_dir=str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()


def test_search_finds_a_smaller_file_within_the_drop_of_a_lower_is_better_loss(tmp_path):
  model, data = _regression_mlp()

  def test_set_score(y_true, y_pred):  # reads the test set's side labels, as the AE's does
    if len(y_true) != 64:
      raise ValueError("only the 64 test examples have labels")
    return float(np.mean(np.abs(y_true - y_pred)))

  report = task_run.compress(
      model, train=data, val=data.take(4), test=data.take(2), loss="mse", stages=["search"],
      score=test_set_score, higher_is_better=False,
      settings={"search": {"metric": "loss", "max_drop": 0.02, "sparsities": (0.3, 0.5),
                           "slim_rates": (), "finetune_epochs": 4, "learning_rate": 3e-3,
                           "time_budget": 300}},
      output_dir=str(tmp_path / "run"))
  record = report.stages["searched"]
  assert record["metric"] == "loss" and record["higher_is_better"] is False
  candidates = {item["name"]: item for item in record["candidates"]}
  start = candidates["as given, int8"]
  chosen = candidates[record["chosen"]]
  assert chosen["chosen"] and chosen["feasible"] and chosen["front"]
  # Lower is better: feasible means a validation loss at most max_drop above the model's.
  for item in record["candidates"]:
    assert item["feasible"] == (item["value"] <= record["baseline"] + 0.02 + 1e-9), item
  assert chosen["gzip_bytes"] < start["gzip_bytes"] and chosen["nonzero_params"] < (
      start["nonzero_params"])
  names = [row.name for row in report.rows]
  assert names[-2:] == ["searched Keras", f"searched {chosen['mode']}"]
  bundle = json.loads((tmp_path / "run" / "deploy" / "model.json").read_text())
  assert bundle["source"]["file"].startswith("searched_")
  assert "## Search (searched): size within 0.02 of loss" in (
      tmp_path / "run" / "task_report.md").read_text()


def test_strided_then_binary_on_a_keras3_audio_classifier(tmp_path):
  """A keyword-spotting-shaped CNN on 20 x 10 feature maps, in Keras 3."""
  layers = keras3.layers
  inputs = keras3.Input((20, 10, 1))
  x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_1")(inputs)
  x = layers.MaxPooling2D(name="pool_1")(x)
  x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_2")(x)
  outputs = layers.Dense(3, name="keyword")(layers.GlobalAveragePooling2D()(x))
  model = keras3.Model(inputs, outputs, name="kws")
  rng = np.random.default_rng(0)
  x_data = rng.normal(size=(96, 20, 10, 1)).astype("float32")
  y_data = rng.integers(0, 3, 96)
  data = tf.data.Dataset.from_tensor_slices((x_data, y_data)).batch(32)
  report = task_run.compress(
      model, train=data, test=data.take(1),
      loss=keras3.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=["accuracy"], stages=["strided", "binary"],
      settings={"strided": {"finetune_epochs": 1}, "binary": {"epochs": 1}},
      output_dir=str(tmp_path / "run"))
  assert report.stages["strided"]["folded"] == ["conv_1 + pool_1"]
  assert report.stages["strided_binarized"]["binary_weights"] == 8 * 9 + 8 * 8 * 9 + 8 * 3
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  folded = keras.models.load_model(str(tmp_path / "run" / "strided.keras"), compile=False)
  assert "pool_1" not in [layer.name for layer in folded.layers]
  assert folded.get_layer("conv_1").strides == (2, 2)
  binarized = keras.models.load_model(str(tmp_path / "run" / "strided_binarized.keras"),
                                      compile=False)
  kernel = binarized.get_layer("keyword").kernel.numpy()
  for column in kernel.T:  # BWN: alpha * sign(w), one alpha per output channel
    assert len(np.unique(np.abs(column).round(6))) == 1
  assert {row.name for row in report.rows} >= {"strided_binarized int8"}
  mlp, mlp_data = _regression_mlp()
  with pytest.raises(TfoptError, match="no 2 x 2 pool"):
    task_run.prepare(mlp, train=mlp_data, test=mlp_data, stages=["strided"])


def test_objectives_without_validation_data_are_judged_on_fixed_training_examples():
  from tfopt.task.objective import judging_data, objective_for  # pylint: disable=g-import-not-at-top
  model, _ = _regression_mlp()
  x = np.arange(64 * 16, dtype="float32").reshape(64, 16)
  shuffled = tf.data.Dataset.from_tensor_slices((x, np.zeros((64, 8), "float32"))).shuffle(
      64, seed=None, reshuffle_each_iteration=True).batch(8)
  prepared = task_run.prepare(model, train=shuffled, test=shuffled, loss="mse", metrics=["mae"])
  data = judging_data(prepared.task, 20)
  passes = [np.concatenate([batch[0].numpy() for batch in data]) for _ in range(2)]
  assert passes[0].shape == (20, 16) and np.array_equal(passes[0], passes[1])
  assert objective_for(prepared.task).key == "loss"
  assert objective_for(prepared.task, "mean_absolute_error").higher_is_better is False
