import pytest

from tfopt import models
from tfopt._keras import keras


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
