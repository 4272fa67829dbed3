"""Model builders by name: a teacher, a small student CNN, MobileNet-v1/v2, ResNet-18.

Every builder takes (input_shape, num_classes) and returns an uncompiled Keras 2
functional model whose output is logits (no softmax), as distillation and
int8 conversion want.
"""

from typing import Callable, Dict, Tuple

from tfopt.core._keras import keras
from tfopt.core.errors import TfoptError

__all__ = ["BuilderError", "BUILDERS", "build_model", "get_builder",
           "teacher", "student", "mobilenet_v1", "mobilenet_v2", "resnet18"]

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


def student_small(input_shape: Tuple[int, ...], num_classes: int) -> keras.Model:
  """The student at a quarter of the channels (8, 16, 32; ~9 k parameters), its
  first two blocks downsampling by stride instead of pooling (tfopt.techniques.strided.algorithm's
  fold built in): 2.3 us against `student`'s 8.5 us in LiteRT on MNIST, and the shape
  where distillation gains about 0.1 pp over the labels alone (BUILD_NOTES)."""
  inputs = keras.Input(input_shape, name="image")
  x = _conv_bn_relu(inputs, 8, strides=2, name="block1")
  x = _conv_bn_relu(x, 16, strides=2, name="block2")
  x = _conv_bn_relu(x, 32, name="block3")
  x = layers.MaxPooling2D(name="block3_pool")(x)
  x = layers.Flatten(name="flatten")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="student_small")


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


# Inputs smaller than this keep their resolution in the stem (stride 1), as
# the CIFAR variants of these networks do; larger ones get the ImageNet stem.
SMALL_INPUT = 96


def _divisible(channels: float, divisor: int = 8) -> int:
  """Channels rounded to a multiple of `divisor`, never below 90 % (MobileNetV2)."""
  rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * channels else rounded


def _inverted_residual(x, expansion: int, filters: int, strides: int, name: str):
  """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear project (+ input)."""
  inputs, channels = x, int(x.shape[-1])
  if expansion != 1:
    x = layers.Conv2D(channels * expansion, 1, use_bias=False, name=f"{name}_expand")(x)
    x = _batch_norm(f"{name}_expand_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
  x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                             name=f"{name}_dw")(x)
  x = _batch_norm(f"{name}_dw_bn")(x)
  x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
  x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(x)
  x = _batch_norm(f"{name}_project_bn")(x)
  if strides == 1 and channels == filters:
    x = layers.Add(name=f"{name}_add")([inputs, x])
  return x


def mobilenet_v2(input_shape: Tuple[int, ...], num_classes: int,
                 width_multiplier: float = 0.5) -> keras.Model:
  """MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks.

  width_multiplier scales every layer's channels (rounded to multiples of 8);
  the last 1x1 conv keeps 1280 channels unless the multiplier is above 1.
  Inputs under SMALL_INPUT pixels keep their resolution in the stem.
  """
  if not 0 < width_multiplier <= 4:
    raise ValueError(f"width_multiplier={width_multiplier!r} is invalid: it "
                     "must be in (0, 4].")
  inputs = keras.Input(input_shape, name="image")
  stem_strides = 1 if min(input_shape[:2]) < SMALL_INPUT else 2
  x = layers.Conv2D(_divisible(32 * width_multiplier), 3, strides=stem_strides,
                    padding="same", use_bias=False, name="stem_conv")(inputs)
  x = _batch_norm("stem_bn")(x)
  x = layers.ReLU(6.0, name="stem_relu")(x)
  settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
  block = 0
  for expansion, filters, repeats, strides in settings:
    for repeat in range(repeats):
      block += 1
      x = _inverted_residual(x, expansion, _divisible(filters * width_multiplier),
                             strides if repeat == 0 else 1, name=f"block{block}")
  x = layers.Conv2D(_divisible(1280 * max(1.0, width_multiplier)), 1, use_bias=False,
                    name="head_conv")(x)
  x = _batch_norm("head_bn")(x)
  x = layers.ReLU(6.0, name="head_relu")(x)
  x = layers.GlobalAveragePooling2D(name="pool")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="mobilenet_v2")


def _basic_block(x, filters: int, strides: int, name: str):
  """ResNet basic block: two 3x3 conv-BN, a 1x1 projection shortcut when the shape changes."""
  shortcut = x
  x = _conv_bn_relu(x, filters, strides=strides, name=f"{name}_1")
  x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(x)
  x = _batch_norm(f"{name}_2_bn")(x)
  if strides != 1 or int(shortcut.shape[-1]) != filters:
    shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                             name=f"{name}_shortcut_conv")(shortcut)
    shortcut = _batch_norm(f"{name}_shortcut_bn")(shortcut)
  x = layers.Add(name=f"{name}_add")([shortcut, x])
  return layers.ReLU(name=f"{name}_out")(x)


def resnet18(input_shape: Tuple[int, ...], num_classes: int,
             width_multiplier: float = 1.0) -> keras.Model:
  """ResNet-18 (He et al. 2016): four stages of two basic blocks (64-512 channels).

  Inputs of SMALL_INPUT pixels or more get the ImageNet stem (7x7/2 conv and
  3x3/2 max pooling); smaller ones a 3x3/1 conv, as ResNets for CIFAR do.
  width_multiplier scales every stage's channels.
  """
  if not 0 < width_multiplier <= 4:
    raise ValueError(f"width_multiplier={width_multiplier!r} is invalid: it "
                     "must be in (0, 4].")
  inputs = keras.Input(input_shape, name="image")
  base = max(8, int(64 * width_multiplier))
  if min(input_shape[:2]) >= SMALL_INPUT:
    x = _conv_bn_relu(inputs, base, kernel_size=7, strides=2, name="stem")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
  else:
    x = _conv_bn_relu(inputs, base, name="stem")
  for stage, multiple in enumerate((1, 2, 4, 8), start=1):
    for block in (1, 2):
      strides = 2 if stage > 1 and block == 1 else 1
      x = _basic_block(x, base * multiple, strides, name=f"stage{stage}_block{block}")
  x = layers.GlobalAveragePooling2D(name="pool")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="resnet18")


BUILDERS: Dict[str, Callable[..., keras.Model]] = {
    "teacher": teacher,
    "student": student,
    "student_small": student_small,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "resnet18": resnet18,
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
