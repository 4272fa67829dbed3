"""Model builders by name: a teacher, a small student CNN, a MobileNet-v1 student.

Every builder takes (input_shape, num_classes) and returns an uncompiled Keras 2
functional model whose output is logits (no softmax), as distillation and
int8 conversion want.
"""

from typing import Callable, Dict, Tuple

from tfopt._keras import keras
from tfopt.errors import TfoptError

__all__ = ["BuilderError", "BUILDERS", "build_model", "get_builder",
           "teacher", "student", "mobilenet_v1"]

layers = keras.layers

# Keras' default BatchNorm momentum (0.99) needs ~500 steps before the moving
# statistics used at inference are right; 0.9 is right after ~50, so short
# runs (--quick, small data sets, few fine-tuning epochs) evaluate correctly.
BN_MOMENTUM = 0.9


def _batch_norm(name):
  return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


class BuilderError(TfoptError, ValueError):
  """An unknown model builder name."""


def _conv_bn_relu(x, filters, kernel_size=3, strides=1, name=None):
  x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                    use_bias=False, name=f"{name}_conv")(x)
  x = _batch_norm(f"{name}_bn")(x)
  return layers.ReLU(name=f"{name}_relu")(x)


def teacher(input_shape: Tuple[int, ...], num_classes: int) -> keras.Model:
  """A VGG-style CNN (~0.3 M parameters) that reaches >= 99.2 % on MNIST."""
  inputs = keras.Input(input_shape, name="image")
  x = _conv_bn_relu(inputs, 32, name="block1a")
  x = _conv_bn_relu(x, 32, name="block1b")
  x = layers.MaxPooling2D(name="block1_pool")(x)
  x = _conv_bn_relu(x, 64, name="block2a")
  x = _conv_bn_relu(x, 64, name="block2b")
  x = layers.MaxPooling2D(name="block2_pool")(x)
  x = layers.Flatten(name="flatten")(x)
  x = layers.Dense(128, activation="relu", name="fc")(x)
  x = layers.Dropout(0.4, name="dropout")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="teacher")


def student(input_shape: Tuple[int, ...], num_classes: int) -> keras.Model:
  """A small CNN (~29 k parameters): three conv blocks and one Dense."""
  inputs = keras.Input(input_shape, name="image")
  x = inputs
  for index, filters in enumerate((16, 32, 64), start=1):
    x = _conv_bn_relu(x, filters, name=f"block{index}")
    x = layers.MaxPooling2D(name=f"block{index}_pool")(x)
  x = layers.Flatten(name="flatten")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="student")


def mobilenet_v1(input_shape: Tuple[int, ...], num_classes: int,
                 width_multiplier: float = 0.5) -> keras.Model:
  """A MobileNet-v1 style student sized for small images.

  Each block is depthwise 3x3 conv -> BN -> ReLU6 -> pointwise 1x1 conv -> BN
  -> ReLU6; width_multiplier scales every layer's channel count.
  """
  if not 0 < width_multiplier <= 4:
    raise ValueError(f"width_multiplier={width_multiplier!r} is invalid: it "
                     "must be in (0, 4].")

  def channels(base):
    return max(8, int(base * width_multiplier))

  inputs = keras.Input(input_shape, name="image")
  x = layers.Conv2D(channels(32), 3, padding="same", use_bias=False,
                    name="stem_conv")(inputs)
  x = _batch_norm("stem_bn")(x)
  x = layers.ReLU(6.0, name="stem_relu")(x)
  for index, (base, strides) in enumerate(
      [(64, 1), (128, 2), (128, 1), (256, 2)], start=1):
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same",
                               use_bias=False, name=f"block{index}_dw")(x)
    x = _batch_norm(f"block{index}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"block{index}_dw_relu")(x)
    x = layers.Conv2D(channels(base), 1, use_bias=False,
                      name=f"block{index}_pw")(x)
    x = _batch_norm(f"block{index}_pw_bn")(x)
    x = layers.ReLU(6.0, name=f"block{index}_pw_relu")(x)
  x = layers.GlobalAveragePooling2D(name="pool")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="mobilenet_v1")


BUILDERS: Dict[str, Callable[..., keras.Model]] = {
    "teacher": teacher,
    "student": student,
    "mobilenet_v1": mobilenet_v1,
}


def get_builder(name: str) -> Callable[..., keras.Model]:
  """Returns the builder registered under `name`.

  Raises:
    BuilderError: no builder has that name.
  """
  if name not in BUILDERS:
    raise BuilderError(f"Unknown model builder {name!r}; choose one of "
                       f"{', '.join(sorted(BUILDERS))}.")
  return BUILDERS[name]


def build_model(name: str, input_shape: Tuple[int, ...], num_classes: int,
                **options) -> keras.Model:
  """Builds the model registered under `name` (see BUILDERS)."""
  return get_builder(name)(tuple(input_shape), num_classes, **options)
