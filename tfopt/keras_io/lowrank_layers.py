"""The factorized layers tfopt.techniques.lowrank writes into a model.

`LowRankDense` is a Dense layer as two factors (x @ A @ B); `SpatialSVDConv2D`
a kh x kw Conv2D as a kh x 1 then a 1 x kw convolution. They live here, apart
from the factorization itself, because counting MACs and following channels
(tfopt.keras_io.macs, the slim technique) must know them too. Both are
registered Keras serializables ("tfopt>LowRankDense"), so saved models that
hold them load wherever this module was imported.
"""

from tfopt.core._keras import keras

__all__ = ["LowRankDense", "SpatialSVDConv2D"]


@keras.utils.register_keras_serializable(package="tfopt")
class LowRankDense(keras.layers.Layer):
  """Dense layer with a rank-`rank` kernel: activation(x @ A @ B + bias).

  Args:
    units: output size m.
    rank: inner size r.
    activation: as for Dense.
    use_bias: as for Dense.
  """

  def __init__(self, units, rank, activation=None, use_bias=True, **kwargs):
    super().__init__(**kwargs)
    self.units = int(units)
    self.rank = int(rank)
    self.activation = keras.activations.get(activation)
    self.use_bias = bool(use_bias)

  def build(self, input_shape):
    fan_in = int(input_shape[-1])
    self.first_kernel = self.add_weight(
        "first_kernel", shape=(fan_in, self.rank), initializer="glorot_uniform")
    self.second_kernel = self.add_weight(
        "second_kernel", shape=(self.rank, self.units),
        initializer="glorot_uniform")
    self.bias = (self.add_weight("bias", shape=(self.units,), initializer="zeros")
                 if self.use_bias else None)
    super().build(input_shape)

  def call(self, inputs):
    outputs = keras.backend.dot(keras.backend.dot(inputs, self.first_kernel),
                                self.second_kernel)
    if self.use_bias:
      outputs = outputs + self.bias
    return self.activation(outputs)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.units,)

  def get_config(self):
    return {**super().get_config(), "units": self.units, "rank": self.rank,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias}


@keras.utils.register_keras_serializable(package="tfopt")
class SpatialSVDConv2D(keras.layers.Layer):
  """A kh x kw Conv2D as a kh x 1 conv (rank filters) then a 1 x kw conv.

  Args:
    filters: output channels.
    kernel_size: (kh, kw) of the original convolution.
    rank: filters of the intermediate (kh x 1) convolution.
    strides, padding, activation, use_bias: as for Conv2D.
  """

  def __init__(self, filters, kernel_size, rank, strides=(1, 1), padding="valid",
               activation=None, use_bias=True, **kwargs):
    super().__init__(**kwargs)
    self.filters = int(filters)
    self.kernel_size = tuple(int(size) for size in kernel_size)
    self.rank = int(rank)
    self.strides = tuple(int(stride) for stride in strides)
    self.padding = padding
    self.activation = keras.activations.get(activation)
    self.use_bias = bool(use_bias)
    height, width = self.kernel_size
    self.vertical = keras.layers.Conv2D(
        self.rank, (height, 1), strides=(self.strides[0], 1), padding=padding,
        use_bias=False, name="vertical")
    self.horizontal = keras.layers.Conv2D(
        self.filters, (1, width), strides=(1, self.strides[1]), padding=padding,
        use_bias=use_bias, name="horizontal")

  def build(self, input_shape):
    self.vertical.build(input_shape)
    self.horizontal.build(self.vertical.compute_output_shape(input_shape))
    super().build(input_shape)

  def call(self, inputs):
    return self.activation(self.horizontal(self.vertical(inputs)))

  def compute_output_shape(self, input_shape):
    return self.horizontal.compute_output_shape(
        self.vertical.compute_output_shape(input_shape))

  def get_config(self):
    return {**super().get_config(), "filters": self.filters,
            "kernel_size": self.kernel_size, "rank": self.rank,
            "strides": self.strides, "padding": self.padding,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias}
