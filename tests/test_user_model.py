"""--model and --dataset folder: a user's Keras 3 model and JPEG folder, end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, keras3_cnn, write_idx_dataset
from test_deploy import WITHOUT_TF
from tfopt.config import recipe
from tfopt.core._keras import keras as keras2
from tfopt.data.image_folder import load_image_folder
from tfopt.keras_io import model_io

keras3 = pytest.importorskip("keras")
COLORS = ((220, 40, 40), (40, 200, 40), (40, 40, 220))
NAMES = ("tomato", "lettuce", "blueberry")


def _cli(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "tfopt.pipeline", *args],
                        capture_output=True, text=True, timeout=timeout,
                        cwd=str(REPO_ROOT))


@pytest.fixture(scope="module")
def color_folder(tmp_path_factory):
  """Food-11 layout: noisy 16x16 JPEGs whose dominant color is the class."""
  root = tmp_path_factory.mktemp("food")
  rng = np.random.default_rng(0)
  for split, count in (("training", 120), ("validation", 30), ("evaluation", 30)):
    os.makedirs(root / split)
    for index in range(count):
      label = index % 3
      pixels = rng.integers(0, 90, (16, 16, 3)) + np.array(COLORS[label]) * 0.6
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
          root / split / f"{label}_{index}.jpg", quality=92)
  (root / "labels.txt").write_text("\n".join(NAMES) + "\n")
  return root


def _keras3_classifier(input_shape, classes):
  """A user's model, ending in softmax as most do."""
  return keras3_cnn(input_shape, classes, activation="softmax", name="users_model")


@pytest.fixture(scope="module")
def keras3_model(color_folder, tmp_path_factory):
  """The Keras 3 model trained on the folder, and its own test accuracy."""
  folder = load_image_folder(str(color_folder))
  keras3.utils.set_random_seed(0)
  model = _keras3_classifier((16, 16, 3), 3)
  model.compile("adam", "sparse_categorical_crossentropy")
  train, test = folder.images["train"], folder.images["test"]
  model.fit(train.pixels(np.arange(len(train))).astype("float32"), folder.labels["train"],
            epochs=8, batch_size=16, verbose=0)
  path = str(tmp_path_factory.mktemp("model") / "users_model.keras")
  model.save(path)
  predicted = np.argmax(model.predict(test.pixels(np.arange(len(test))).astype("float32"),
                                      verbose=0), axis=-1)
  return path, float(np.mean(predicted == folder.labels["test"]))


def test_keras3_model_and_jpeg_folder_run_through_the_cli(color_folder, keras3_model,
                                                          tmp_path):
  model_path, keras3_accuracy = keras3_model
  out = tmp_path / "out"
  completed = _cli("--dataset", "folder", "--data_dir", str(color_folder),
                   "--labels_file", str(color_folder / "labels.txt"),
                   "--model", model_path, "--quick", "--stages", "teacher,prune",
                   "--output_dir", str(out))
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert "fed raw pixels 0..255" in completed.stdout
  assert "rebuild matches the Keras 3 model" in completed.stdout
  report = json.loads((out / "report.json").read_text())
  assert "Keras 3 .keras, rebuilt in Keras 2" in report["baseline_source"]
  rows = {row["name"]: row for row in report["models"]}
  # Accuracy before: the file made from the user's model scores what the
  # user's own Keras 3 model scores on the same 30 test images.
  assert rows["baseline float32"]["accuracy"] == pytest.approx(keras3_accuracy)
  assert keras3_accuracy > 0.9
  assert rows["pruned teacher int8"]["weight_sparsity"] == pytest.approx(0.7, abs=0.02)
  spec = json.loads((out / "deploy" / "model.json").read_text())
  assert spec["class_names"] == list(NAMES)
  assert spec["preprocessing"]["image_size"] == [16, 16]
  assert spec["preprocessing"]["color_mode"] == "rgb"
  assert spec["preprocessing"]["pixel_scale"] == 1.0  # the model rescales itself
  # The edge script, without TensorFlow, on the evaluation JPEGs themselves.
  evaluation = sorted(str(path) for path in (color_folder / "evaluation").iterdir())
  edge = subprocess.run(
      [sys.executable, "-c", WITHOUT_TF.format(script=str(REPO_ROOT / "examples" / "edge_infer.py")),
       str(out / "deploy"), "--json", *evaluation], capture_output=True, text=True,
      timeout=300)
  assert edge.returncode == 0, edge.stderr[-2000:]
  predicted = [json.loads(line)["index"] for line in edge.stdout.splitlines()]
  labels = [int(os.path.basename(path).split("_")[0]) for path in evaluation]
  assert np.mean(np.array(predicted) == labels) == pytest.approx(
      rows["pruned teacher int8"]["accuracy"])


