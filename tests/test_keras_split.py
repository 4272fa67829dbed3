import keras as keras3
import numpy as np
import pytest

from tfopt.config import PruneConfig
from tfopt.core._keras import KerasVersionError, keras, require_keras2_model
from tfopt.techniques.prune import algorithm as prune


def _keras3_model():
  return keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])


def test_keras2_model_passes():
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
  assert require_keras2_model(model) is model


def test_keras3_model_gets_an_explanation():
  with pytest.raises(KerasVersionError) as error:
    require_keras2_model(_keras3_model())
  message = str(error.value)
  assert "Keras 3" in message and "tf_keras" in message


def test_pruning_a_keras3_model_explains_the_split(dataset):
  with pytest.raises(KerasVersionError, match="tf_keras"):
    prune.prune(_keras3_model(), dataset, PruneConfig())


def test_not_a_model_at_all():
  with pytest.raises(KerasVersionError, match="must be a Keras 2"):
    require_keras2_model(np.zeros(3))
