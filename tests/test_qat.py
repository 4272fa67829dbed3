import numpy as np
import pytest

from tfopt.config import PruneConfig, QatConfig
from tfopt.core import artifacts
from tfopt.core._keras import keras
from tfopt.litert import convert, evaluate
from tfopt.techniques.prune import algorithm as prune
from tfopt.techniques.qat import algorithm as qat
from tfopt.training import train


def test_choose_scheme_keeps_what_came_before():
  assert qat.choose_scheme(False, False) == "qat"
  assert qat.choose_scheme(True, False) == "pqat"
  assert qat.choose_scheme(False, True) == "cqat"
  assert qat.choose_scheme(True, True) == "pcqat"


def test_pqat_keeps_zeros_into_the_int8_file(dataset, trained_teacher, tmp_path):
  pruned = prune.prune(trained_teacher, dataset,
                       PruneConfig(target_sparsity=0.6, epochs=2, batch_size=32),
                       verbose=0).model
  result = qat.qat(pruned, dataset, QatConfig(epochs=1, batch_size=32), "pqat",
                   verbose=0)
  path = artifacts.write_bytes_atomic(str(tmp_path / "pqat.tflite"), convert.to_tflite(
      result.model, "int8", dataset.x_train, 50))
  contents = evaluate.inspect_tflite(path)
  assert contents.input_dtype == "int8" and set(contents.weight_dtypes) == {"int8"}
  assert contents.weight_sparsity >= 0.59
  assert evaluate.accuracy(path, dataset.x_test, dataset.y_test) > 0.85
  # A quantization-aware model reloads from .h5 inside tfmot's scope.
  saved = artifacts.save_keras_atomic(result.model, str(tmp_path / "pqat.h5"))
  with qat.quantize_scope():
    reloaded = keras.models.load_model(saved, compile=False)
  np.testing.assert_allclose(reloaded.predict(dataset.x_test[:8], verbose=0),
                             result.model.predict(dataset.x_test[:8], verbose=0),
                             atol=1e-5)


def test_plain_qat_int8_matches_keras(dataset, trained_teacher, tmp_path):
  result = qat.qat(trained_teacher, dataset, QatConfig(epochs=1, batch_size=32),
                   verbose=0)
  # The ranges come from QAT: no representative images needed.
  path = artifacts.write_bytes_atomic(str(tmp_path / "qat.tflite"), convert.to_tflite(
      result.model, "int8"))
  assert evaluate.inspect_tflite(path).input_dtype == "int8"
  assert evaluate.agreement(path, result.model, dataset.x_test) >= 0.97
  with pytest.raises(convert.ConversionError, match="int8 only"):
    convert.to_tflite(result.model, "float16")
  assert train.accuracy(result.model, dataset.x_test, dataset.y_test) > 0.85


def test_unknown_scheme_is_refused(trained_teacher):
  with pytest.raises(qat.QatError, match="Unknown QAT scheme"):
    qat.apply_qat(trained_teacher, "int4")