def test_folder_without_a_model_trains_the_mobilenet_student(color_folder, tmp_path):
  from tfopt import pipeline  # pylint: disable=g-import-not-at-top
  from tfopt.config import DataConfig, DistillConfig, TrainConfig
  config = recipe.quick(
      data=DataConfig(dataset="folder", data_dir=str(color_folder), image_size=(12, 12)),
      teacher=TrainConfig("student", epochs=2, batch_size=16),
      distill=DistillConfig("mobilenet_v1", epochs=8, batch_size=16),
      stages=("teacher", "distill"), output_dir=str(tmp_path / "out"))
  result = pipeline.run(config)
  assert result.row("distilled student int8").accuracy > 0.5
  spec = json.loads((tmp_path / "out" / "deploy" / "model.json").read_text())
  assert spec["input"]["shape"] == [1, 12, 12, 3]
  assert spec["class_names"] == ["0", "1", "2"]  # the labels in the names
  assert spec["preprocessing"]["pixel_scale"] == pytest.approx(1 / 255)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("idx")
  write_idx_dataset(root / "mnist", train=60, test=20)
  return str(root)


@pytest.mark.parametrize("shape,classes,message", [
    ((32, 32, 3), 10, "takes 32x32x3 images but mnist images are 28x28x1"),
    ((28, 28, 1), 5, "has 5 outputs but the data has 10 classes"),
])
def test_model_that_does_not_fit_the_data_is_refused(idx_dir, tmp_path, shape,
                                                     classes, message):
  path = str(tmp_path / "m.keras")
  _keras3_classifier(shape, classes).save(path)
  out = tmp_path / "out"
  completed = _cli("--model", path, "--data_dir", idx_dir, "--quick",
                   "--output_dir", str(out), timeout=300)
  assert completed.returncode == 2
  assert message in completed.stderr
  assert not out.exists()


def test_unsafe_models_need_the_opt_in(idx_dir, tmp_path):
  inputs = keras2.Input((28, 28, 1))
  x = keras2.layers.Lambda(lambda t: t * 2.0)(inputs)
  outputs = keras2.layers.Dense(10)(keras2.layers.Flatten()(x))
  path = str(tmp_path / "lambda.keras")
  keras2.Model(inputs, outputs).save(path)
  completed = _cli("--model", path, "--data_dir", idx_dir, "--quick",
                   "--output_dir", str(tmp_path / "out"), timeout=300)
  assert completed.returncode == 2 and "--allow_unsafe_model" in completed.stderr
  loaded = model_io.read_model(path, allow_unsafe=True)
  assert any(isinstance(layer, keras2.layers.Lambda) for layer in loaded.model.layers)


