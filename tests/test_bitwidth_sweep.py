import numpy as np
import pytest

from tfopt.config import PruneConfig
from tfopt.techniques.bitwidth import algorithm as bitwidth
from tfopt.techniques.prune import algorithm as prune
from tfopt.techniques.sensitivity import algorithm as sensitivity
from tfopt.techniques.sweep import algorithm as sweep
from tfopt.training import train


def test_minmax_grid_has_2_pow_n_levels_and_keeps_zero():
  values = np.random.default_rng(0).normal(size=(3, 3, 8, 16)).astype(np.float32)
  values[0, 0, 0, :] = 0.0
  for bits in (8, 4, 2):
    quantized = bitwidth.quantize_minmax(values, bits)
    assert np.unique(quantized).size <= 2 ** bits
    assert np.all(quantized[0, 0, 0, :] == 0.0)
    scale = (values.max() - values.min()) / (2 ** bits - 1)
    assert np.abs(quantized - values).max() <= scale  # half a step + zero nudge
    per_channel = bitwidth.quantize_minmax(values, bits, per_channel=True)
    assert max(np.unique(per_channel[..., channel]).size for channel in range(16)) <= 2 ** bits
    assert np.abs(per_channel - values).mean() <= np.abs(quantized - values).mean()
  with pytest.raises(bitwidth.BitwidthError, match="bits"):
    bitwidth.quantize_minmax(values, 0)


def test_bitwidth_study_breaks_at_low_bits(trained_teacher, dataset):
  results = bitwidth.bitwidth_study(trained_teacher, dataset.x_test, dataset.y_test,
                                    bits=(8, 2))
  by_key = {(result.bits, result.granularity): result for result in results}
  assert len(by_key) == 4
  assert abs(by_key[8, "per_tensor"].accuracy_drop) <= 0.02
  assert by_key[8, "per_channel"].weight_sqnr_db > by_key[2, "per_channel"].weight_sqnr_db + 20
  quantized = bitwidth.quantize_model(trained_teacher, 2, "per_tensor")
  assert np.unique(quantized.get_layer("block2_conv").kernel.numpy()).size <= 4
  # The caller's model keeps its float weights.
  assert np.unique(trained_teacher.get_layer("block2_conv").kernel.numpy()).size > 100


def test_threshold_sweep_is_monotone(trained_teacher, dataset):
  points = sweep.threshold_sweep(trained_teacher, dataset.x_test, dataset.y_test,
                                 (0.0, 0.5, 1.0, 2.0))
  assert points[0].sparsity == 0.0
  assert points[0].accuracy == train.accuracy(trained_teacher, dataset.x_test,
                                              dataset.y_test)
  sparsities = [point.sparsity for point in points]
  assert sparsities == sorted(sparsities) and sparsities[-1] > 0.9
  assert points[-1].accuracy < points[0].accuracy


def test_magnitude_mask_removes_the_smallest():
  kernel = np.array([[0.1, -0.5], [0.05, 0.9]], np.float32)
  np.testing.assert_array_equal(sweep.magnitude_mask(kernel, 0.5),
                                [[False, True], [False, True]])


def test_choose_sparsities_stops_at_the_first_break():
  points = [sensitivity.SensitivityPoint("a", 0.5, 0.99, 0.001),
            sensitivity.SensitivityPoint("a", 0.7, 0.97, 0.02),
            sensitivity.SensitivityPoint("a", 0.9, 0.99, 0.0),  # lucky point past a break
            sensitivity.SensitivityPoint("b", 0.5, 0.9, 0.09),
            sensitivity.SensitivityPoint("c", 0.5, 1.0, 0.0),
            sensitivity.SensitivityPoint("c", 0.9, 1.0, 0.002)]
  assert sensitivity.choose_sparsities(points, 0.003) == {"a": 0.5, "b": 0.0, "c": 0.9}
  assert sensitivity.overall_sparsity({"a": 0.5, "c": 0.9}, {"a": 100, "b": 100, "c": 200}) == (
      pytest.approx((50 + 180) / 400))


def test_layer_sensitivity_and_per_layer_pruning(trained_teacher, dataset):
  points = sensitivity.layer_sensitivity(trained_teacher, dataset.x_val, dataset.y_val,
                                   (0.5, 0.9))
  assert {point.layer for point in points} == set(sweep.prunable_kernels(trained_teacher))
  targets = {"block2_conv": 0.5, "block3_conv": 0.8, "logits": 0.0}
  result = prune.prune(trained_teacher, dataset,
                       PruneConfig(epochs=2, batch_size=32), verbose=0,
                       layer_targets=targets)
  measured = {entry.layer: entry.sparsity for entry in result.layers}
  assert set(measured) == {"block2_conv", "block3_conv"}
  assert abs(measured["block2_conv"] - 0.5) < 0.01
  assert abs(measured["block3_conv"] - 0.8) < 0.01
  assert np.count_nonzero(result.model.get_layer("logits").kernel.numpy() == 0) == 0
  with pytest.raises(prune.PruningError, match="no layer"):
    prune.prune(trained_teacher, dataset, PruneConfig(epochs=1), verbose=0,
                layer_targets={"nope": 0.5})


def test_allocate_sparsity_fills_the_cheap_layers_first():
  points = [sensitivity.SensitivityPoint("conv", 0.5, 0.9, 0.05),
            sensitivity.SensitivityPoint("conv", 0.9, 0.5, 0.45),
            sensitivity.SensitivityPoint("fc", 0.5, 0.99, 0.0),
            sensitivity.SensitivityPoint("fc", 0.9, 0.98, 0.005)]
  sizes = {"conv": 100, "fc": 900}
  chosen = sensitivity.allocate_sparsity(points, sizes, 0.8)
  assert chosen == {"conv": 0.0, "fc": 0.9}
  assert sensitivity.overall_sparsity(chosen, sizes) >= 0.8
  assert sensitivity.allocate_sparsity(points, sizes, 0.85)["conv"] == 0.5
  with pytest.raises(sensitivity.SensitivityError, match="beyond"):
    sensitivity.allocate_sparsity(points, sizes, 0.95)
