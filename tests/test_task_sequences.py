"""Sequence models as the Keras tutorials write them: token embeddings,
(bidirectional) LSTMs, GRUs and Transformer blocks, through tfopt.compress."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

keras3 = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from tfopt.keras_io.keras3 import rebuild_in_keras2  # pylint: disable=g-import-not-at-top,wrong-import-position
from tfopt.litert import convert, evaluate, int8_fidelity  # pylint: disable=g-import-not-at-top,wrong-import-position
from tfopt.run import task_run

layers = keras3.layers


def token_data(count=192, steps=12, seed=0):
  """Token ids; the label is whether the first token is in the upper half."""
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 100, (count, steps)).astype("int32")
  return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] >= 50).astype("float32")[:, None]))


def bidirectional_lstm():
  """The Keras "Bidirectional LSTM on IMDB" example, small, its second LSTM
  one-way."""
  inputs = keras3.Input((12,), dtype="int32")
  x = layers.Embedding(100, 16)(inputs)
  x = layers.Bidirectional(layers.LSTM(8, return_sequences=True))(x)
  x = layers.LSTM(8)(x)
  return keras3.Model(inputs, layers.Dense(1, activation="sigmoid", name="score")(x))


def test_a_bidirectional_lstm_on_tokens_gives_files_that_match_keras(tmp_path):
  keras3.utils.set_random_seed(0)
  model = bidirectional_lstm()
  model.compile(keras3.optimizers.Adam(1e-2), "binary_crossentropy", metrics=["accuracy"])
  data = token_data()
  model.fit(data.batch(32), epochs=4, verbose=0)
  report = task_run.compress(
      model, train=data.take(160).batch(32), test=data.skip(160).batch(32),
      stages=["prune"], settings={"prune": {"epochs": 1}},
      quant_modes=("int8",), output_dir=str(tmp_path / "run"))
  rows = {row.name: row for row in report.rows}
  assert rows["baseline int8"].fidelity[0].cosine > 0.99
  assert rows["pruned int8"].fidelity[0].cosine > 0.99
  runner = int8_fidelity.FileRunner(open(tmp_path / "run" / "pruned_int8.tflite", "rb").read())
  assert runner.fixed_batch and runner.inputs[0]["dtype"] == np.int32
  # LiteRT's fused LSTM keeps its state between invokes: each example must
  # start from zeros, so an example's output does not depend on the order.
  tokens = np.concatenate([x.numpy() for x, _ in data.skip(160).batch(32)])
  runner.invoke([tokens])
  forward = runner.output_values()[0]
  runner.invoke([tokens[::-1]])
  np.testing.assert_array_equal(runner.output_values()[0][::-1], forward)
  # The deploy bundle says so, and the edge example runs it that way.
  deploy = tmp_path / "run" / "deploy"
  assert "reset_all_variables" in json.loads((deploy / "model.json").read_text())["runs"]
  np.save(tmp_path / "tokens.npy", tokens)
  subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "edge_task.py"), str(deploy),
                  str(tmp_path / "tokens.npy"), "--out", str(tmp_path / "out.npz")],
                 check=True, capture_output=True)
  np.testing.assert_allclose(np.load(tmp_path / "out.npz")["score"][:, 0], forward[:, 0])
  from tfopt.core._keras import keras  # pylint: disable=g-import-not-at-top
  stripped = keras.models.load_model(tmp_path / "run" / "pruned.keras", compile=False)
  zeros = {weight.name: float(np.mean(weight.numpy() == 0)) for weight in stripped.weights
           if weight.name.endswith(("kernel:0", "embeddings:0"))}
  # tfmot prunes the embedding, the LSTM's kernels and the Dense; it does not
  # wrap Bidirectional, whose LSTMs stay dense.
  pruned = {name.split("/", 1)[1] for name, share in zeros.items()
            if 0.4 < share < 0.6 and not name.startswith("bidirectional")}
  assert pruned == {"embeddings:0", "lstm_cell/kernel:0", "lstm_cell/recurrent_kernel:0",
                    "kernel:0"}, zeros
  assert not any(share for name, share in zeros.items() if name.startswith("bidirectional"))


def transformer_block(features=8):
  """The Keras timeseries Transformer tutorial's encoder: residuals written
  as `x + y`, LayerNormalization, MultiHeadAttention, Conv1D feed-forward."""
  inputs = keras3.Input((16, features))
  x = layers.LayerNormalization(epsilon=1e-6)(inputs)
  x = layers.MultiHeadAttention(key_dim=8, num_heads=2, dropout=0.1)(x, x)
  residual = layers.Dropout(0.1)(x) + inputs
  x = layers.LayerNormalization(epsilon=1e-6)(residual)
  x = layers.Conv1D(16, 1, activation="relu")(x)
  x = layers.Conv1D(features, 1)(x) + residual
  x = layers.GlobalAveragePooling1D(data_format="channels_first")(x)
  return keras3.Model(inputs, layers.Dense(2, activation="softmax")(x))


def test_a_transformer_block_is_carried_pruned_and_converted(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(96, 16, 8)).astype("float32")
  data = tf.data.Dataset.from_tensor_slices((x, (x[:, 0, 0] > 0).astype("int32")))
  report = task_run.compress(
      transformer_block(), train=data.take(64).batch(16), test=data.skip(64).batch(16),
      loss="sparse_categorical_crossentropy", metrics=["accuracy"], stages=["prune"],
      settings={"prune": {"epochs": 1}}, output_dir=str(tmp_path / "run"))
  rows = {row.name: row for row in report.rows}
  assert rows["pruned int8"].fidelity[0].cosine > 0.99
  record = report.stages["pruned"]
  assert record["pruned_weights"] > 8 * 8 * 3  # the attention's kernels too


def test_a_file_litert_would_abort_on_is_refused_with_the_layer_named():
  inputs = keras3.Input((16, 1))  # LayerNormalization over one feature: constant
  model = keras3.Model(inputs, layers.LayerNormalization(epsilon=1e-6)(inputs))
  images = np.random.default_rng(0).normal(size=(8, 16, 1)).astype("float32")
  content = convert.to_tflite(rebuild_in_keras2(model), "int8", images, 8)
  with pytest.raises(evaluate.TFLiteError, match="layer_normalization"):
    evaluate.check_runs(content, "the int8 file")
  evaluate.check_runs(convert.to_tflite(rebuild_in_keras2(model), "float32"), "float32")


def test_gru_models_get_float_files_and_are_refused_integer_ones(tmp_path):
  inputs = keras3.Input((12, 3))
  x = layers.GRU(8, return_sequences=True, name="gru")(inputs)  # (Keras numbers names per process)
  model = keras3.Model(inputs, layers.Dense(1)(layers.SimpleRNN(4, name="simple_rnn")(x)))
  rng = np.random.default_rng(2)
  x = rng.normal(size=(64, 12, 3)).astype("float32")
  data = tf.data.Dataset.from_tensor_slices((x, x[:, :, 0].mean(1, keepdims=True)))
  arguments = dict(train=data.take(48).batch(16), test=data.skip(48).batch(16), loss="mse",
                   stages=["prune"], settings={"prune": {"epochs": 1}})
  with pytest.raises(convert.ConversionError, match="gru, simple_rnn"):
    task_run.compress(model, output_dir=str(tmp_path / "refused"), **arguments)
  assert not (tmp_path / "refused").exists()
  report = task_run.compress(model, quant_modes=("float32", "dynamic_range"),
                             output_dir=str(tmp_path / "run"), **arguments)
  rows = {row.name: row for row in report.rows}
  assert rows["pruned float32"].fidelity[0].snr_db > 60


def test_recurrent_and_attention_layers_carry_over_with_the_same_outputs():
  """Every recurrent kind, a Bidirectional with its merge mode, causal
  attention with a key, and tensor arithmetic, in Keras 2 as in Keras 3."""
  inputs = keras3.Input((10,), dtype="int32")
  x = layers.Embedding(50, 8, mask_zero=False)(inputs)
  x = layers.Bidirectional(layers.GRU(6, return_sequences=True), merge_mode="sum")(x)
  x = layers.SimpleRNN(6, return_sequences=True)(x)
  attended = layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, x, x, use_causal_mask=True)
  x = layers.LSTM(5)((attended + x) * x)
  model = keras3.Model(inputs, layers.Dense(2)(x))
  tokens = np.random.default_rng(3).integers(0, 50, (4, 10)).astype("int32")
  np.testing.assert_allclose(rebuild_in_keras2(model).predict(tokens, verbose=0),
                             np.asarray(model(tokens)), atol=1e-5)


def test_the_image_classifier_pipeline_sends_recurrent_models_to_tasks():
  from tfopt.keras_io import model_io  # pylint: disable=g-import-not-at-top
  inputs = keras3.Input((8, 8, 1))
  rows = layers.Reshape((8, 8))(inputs)
  model = keras3.Model(inputs, layers.Dense(3, activation="softmax")(layers.GRU(4, name="gru")(rows)))
  with pytest.raises(model_io.ModelLoadError, match=r"recurrent layers \(gru.*--task"):
    model_io.image_input_shape(rebuild_in_keras2(model))


def test_a_sequential_autoencoder_and_a_text_cnn_of_any_length_are_compressed(tmp_path):
  """Keras' timeseries anomaly autoencoder (a Sequential built from an
  Input) and its text classifier from scratch (int64 tokens, any length)."""
  autoencoder = keras3.Sequential([
      layers.Input(shape=(32, 1)),
      layers.Conv1D(8, 7, padding="same", strides=2, activation="relu"), layers.Dropout(0.2),
      layers.Conv1DTranspose(8, 7, padding="same", strides=2, activation="relu"),
      layers.Conv1DTranspose(1, 7, padding="same")])
  rng = np.random.default_rng(4)
  windows = np.sin(np.linspace(0, 6, 32))[None, :, None] + 0.1 * rng.normal(size=(64, 32, 1))
  data = tf.data.Dataset.from_tensor_slices((windows.astype("float32"),) * 2).batch(16)
  report = task_run.compress(autoencoder, train=data.take(3), test=data.skip(3), loss="mse",
                             stages=["prune"], settings={"prune": {"epochs": 1}},
                             output_dir=str(tmp_path / "autoencoder"))
  assert report.row("pruned int8").fidelity[0].cosine > 0.99
  inputs = keras3.Input(shape=(None,), dtype="int64")
  x = layers.Conv1D(8, 7, strides=3, activation="relu")(layers.Embedding(300, 8)(inputs))
  text_cnn = keras3.Model(inputs, layers.Dense(1, activation="sigmoid")(
      layers.GlobalMaxPooling1D()(x)))
  tokens = rng.integers(0, 300, (64, 40)).astype("int64")
  data = tf.data.Dataset.from_tensor_slices((tokens, (tokens[:, 0] < 150).astype("float32")))
  report = task_run.compress(text_cnn, train=data.take(48).batch(16), test=data.skip(48).batch(16),
                             loss="binary_crossentropy", stages=["prune"],
                             settings={"prune": {"epochs": 1}}, output_dir=str(tmp_path / "text"))
  # The file left the length open: it runs the test's 40 tokens, as Keras does.
  assert report.row("pruned float32").fidelity[0].snr_db > 60
  assert report.row("pruned int8").fidelity[0].cosine > 0.99


def test_a_subclassed_model_is_refused_with_what_to_do_and_a_functional_subclass_taken(tmp_path):
  class Subclassed(keras3.Model):  # pylint: disable=abstract-method
    def __init__(self):
      super().__init__()
      self.dense = layers.Dense(2)

    def call(self, inputs):
      return self.dense(inputs)

  class FunctionalSubclass(keras3.Model):  # pylint: disable=abstract-method
    pass

  x = np.random.default_rng(5).random((32, 3)).astype("float32")
  arguments = dict(train=(x, x[:, :2]), test=(x, x[:, :2]), loss="mse", stages=[],
                   quant_modes=("float32",))
  model = Subclassed()
  model(x[:1])
  from tfopt.task.definition import TaskError  # pylint: disable=g-import-not-at-top
  with pytest.raises(TaskError, match="subclassed keras.Model.*functional API"):
    task_run.compress(model, output_dir=str(tmp_path / "refused"), **arguments)
  assert not (tmp_path / "refused").exists()
  inputs = keras3.Input((3,))
  report = task_run.compress(FunctionalSubclass(inputs, layers.Dense(2)(inputs)),
                             output_dir=str(tmp_path / "taken"), **arguments)
  assert report.row("baseline float32").fidelity[0].snr_db > 60