def test_saved_model_directories(tmp_path):
  model = keras2.Sequential([keras2.Input((8, 8, 3)), keras2.layers.Flatten(),
                             keras2.layers.Dense(4), keras2.layers.Softmax()])
  model.save(str(tmp_path / "k2_saved"), save_format="tf")
  loaded = model_io.read_model(str(tmp_path / "k2_saved"))
  assert loaded.source == "Keras 2 SavedModel"
  logits, removed = model_io.logits_model(loaded.model)
  images = np.random.default_rng(0).random((5, 8, 8, 3)).astype("float32")
  assert removed
  np.testing.assert_allclose(keras2.activations.softmax(logits(images)),
                             model(images), atol=1e-6)
  _keras3_classifier((8, 8, 3), 4).export(str(tmp_path / "exported"), verbose=False)
  with pytest.raises(model_io.ModelLoadError, match="model.save"):
    model_io.read_model(str(tmp_path / "exported"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(model_io.ModelLoadError, match="not a SavedModel"):
    model_io.read_model(str(tmp_path / "empty"))


def test_softmax_dense_becomes_logits_with_the_same_argmax(tmp_path):
  inputs = keras2.Input((6,))
  outputs = keras2.layers.Dense(3, activation="softmax", name="head")(inputs)
  model = keras2.Model(inputs, outputs)
  logits, removed = model_io.logits_model(model)
  data = np.random.default_rng(1).normal(size=(20, 6)).astype("float32")
  assert removed and logits.get_layer("head").activation.__name__ == "linear"
  np.testing.assert_allclose(keras2.activations.softmax(logits(data)), model(data),
                             atol=1e-6)
  plain = keras2.Model(inputs, keras2.layers.Dense(3)(inputs))
  assert model_io.logits_model(plain) == (plain, False)


@pytest.mark.parametrize("scheme", ["qat", "pqat", "cqat", "pcqat"])
def test_every_qat_scheme_takes_a_model_that_starts_with_rescaling(tmp_path, scheme):
  from tfopt.litert import convert, evaluate  # pylint: disable=g-import-not-at-top
  from tfopt.techniques.qat import algorithm as qat
  path = str(tmp_path / "m.keras")
  _keras3_classifier((16, 16, 3), 3).save(path)
  model, _ = model_io.logits_model(model_io.read_model(path).model)
  quantized = qat.apply_qat(model, scheme)
  assert not any(isinstance(layer, keras2.layers.Rescaling) for layer in quantized.layers)
  images = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
  quantized(images, training=True)  # let the fake-quant ranges see data
  tflite = tmp_path / "q.tflite"
  tflite.write_bytes(convert.to_tflite(quantized, "int8"))  # no calibration needed
  contents = evaluate.inspect_tflite(str(tflite))
  assert contents.input_dtype == "int8" and set(contents.weight_dtypes) == {"int8"}


def test_a_trained_model_with_another_class_order_gets_a_warning(trained_teacher, dataset,
                                                                 capsys):
  from tfopt.run import preflight  # pylint: disable=g-import-not-at-top
  from tfopt.core._keras import keras as keras2  # pylint: disable=g-import-not-at-top
  preflight._warn_if_near_chance(trained_teacher, dataset)  # pylint: disable=protected-access
  assert "WARNING" not in capsys.readouterr().out
  # The same model with its outputs rolled by one class: labels in another order.
  shift = keras2.layers.Dense(10, use_bias=False, trainable=False)
  shifted = keras2.Model(trained_teacher.inputs, shift(trained_teacher.outputs[0]))
  shift.set_weights([np.roll(np.eye(10, dtype=np.float32), 1, axis=1)])
  preflight._warn_if_near_chance(shifted, dataset)  # pylint: disable=protected-access
  assert "probably in another class order" in capsys.readouterr().out


def test_a_users_pools_fold_into_strides_and_a_model_without_one_is_refused(
    color_folder, keras3_model, tmp_path):
  model_path, _ = keras3_model
  common = ("--dataset", "folder", "--data_dir", str(color_folder), "--labels_file",
            str(color_folder / "labels.txt"), "--quick", "--stages", "teacher,strided")
  out = tmp_path / "out"
  completed = _cli(*common, "--model", model_path, "--output_dir", str(out))
  assert completed.returncode == 0, completed.stderr[-3000:]
  report = json.loads((out / "report.json").read_text())
  record = report["strided"]
  assert len(record["folded"]) == 1 and record["macs_after"] < 0.5 * record["macs_before"]
  rows = {row["name"]: row for row in report["models"]}
  strided_row, baseline = rows["strided teacher int8"], rows["baseline int8"]
  assert strided_row["tflite_bytes"] <= baseline["tflite_bytes"]  # the same weights
  assert "## Strided downsampling" in (out / "report.md").read_text()
  # A model whose only pooling is global has nothing to fold: one clear error
  # before any training, and no output folder.
  inputs = keras3.Input((16, 16, 3))
  x = keras3.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
  x = keras3.layers.GlobalAveragePooling2D()(x)
  no_pools = keras3.Model(inputs, keras3.layers.Dense(3, activation="softmax")(x))
  path = str(tmp_path / "no_pools.keras")
  no_pools.save(path)
  refused = _cli(*common, "--model", path, "--output_dir", str(tmp_path / "refused"))
  assert refused.returncode != 0 and "Traceback" not in refused.stderr
  assert "no 2 x 2 pool" in refused.stderr + refused.stdout
  assert not (tmp_path / "refused").exists()
