import numpy as np
import pytest

from tfopt.config import ConfigError, SlimConfig
from tfopt.core._keras import keras
from tfopt.core.artifacts import write_bytes_atomic
from tfopt.keras_io import models
from tfopt.keras_io.macs import count_macs
from tfopt.litert import convert, evaluate
from tfopt.techniques.slim import algorithm as slim, channels

layers = keras.layers


def _randomized(builder, seed=0):
  """A freshly built model whose BN statistics and scales are not trivial."""
  keras.utils.set_random_seed(seed)
  model = models.build_model(builder, (28, 28, 1), 10)
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, layers.BatchNormalization):
      size = layer.gamma.shape[0]
      layer.set_weights([rng.normal(1, 0.3, size), rng.normal(0, 0.3, size),
                         rng.normal(0, 0.1, size), rng.uniform(0.5, 1.5, size)])
  return model


def _images(count=16, seed=0):
  return np.random.default_rng(seed).random((count, 28, 28, 1)).astype(np.float32)


def _drop_every_third(model, convs):
  return {name: np.setdiff1d(np.arange(model.get_layer(name).filters),
                             np.arange(0, model.get_layer(name).filters, 3))
          for name in convs}


def test_prunable_convs_of_the_builders():
  assert slim.prunable_convs(_randomized("student"))[0] == [
      "block1_conv", "block2_conv", "block3_conv"]
  assert slim.prunable_convs(_randomized("mobilenet_v1"))[0] == [
      "stem_conv", "block1_pw", "block2_pw", "block3_pw", "block4_pw"]


def test_rebuilt_teacher_has_the_expected_shapes_and_runs_in_litert(tmp_path):
  model = _randomized("teacher")
  keep = _drop_every_third(model, ["block1b_conv", "block2b_conv"])
  small = slim.remove_channels(model, keep)
  assert small.get_layer("block1b_conv").kernel.shape == (3, 3, 32, 21)
  assert small.get_layer("block1b_bn").gamma.shape == (21,)
  assert small.get_layer("block2a_conv").kernel.shape == (3, 3, 21, 64)
  assert small.get_layer("block2b_conv").kernel.shape == (3, 3, 64, 42)
  assert small.get_layer("fc").kernel.shape == (7 * 7 * 42, 128)  # after Flatten
  assert small.count_params() < model.count_params()
  images = _images()
  path = write_bytes_atomic(str(tmp_path / "small.tflite"),
                            convert.to_tflite(small, "float32"))
  np.testing.assert_allclose(evaluate.TFLiteClassifier(path).run(images),
                             small(images).numpy(), atol=1e-4)


def test_mobilenet_pointwise_channel_takes_the_depthwise_channel_with_it(tmp_path):
  model = _randomized("mobilenet_v1")
  keep = {"block1_pw": np.arange(0, 32, 2)}
  small = slim.remove_channels(model, keep)
  assert small.get_layer("block1_pw").kernel.shape == (1, 1, 16, 16)
  assert small.get_layer("block2_dw").depthwise_kernel.shape == (3, 3, 16, 1)
  assert small.get_layer("block2_dw_bn").gamma.shape == (16,)
  assert small.get_layer("block2_pw").kernel.shape == (1, 1, 16, 64)
  images = _images()
  # Removing channels equals zeroing what they feed into: the next pointwise
  # conv's input weights for the removed depthwise channels.
  masked = _randomized("mobilenet_v1")
  kernel = masked.get_layer("block2_pw").kernel.numpy()
  kernel[:, :, 1::2, :] = 0
  masked.get_layer("block2_pw").kernel.assign(kernel)
  np.testing.assert_allclose(small(images).numpy(), masked(images).numpy(),
                             atol=1e-5)
  path = write_bytes_atomic(str(tmp_path / "small.tflite"),
                            convert.to_tflite(small, "int8", images, 16))
  assert evaluate.TFLiteClassifier(path).predict(images).shape == (16, 10)


def test_removal_equals_zeroing_the_dense_rows_after_flatten():
  model = _randomized("student")
  keep = {"block3_conv": np.array([0, 5, 9, 40, 63])}
  small = slim.remove_channels(model, keep)
  masked = _randomized("student")
  kernel = masked.get_layer("logits").kernel.numpy().reshape(3, 3, 64, 10)
  kernel[:, :, np.setdiff1d(np.arange(64), keep["block3_conv"]), :] = 0
  masked.get_layer("logits").kernel.assign(kernel.reshape(-1, 10))
  images = _images()
  np.testing.assert_allclose(small(images).numpy(), masked(images).numpy(),
                             atol=1e-5)


