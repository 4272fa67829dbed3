import pytest

from tfopt.core._keras import keras
from tfopt.keras_io import models


@pytest.mark.parametrize("name", sorted(models.BUILDERS))
def test_builders_output_logits_for_each_class(name):
  model = models.build_model(name, (28, 28, 1), 10)
  assert isinstance(model, keras.Model)
  assert model.output_shape == (None, 10)
  assert model.layers[-1].get_config().get("activation") in (None, "linear")


def test_student_is_much_smaller_than_teacher():
  teacher = models.build_model("teacher", (28, 28, 1), 10)
  student = models.build_model("student", (28, 28, 1), 10)
  assert student.count_params() * 8 < teacher.count_params()


def test_mobilenet_v1_blocks_and_width_multiplier():
  narrow = models.mobilenet_v1((28, 28, 1), 10, width_multiplier=0.5)
  wide = models.mobilenet_v1((28, 28, 1), 10, width_multiplier=1.0)
  kinds = [type(layer).__name__ for layer in narrow.layers]
  first_dw = kinds.index("DepthwiseConv2D")
  assert kinds[first_dw:first_dw + 6] == [
      "DepthwiseConv2D", "BatchNormalization", "ReLU", "Conv2D",
      "BatchNormalization", "ReLU"]
  assert narrow.get_layer("block1_dw_relu").get_config()["max_value"] == 6.0
  assert narrow.get_layer("block1_pw").kernel_size == (1, 1)
  assert wide.get_layer("block4_pw").filters == 2 * narrow.get_layer("block4_pw").filters
  with pytest.raises(ValueError, match="width_multiplier"):
    models.mobilenet_v1((28, 28, 1), 10, width_multiplier=0)


def test_unknown_builder_lists_known_names():
  with pytest.raises(models.BuilderError) as error:
    models.build_model("resnet9000", (28, 28, 1), 10)
  assert "resnet9000" in str(error.value)
  assert "mobilenet_v1" in str(error.value)


def test_mobilenet_v2_and_resnet18_match_their_papers_at_imagenet_size():
  # The published parameter counts (Keras counts BN's moving statistics too).
  assert models.mobilenet_v2((224, 224, 3), 1000, width_multiplier=1.0).count_params() == (
      3_538_984)
  assert models.resnet18((224, 224, 3), 1000).count_params() == 11_699_112


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (64, 64, 3), (224, 224, 3)])
def test_folder_builders_take_any_size_and_channels(name, shape):
  model = models.build_model(name, shape, 11)
  assert model.input_shape == (None,) + shape and model.output_shape == (None, 11)
  adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
  assert len(adds) == (8 if name == "resnet18" else 10)
  # Small inputs keep their resolution in the stem; large ones are reduced by 2 first.
  stem = model.get_layer("stem_conv")
  assert stem.strides == ((2, 2) if shape[0] >= models.SMALL_INPUT else (1, 1))


def test_resnet18_projection_shortcuts_where_the_shape_changes():
  model = models.resnet18((32, 32, 3), 10, width_multiplier=0.25)
  shortcuts = [layer.name for layer in model.layers if layer.name.endswith("shortcut_conv")]
  assert shortcuts == ["stage2_block1_shortcut_conv", "stage3_block1_shortcut_conv",
                       "stage4_block1_shortcut_conv"]
  assert model.get_layer("stage4_block2_2_conv").filters == 128
