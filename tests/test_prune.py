import numpy as np
import pytest

from tfopt.config import PruneConfig
from tfopt.core.artifacts import gzip_size, write_bytes_atomic
from tfopt.litert import convert
from tfopt.techniques.prune import algorithm as prune


@pytest.fixture(scope="module")
def pruned(dataset, trained_teacher):
  weights_before = [w.copy() for w in trained_teacher.get_weights()]
  result = prune.prune(trained_teacher, dataset,
                       PruneConfig(target_sparsity=0.7, epochs=3, batch_size=16),
                       verbose=0)
  return result, weights_before


def test_every_prunable_weight_reaches_the_target(pruned):
  result, _ = pruned
  names = {entry.layer for entry in result.layers}
  assert names == {"block1_conv", "block2_conv", "block3_conv", "logits"}
  for entry in result.layers:
    assert entry.sparsity >= 0.7 - prune.SPARSITY_TOLERANCE
    kernel = result.model.get_layer(entry.layer).kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(entry.sparsity)
  assert result.overall_sparsity == pytest.approx(0.7, abs=0.01)


def test_callers_model_is_not_pruned(pruned, trained_teacher):
  _, weights_before = pruned
  for before, after in zip(weights_before, trained_teacher.get_weights()):
    np.testing.assert_array_equal(before, after)


def test_stripped_model_has_no_wrappers_and_still_works(pruned, dataset):
  from tfopt.training import train
  result, _ = pruned
  assert all("prune_low_magnitude" not in layer.name for layer in result.model.layers)
  assert train.accuracy(result.model, dataset.x_test, dataset.y_test) > 0.85


def test_schedule_prunes_on_short_runs():
  schedule = prune.pruning_schedule(PruneConfig(target_sparsity=0.5), total_steps=20)
  config = schedule.get_config()["config"]
  assert config["frequency"] < 20
  assert config["end_step"] < 20
  assert config["end_step"] % config["frequency"] == 0
  should_prune, sparsity = schedule(config["end_step"])
  assert bool(should_prune) and float(sparsity) == pytest.approx(0.5)
  with pytest.raises(prune.PruningError, match="at least 2 training steps"):
    prune.pruning_schedule(PruneConfig(), total_steps=1)


def test_pruned_int8_file_gzips_smaller(pruned, trained_teacher, dataset, tmp_path):
  result, _ = pruned
  sizes = {}
  for name, model in (("dense", trained_teacher), ("pruned", result.model)):
    path = str(tmp_path / f"{name}.tflite")
    write_bytes_atomic(path, convert.to_tflite(model, "int8", dataset.x_train, 50))
    sizes[name] = gzip_size(path)
  assert sizes["pruned"] < 0.8 * sizes["dense"]


def test_pruning_with_a_teacher_reaches_target_and_keeps_teacher(dataset, trained_teacher):
  from tfopt.keras_io import models
  from tfopt.training import train
  student = models.build_model("student", dataset.input_shape, 10)
  student.set_weights(trained_teacher.get_weights())
  teacher_weights = [w.copy() for w in trained_teacher.get_weights()]
  result = prune.prune(student, dataset,
                       PruneConfig(target_sparsity=0.6, epochs=2, batch_size=32),
                       teacher=trained_teacher, verbose=0)
  assert all(entry.sparsity >= 0.6 - prune.SPARSITY_TOLERANCE for entry in result.layers)
  for before, after in zip(teacher_weights, trained_teacher.get_weights()):
    np.testing.assert_array_equal(before, after)
  assert train.accuracy(result.model, dataset.x_test, dataset.y_test) > 0.85


def test_a_frozen_model_is_refused(trained_teacher, dataset):
  from tfopt.keras_io import models
  frozen = models.build_model("student", dataset.input_shape, 10)
  frozen.trainable = False
  with pytest.raises(prune.PruningError, match="no trainable weights"):
    prune.prune(frozen, dataset, PruneConfig(epochs=1))


def test_mobilenet_student_prunes_and_converts(dataset, tmp_path):
  from tfopt.keras_io import models
  from tfopt.litert import evaluate
  model = models.build_model("mobilenet_v1", dataset.input_shape, 10,
                             width_multiplier=0.25)
  result = prune.prune(model, dataset, PruneConfig(target_sparsity=0.5, epochs=1,
                                                   batch_size=32), verbose=0)
  pruned_layers = {entry.layer for entry in result.layers}
  assert {"stem_conv", "block1_pw", "logits"} <= pruned_layers
  assert all(entry.sparsity >= 0.49 for entry in result.layers)
  path = str(tmp_path / "mobilenet_int8.tflite")
  write_bytes_atomic(path, convert.to_tflite(result.model, "int8", dataset.x_train, 20))
  contents = evaluate.inspect_tflite(path)
  assert contents.ops.get("DEPTHWISE_CONV_2D") == 4
  assert contents.weight_sparsity > 0.3


def test_small_kernels_are_held_to_the_sparsity_tfmot_can_reach():
  # 32 weights at 0.7: tfmot keeps round(9.6) = 10, so 22 zeros (0.6875) is the target.
  assert prune.reachable_zeros(32, 0.7) == 22
  assert prune.reachable_zeros(10_000, 0.7) == 7_000
  assert prune.reachable_zeros(4, 0.99) == 3  # never fewer than one weight kept