@pytest.mark.parametrize("builder", ["teacher", "student"])
def test_removing_dead_channels_leaves_outputs_unchanged(builder):
  model = _randomized(builder)
  convs = slim.prunable_convs(model)[0]
  graph = channels.layer_graph(model)
  for name in convs[:-1]:
    batch_norm = channels.following_bn(model, graph, name)
    gamma, beta, mean, variance = batch_norm.get_weights()
    gamma[::3], beta[::3] = 0.0, -np.abs(beta[::3]) - 0.1
    batch_norm.set_weights([gamma, beta, mean, variance])
  dead = slim.dead_channels(model)
  assert sorted(dead) == sorted(convs[:-1])
  keep = {name: np.setdiff1d(np.arange(model.get_layer(name).filters), channels)
          for name, channels in dead.items()}
  small = slim.remove_channels(model, keep)
  assert small.count_params() < model.count_params()
  images = _images()
  np.testing.assert_allclose(small(images).numpy(), model(images).numpy(),
                             atol=1e-5)
  # The same count of live channels removed does change the outputs.
  live = {name: np.setdiff1d(np.arange(model.get_layer(name).filters),
                             np.arange(1, model.get_layer(name).filters, 3))
          for name in dead}
  assert np.max(np.abs(slim.remove_channels(model, live)(images).numpy()
                       - model(images).numpy())) > 1e-3


def test_positive_beta_or_mobilenet_depthwise_is_not_dead():
  model = _randomized("student")
  batch_norm = model.get_layer("block1_bn")
  gamma, beta, mean, variance = batch_norm.get_weights()
  gamma[0], beta[0] = 0.0, 0.5  # constant 0.5 after the ReLU: not dead
  batch_norm.set_weights([gamma, beta, mean, variance])
  assert slim.dead_channels(model) == {}
  mobilenet = _randomized("mobilenet_v1")
  batch_norm = mobilenet.get_layer("block1_pw_bn")
  gamma, beta, mean, variance = batch_norm.get_weights()
  gamma[0], beta[0] = 0.0, -1.0  # the next depthwise BN adds a constant back
  batch_norm.set_weights([gamma, beta, mean, variance])
  assert slim.dead_channels(mobilenet) == {}


def _residual_model():
  inputs = keras.Input((8, 8, 4))
  stem = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
  branch = layers.Conv2D(8, 3, padding="same", name="branch")(stem)
  added = layers.Add(name="add")([stem, branch])
  x = layers.GlobalAveragePooling2D()(added)
  return keras.Model(inputs, layers.Dense(3, name="logits")(x))


def test_a_residual_add_couples_its_convs_into_one_group():
  model = _residual_model()
  groups, skipped = slim.slimmable_groups(model, criterion="l2")
  assert [group.producers for group in groups] == [["stem", "branch"]]
  assert skipped == {}  # the classifier's Dense group is not reported
  with pytest.raises(slim.SlimError, match="Add 'add' would keep different"):
    slim.remove_channels(model, {"branch": [0, 1, 2]})
  # Both sides keeping the same channels is consistent, so it is allowed.
  small = slim.remove_channels(model, {"stem": [0, 2, 4], "branch": [0, 2, 4]})
  assert small.get_layer("logits").kernel.shape == (3, 3)
  # A group is scored over its members: the mean of their filter norms.
  scores = slim.group_importance(model, groups[0], "l2")
  kernels = [model.get_layer(name).kernel.numpy().reshape(-1, 8) for name in ("stem", "branch")]
  np.testing.assert_allclose(scores, np.mean(
      [np.sqrt(np.mean(kernel ** 2, axis=0)) for kernel in kernels], axis=0), rtol=1e-6)


