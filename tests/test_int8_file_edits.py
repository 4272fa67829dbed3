"""Post-training edits around int8 quantization: weights spliced per op
from another quantization, biases corrected for int8's mean shift, weights
equalized across layers; every file run in LiteRT."""

import numpy as np

from tfopt.core._keras import keras
from tfopt.litert import (convert, int8_bias_correction, int8_equalization, int8_fidelity,
                          int8_repair)
from tfopt.litert import int8_file_edits as edits


def _images(count, seed, shape=(8, 8, 3)):
  return np.random.default_rng(seed).random((count,) + shape).astype(np.float32)


def _conv_net():
  """Two convs and a dense layer, zero biases (which the converter stores once)."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(8, 3, activation="relu", name="first")(inputs)
  x = keras.layers.Conv2D(8, 3, name="second")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def _weighted_ops(content):
  model = edits.read(content)
  return [name for name, op in edits.op_by_output(model).items()
          if edits.op_name(model, op) in edits.WEIGHTED_OPS]


def _outputs(content, images):
  return int8_fidelity.FileRunner(content).predict(images)[0]


def test_splicing_every_op_gives_the_donor_file_and_one_op_only_that_op():
  calibrated = int8_repair.calibrate(_conv_net(), _images(64, 0), 64)
  per_channel = int8_repair.quantize(calibrated, int8_repair.Choice())
  per_tensor = int8_repair.quantize(calibrated, int8_repair.Choice(per_tensor=True))
  names = _weighted_ops(per_channel)
  assert len(names) == 3
  images = _images(50, 1)
  assert np.array_equal(_outputs(edits.splice_weights(per_channel, per_tensor, names), images),
                        _outputs(per_tensor, images))
  one = edits.read(edits.splice_weights(per_channel, per_tensor, names[1:2]))
  scales = {name: len(one.subgraphs[0].tensors[op.inputs[1]].quantization.scale)
            for name, op in edits.op_by_output(one).items() if name in names}
  assert scales[names[1]] == 1  # the spliced op: one weight scale
  assert scales[names[0]] == 8  # the others keep one per output channel


def test_shifting_one_bias_leaves_a_bias_it_shared_a_buffer_with():
  calibrated = int8_repair.calibrate(_conv_net(), _images(64, 0), 64)
  plain = int8_repair.quantize(calibrated, int8_repair.Choice())
  first, second = _weighted_ops(plain)[:2]
  model = edits.read(plain)
  ops = edits.op_by_output(model)
  biases = [model.subgraphs[0].tensors[ops[name].inputs[2]].buffer for name in (first, second)]
  assert biases[0] == biases[1]  # zero biases: one buffer in the converter's file
  scale = np.asarray(model.subgraphs[0].tensors[ops[first].inputs[2]].quantization.scale)
  shifted = edits.read(edits.shift_biases(plain, {first: 5 * scale}))
  ops = edits.op_by_output(shifted)

  def bias(name):
    tensor = shifted.subgraphs[0].tensors[ops[name].inputs[2]]
    return np.frombuffer(bytes(shifted.buffers[tensor.buffer].data), np.int32)

  assert np.all(bias(first) == 5) and np.all(bias(second) == 0)


def _model_with_a_rounding_bias():
  """A conv whose kernels hold one large weight and many at 0.7 of an int8
  step: each of those rounds up by 0.3 step, the same way, so on positive
  inputs the int8 outputs sit above the float ones by a constant."""
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(4, 3, name="shifted")(inputs)
  x = keras.layers.GlobalAveragePooling2D()(x)
  model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
  kernel = np.full((3, 3, 3, 4), 0.7 / 127, np.float32)
  kernel[0, 0, 0, :] = 1.0
  model.get_layer("shifted").set_weights([kernel, np.zeros(4, np.float32)])
  return model


def test_bias_correction_removes_a_mean_shift_and_brings_the_outputs_closer():
  model = _model_with_a_rounding_bias()
  calibration, unseen = _images(128, 0), _images(200, 1)
  calibrated = int8_repair.calibrate(model, calibration, 128)
  plain = int8_repair.quantize(calibrated, int8_repair.Choice())
  corrected, record = int8_bias_correction.correct(calibrated, plain, calibration)
  assert record["ops"] == 2 and record["mean_shift_steps"] > 1
  reference = int8_fidelity.FileRunner(calibrated).predict(unseen)
  snr = {name: int8_fidelity.output_snr_db(reference, [_outputs(content, unseen)])
         for name, content in (("plain", plain), ("corrected", corrected))}
  assert snr["corrected"] > snr["plain"] + 3
  # the conv's own outputs: the mean error is gone, not moved elsewhere
  rows = {row.layer: row for row in int8_fidelity.op_fidelity(calibrated, corrected, unseen)}
  before = {row.layer: row for row in int8_fidelity.op_fidelity(calibrated, plain, unseen)}
  assert rows["shifted"].snr_db > before["shifted"].snr_db + 3


def _model_with_uneven_channels():
  """conv -> ReLU -> conv whose first layer's channels span 0.01..10 (as a
  batch norm folded into it can leave them) and whose second layer makes up
  for it: one int8 activation scale rounds the small channels away."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(8, 3, activation="relu", name="first")(inputs)
  x = keras.layers.Conv2D(8, 3, name="second")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
  spread = np.logspace(-2, 1, 8).astype(np.float32)
  kernel, bias = model.get_layer("first").get_weights()
  model.get_layer("first").set_weights([kernel * spread, bias * spread])
  kernel, bias = model.get_layer("second").get_weights()
  model.get_layer("second").set_weights([kernel / spread[None, None, :, None], bias])
  return model


def test_equalization_keeps_the_float_function_and_recovers_the_int8_file():
  model = _model_with_uneven_channels()
  calibration, unseen = _images(128, 0), _images(200, 1)
  calibrated = int8_repair.calibrate(model, calibration, 128)
  equalized, record = int8_equalization.equalize(
      calibrated, convert.representative_dataset(calibration, 128))
  assert record["pairs"] == 1 and "second" in record["second_layers"][0]
  reference = int8_fidelity.FileRunner(calibrated).predict(unseen)
  assert np.allclose(_outputs(equalized, unseen), reference[0], atol=1e-4)
  for per_tensor in (False, True):
    choice = int8_repair.Choice(per_tensor=per_tensor)
    plain, even = (int8_fidelity.output_snr_db(
        reference, [_outputs(int8_repair.quantize(statistics, choice), unseen)])
                   for statistics in (calibrated, equalized))
    assert plain < 10 and even > 30  # dB


def test_repair_equalizes_where_that_is_what_helps():
  repair = int8_repair.repair(_model_with_uneven_channels(), _images(128, 0),
                              _images(200, 1), 128, experiments=1)
  assert repair.chosen.choice.equalize and repair.chosen.agreement > 0.95
  assert repair.plain.agreement < 0.9
  assert "cross-layer equalized" in repair.to_record()["chosen"]["choice"]["description"]
