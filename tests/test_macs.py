from tfopt.core._keras import keras
from tfopt.keras_io import models
from tfopt.keras_io.macs import count_macs
from tfopt.techniques.lowrank import algorithm as lowrank


def test_hand_counted_model():
  inputs = keras.Input((28, 28, 1))
  x = keras.layers.Conv2D(8, 3, padding="same")(inputs)       # 28*28*8*9*1
  x = keras.layers.BatchNormalization()(x)                     # not counted
  x = keras.layers.MaxPooling2D()(x)                           # not counted
  x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 7*7*8*9
  x = keras.layers.Conv2D(16, 1)(x)                            # 7*7*16*8
  x = keras.layers.Flatten()(x)
  outputs = keras.layers.Dense(10)(x)                          # 784*10
  table = count_macs(keras.Model(inputs, outputs))
  assert [entry.macs for entry in table] == [
      28 * 28 * 8 * 9, 7 * 7 * 8 * 9, 7 * 7 * 16 * 8, 784 * 10]
  assert [entry.kind for entry in table] == [
      "Conv2D", "DepthwiseConv2D", "Conv2D", "Dense"]


def test_student_macs_and_low_rank_layers():
  student = models.build_model("student", (28, 28, 1), 10)
  total = sum(entry.macs for entry in count_macs(student))
  assert total == (28 * 28 * 16 * 9 + 14 * 14 * 32 * 9 * 16
                   + 7 * 7 * 64 * 9 * 32 + 576 * 10)
  teacher = models.build_model("teacher", (28, 28, 1), 10)
  factorized, report = lowrank.apply_lowrank(
      teacher, ranks={"fc": 16, "block2b_conv": 20})
  before = {entry.layer: entry.macs for entry in count_macs(teacher)}
  after = {entry.layer: entry.macs for entry in count_macs(factorized)}
  assert after["fc"] == 16 * (3136 + 128) < before["fc"] == 3136 * 128
  assert after["block2b_conv"] == (14 * 14 * 20 * 3 * 64) + (14 * 14 * 64 * 3 * 20)
  assert after["block1a_conv"] == before["block1a_conv"]


def test_transposed_separable_and_1d_convs_are_counted():
  inputs = keras.Input((8, 8, 4))
  up = keras.layers.Conv2DTranspose(6, 2, strides=2, name="up")(inputs)      # 8x8 in, 16x16 out
  separable = keras.layers.SeparableConv2D(5, 3, padding="same", name="sep")(up)
  sequence = keras.layers.Reshape((256, 5))(separable)
  conv1d = keras.layers.Conv1D(3, 4, name="conv1d")(sequence)                # 253 positions
  table = {entry.layer: entry.macs for entry in count_macs(keras.Model(inputs, conv1d))}
  assert table["up"] == 8 * 8 * 4 * 2 * 2 * 6  # each input position scatters a 2x2 window
  assert table["sep"] == 16 * 16 * 6 * (3 * 3 + 5)  # depthwise, then pointwise
  assert table["conv1d"] == 253 * 3 * 4 * 5