def test_a_concatenate_added_to_one_conv_is_frozen_with_the_reason():
  inputs = keras.Input((8, 8, 4))
  left = layers.Conv2D(4, 1, name="left")(inputs)
  right = layers.Conv2D(4, 1, name="right")(inputs)
  both = layers.Conv2D(8, 1, name="both")(inputs)
  added = layers.Add(name="add")([layers.Concatenate()([left, right]), both])
  x = layers.GlobalAveragePooling2D()(added)
  model = keras.Model(inputs, layers.Dense(3)(x))
  groups, skipped = slim.slimmable_groups(model, criterion="l2")
  assert groups == [] and list(skipped) == ["left (+2 coupled)"]
  assert "Add 'add' adds channels out of step" in skipped["left (+2 coupled)"]


def test_unsliceable_structures_are_refused_with_the_layer_named():
  inputs = keras.Input((8, 8, 1))
  x = layers.Conv2D(4, 3, name="conv")(inputs)
  x = layers.Reshape((-1,), name="reshape")(x)
  model = keras.Model(inputs, layers.Dense(2)(x))
  with pytest.raises(slim.SlimError, match="Reshape 'reshape'"):
    slim.remove_channels(model, {"conv": [0, 1]})
  output_conv = keras.Model(inputs, layers.Conv2D(4, 3, name="head")(inputs))
  with pytest.raises(slim.SlimError, match="model output 'head'"):
    slim.remove_channels(output_conv, {"head": [0]})
  with pytest.raises(slim.SlimError, match="cannot be slimmed"):
    slim.prunable_convs(model, criterion="l1", names=["conv"])


def test_invalid_rates_and_channels_get_a_clear_error():
  scores = {"a": np.arange(8.0)}
  for rate in (1.0, -0.1, 1.5):
    with pytest.raises(slim.SlimError, match="rate="):
      slim.select_channels(scores, rate)
  with pytest.raises(slim.SlimError, match="scope="):
    slim.select_channels(scores, 0.5, scope="everywhere")
  with pytest.raises(ConfigError, match="rate=1.5"):
    SlimConfig(rate=1.5)
  with pytest.raises(ConfigError, match="criterion="):
    SlimConfig(criterion="gamma")
  model = _randomized("student")
  with pytest.raises(slim.SlimError, match="non-empty set of indices"):
    slim.remove_channels(model, {"block1_conv": []})
  with pytest.raises(slim.SlimError, match=r"\[0, 16\)"):
    slim.remove_channels(model, {"block1_conv": [0, 16]})
  with pytest.raises(slim.SlimError, match="is a BatchNormalization"):
    slim.remove_channels(model, {"block1_bn": [0]})
  with pytest.raises(slim.SlimError, match="no layer 'nope'"):
    slim.remove_channels(model, {"nope": [0]})


def test_local_and_global_selection_with_a_floor():
  scores = {"small": np.array([0.01, 0.02, 0.03, 0.04]),
            "large": np.linspace(1, 2, 12)}
  local = slim.select_channels(scores, 0.5, scope="local")
  assert [len(local["small"]), len(local["large"])] == [2, 6]
  np.testing.assert_array_equal(local["small"], [2, 3])
  # Global: one threshold would empty "small"; the floor keeps 25 % of it.
  chosen = slim.select_channels(scores, 0.5, scope="global", min_channels=0.25)
  assert [len(chosen["small"]), len(chosen["large"])] == [1, 7]
  np.testing.assert_array_equal(chosen["small"], [3])


def test_bn_l1_penalty_is_added_and_removed():
  model = _randomized("student")
  penalized = slim.with_bn_l1(model, 1e-2)
  expected = 1e-2 * sum(np.abs(penalized.get_layer(name).gamma.numpy()).sum()
                        for name in ("block1_bn", "block2_bn", "block3_bn"))
  assert float(sum(penalized.losses)) == pytest.approx(expected, rel=1e-5)
  plain = slim.without_bn_l1(penalized)
  assert plain.losses == []
  images = _images()
  np.testing.assert_allclose(plain(images).numpy(), model(images).numpy(),
                             atol=1e-6)


