"""tfopt.techniques.strided.algorithm: 2 x 2 pools folded into stride-2 convolutions, weights kept."""

import numpy as np
import pytest

from tfopt.core._keras import keras
from tfopt.keras_io import keras2_flatten, macs, models
from tfopt.litert import convert, evaluate
from tfopt.techniques.strided import algorithm as strided

layers = keras.layers


def _kernel_shapes(model):
  return {layer.name: [weight.shape for weight in layer.weights] for layer in model.layers}


def test_the_students_pools_become_strides_where_the_shapes_allow():
  model = models.student((28, 28, 1), 10)
  result = strided.strided(model)
  assert result.folded == [("block1_conv", "block1_pool"), ("block2_conv", "block2_pool")]
  # 7 -> 3 by the pool, 4 by a "same" stride: the Dense kernel would change.
  assert result.kept == ["block3_pool after block3_conv: a stride changes the shapes after it"]
  names = [layer.name for layer in result.model.layers]
  assert "block1_pool" not in names and "block3_pool" in names
  assert result.model.get_layer("block1_conv").strides == (2, 2)
  assert model.get_layer("block1_conv").strides == (1, 1)  # the given model is untouched
  for layer in result.model.layers:
    for new, old in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
      np.testing.assert_array_equal(new, old)
  before = sum(entry.macs for entry in macs.count_macs(model))
  after = sum(entry.macs for entry in macs.count_macs(result.model))
  assert after < 0.65 * before  # conv 1 and 2 at a quarter of their MACs


def test_the_keras_tutorial_convnet_and_a_nested_vgg16_fold(tmp_path):
  """Sequential with "valid" convs (26 -> 13 either way), and VGG's pools."""
  tutorial = keras.Sequential([
      keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
      layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
      layers.Dropout(0.5), layers.Dense(10, activation="softmax")])
  result = strided.strided(tutorial)
  assert len(result.folded) == 1 and len(result.kept) == 1  # 11 -> 5 by the pool, 6 by a stride
  backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
  inputs = keras.Input((32, 32, 3))
  x = layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
  user_model = keras2_flatten.flatten_nested_models(
      keras.Model(inputs, layers.Dense(3)(x)))
  result = strided.strided(user_model)
  assert [pool for _, pool in result.folded] == [f"block{index}_pool" for index in range(1, 6)]
  # The file is written and runs in LiteRT; each block's last conv at a quarter.
  path = tmp_path / "vgg_strided.tflite"
  path.write_bytes(convert.to_tflite(result.model, "int8", np.random.rand(8, 32, 32, 3)
                                     .astype("float32"), 8))
  image = np.random.rand(2, 32, 32, 3).astype("float32")
  assert evaluate.top1(str(path), image).shape == (2,)
  assert (sum(entry.macs for entry in macs.count_macs(result.model))
          < 0.65 * sum(entry.macs for entry in macs.count_macs(user_model)))


def test_a_conv_that_something_else_reads_keeps_its_pool():
  inputs = keras.Input((16, 16, 3))
  conv = layers.Conv2D(8, 3, padding="same")(inputs)
  residual = layers.Add()([conv, layers.ReLU()(conv)])
  x = layers.GlobalAveragePooling2D()(layers.MaxPooling2D()(residual))
  model = keras.Model(inputs, layers.Dense(2)(x))
  assert strided.downsampling_pairs(model) == []
  with pytest.raises(strided.StridedError, match="no 2 x 2 pool"):
    strided.strided(model)


def test_a_layer_that_refuses_the_new_shape_keeps_its_pool():
  """A low-rank Dense after the last pool fails to rebuild at 4 x 4: that pool
  stays, named with why, and the two before it still fold."""
  from tfopt.techniques.lowrank import algorithm as lowrank  # pylint: disable=g-import-not-at-top
  from tfopt.config import LowRankConfig  # pylint: disable=g-import-not-at-top
  factorized = lowrank.factorize(models.student((28, 28, 1), 10), LowRankConfig())[0]
  result = strided.strided(factorized)
  assert [pool for _, pool in result.folded] == ["block1_pool", "block2_pool"]
  assert result.kept[0].startswith("block3_pool after block3_conv: Cannot rebuild")


@pytest.mark.parametrize("before", ["prune", "cluster", "binary"])
def test_strided_after_a_stage_whose_weights_it_would_undo_is_refused(before):
  from tfopt.config import ConfigError, PipelineConfig  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=f"put strided before {before} in --stages"):
    PipelineConfig(stages=("teacher", "distill", before, "strided"))
  PipelineConfig(stages=("teacher", "distill", "strided", before))  # the other way is fine


def test_the_small_student_is_the_student_with_its_folds_at_a_quarter_width():
  small = models.build_model("student_small", (28, 28, 1), 10)
  folded = strided.strided(models.student((28, 28, 1), 10)).model
  assert [layer.output_shape for layer in small.layers][-3:] == [
      (None, 3, 3, 32), (None, 288), (None, 10)]
  assert [layer.output_shape[1:3] for layer in small.layers if "conv" in layer.name] == [
      layer.output_shape[1:3] for layer in folded.layers if "conv" in layer.name]
  assert small.count_params() == 8_946