def test_slim_schedule_shrinks_step_by_step(dataset, trained_teacher):
  config = SlimConfig(rate=0.5, prune_count=2, finetune_epochs=1,
                      sparsity_epochs=1, batch_size=64, scope="local")
  result = slim.slim(trained_teacher, dataset, config, verbose=0)
  assert [step.rate for step in result.steps] == [0.25, 0.5]
  assert result.channels_before == {"block1_conv": 16, "block2_conv": 32,
                                    "block3_conv": 64}
  assert result.steps[0].channels == {"block1_conv": 12, "block2_conv": 24,
                                      "block3_conv": 48}
  assert result.steps[1].channels == {"block1_conv": 8, "block2_conv": 16,
                                      "block3_conv": 32}
  assert result.removed_fraction == pytest.approx(0.5)
  params = [trained_teacher.count_params()] + [s.params for s in result.steps]
  macs = [step.macs for step in result.steps]
  assert params == sorted(params, reverse=True) and macs[1] < macs[0]
  assert result.model.losses == []  # the L1 penalty is gone after training
  assert result.steps[-1].val_accuracy > 0.5  # it still classifies the glyphs
  assert trained_teacher.get_layer("block1_conv").filters == 16  # not modified


def test_slim_halves_a_resnet_including_its_residual_stream(dataset):
  model = models.build_model("resnet18", (28, 28, 1), 10)
  config = SlimConfig(rate=0.5, prune_count=1, finetune_epochs=0, sparsity_epochs=0,
                      scope="local", criterion="bn_gamma")
  result = slim.slim(model, dataset, config, verbose=0)
  convs = [layer.name for layer in model.layers if channels.is_conv(layer)]
  assert sorted(result.channels_before) == sorted(convs) and result.skipped == {}
  assert result.groups["stem_conv"] == ["stem_conv", "stage1_block1_2_conv",
                                        "stage1_block2_2_conv"]
  after = result.steps[0].channels
  assert all(after[name] == result.channels_before[name] // 2 for name in convs)
  assert result.steps[0].macs < 0.3 * sum(entry.macs for entry in count_macs(model))
  images = dataset.x_test[:8]
  assert result.model(images).shape == (8, 10)


def test_a_unet_up_stage_loses_channels_on_both_sides_of_its_conv2d_transpose():
  """Removing channels equals zeroing them: the Conv2DTranspose loses its own
  filters (kernel axis 2) and the input channels of the conv it consumes
  (axis 3), and the concatenated skip keeps its place."""
  inputs = keras.Input((8, 8, 2))
  skip = layers.ReLU(name="skip_relu")(layers.Conv2D(6, 3, padding="same", name="skip")(inputs))
  down = layers.ReLU()(layers.Conv2D(8, 3, strides=2, padding="same", name="down")(skip))
  up = layers.Conv2DTranspose(5, 2, strides=2, name="up")(down)
  up = layers.ReLU()(layers.BatchNormalization(name="up_bn")(up))
  joined = layers.Concatenate()([up, skip])
  model = keras.Model(inputs, layers.Conv2D(3, 1, name="mask")(joined))
  rng = np.random.default_rng(0)
  model.set_weights([rng.normal(size=weight.shape) for weight in model.get_weights()])
  bn = model.get_layer("up_bn")
  bn.set_weights([rng.uniform(0.5, 1.5, 5), rng.normal(size=5), np.zeros(5), np.ones(5)])
  drop = {"down": [2, 6], "up": [1, 4], "skip": [0]}
  zeroed = keras.models.clone_model(model)
  zeroed.set_weights(model.get_weights())
  for name, removed in drop.items():
    layer = zeroed.get_layer(name)
    kernel, bias = layer.get_weights()
    axis = 2 if name == "up" else 3
    kernel[(slice(None),) * axis + (removed,)] = 0
    bias[removed] = 0
    layer.set_weights([kernel, bias])
  gamma, beta, mean, variance = zeroed.get_layer("up_bn").get_weights()
  beta[drop["up"]] = 0
  zeroed.get_layer("up_bn").set_weights([gamma, beta, mean, variance])
  keep = {name: np.setdiff1d(np.arange(model.get_layer(name).filters), removed)
          for name, removed in drop.items()}
  groups, skipped = slim.slimmable_groups(model, criterion="l1")
  assert {"skip", "down", "up"} <= {name for group in groups for name in group.producers}
  assert slim.channel_importance(model, "up", "l1").shape == (5,)
  smaller = slim.remove_channels(zeroed, keep)
  assert smaller.get_layer("up").get_weights()[0].shape == (2, 2, 3, 6)
  images = rng.random((4, 8, 8, 2)).astype(np.float32)
  np.testing.assert_allclose(smaller(images), zeroed(images), atol=1e-4)
