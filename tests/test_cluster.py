import numpy as np
import pytest

from tfopt.config import ClusterConfig, ConfigError, PruneConfig
from tfopt.core.artifacts import gzip_size, write_bytes_atomic
from tfopt.litert import convert, evaluate
from tfopt.techniques.cluster import algorithm as cluster
from tfopt.techniques.prune import algorithm as prune
from tfopt.training import train


@pytest.fixture(scope="module")
def clustered(dataset, trained_teacher):
  weights_before = [w.copy() for w in trained_teacher.get_weights()]
  result = cluster.cluster(trained_teacher, dataset,
                           ClusterConfig(number_of_clusters=8, epochs=1,
                                         batch_size=32), verbose=0)
  return result, weights_before


def test_every_kernel_holds_at_most_the_clusters(clustered):
  result, _ = clustered
  assert {entry.layer for entry in result.kernels} == {
      "block1_conv", "block2_conv", "block3_conv", "logits"}
  for entry in result.kernels:
    kernel = result.model.get_layer(entry.layer).kernel.numpy()
    assert np.unique(kernel).size == entry.distinct <= 8
  assert all("cluster" not in layer.name for layer in result.model.layers)


def test_callers_model_is_untouched(clustered, trained_teacher):
  _, weights_before = clustered
  for before, after in zip(weights_before, trained_teacher.get_weights()):
    np.testing.assert_array_equal(before, after)


def test_clusters_survive_int8_conversion_per_channel(clustered, dataset, tmp_path):
  result, _ = clustered
  path = write_bytes_atomic(str(tmp_path / "clustered.tflite"), convert.to_tflite(
      result.model, "int8", dataset.x_train, 100))
  kernels = evaluate.inspect_tflite(path).kernels
  assert len(kernels) == 4
  assert all(kernel.max_distinct_per_channel <= 8 for kernel in kernels)
  assert evaluate.accuracy(path, dataset.x_test, dataset.y_test) > 0.85


def test_clustering_a_pruned_model_keeps_its_zeros(dataset, trained_teacher, tmp_path):
  pruned = prune.prune(trained_teacher, dataset,
                       PruneConfig(target_sparsity=0.6, epochs=2, batch_size=32),
                       verbose=0).model
  result = cluster.cluster(pruned, dataset, ClusterConfig(epochs=1, batch_size=32),
                           preserve_sparsity=True, verbose=0)
  for entry in result.kernels:
    assert entry.distinct <= 16 and entry.sparsity >= 0.59
  plain_path = write_bytes_atomic(str(tmp_path / "pruned.tflite"), convert.to_tflite(
      pruned, "int8", dataset.x_train, 100))
  path = write_bytes_atomic(str(tmp_path / "pcq.tflite"), convert.to_tflite(
      result.model, "int8", dataset.x_train, 100))
  assert evaluate.inspect_tflite(path).weight_sparsity >= 0.59
  assert gzip_size(path) < gzip_size(plain_path)
  assert train.accuracy(result.model, dataset.x_test, dataset.y_test) > 0.85


def test_per_layer_cluster_counts(dataset, trained_teacher):
  result = cluster.cluster(trained_teacher, dataset,
                           ClusterConfig(number_of_clusters=8, epochs=1, batch_size=32,
                                         layers=("block2_conv",),
                                         layer_clusters={"logits": 4}), verbose=0)
  counts = {entry.layer: (entry.clusters, entry.distinct) for entry in result.kernels}
  assert set(counts) == {"block2_conv", "logits"}
  assert counts["block2_conv"][0] == 8 and counts["block2_conv"][1] <= 8
  assert counts["logits"][0] == 4 and counts["logits"][1] <= 4
  # Layers left out are fine-tuned with the rest but not clustered.
  assert np.unique(result.model.get_layer("block3_conv").kernel.numpy()).size > 1000


def test_bad_settings_are_refused(trained_teacher):
  with pytest.raises(cluster.ClusteringError, match="no layer"):
    cluster.apply_clustering(trained_teacher, 8, layers=["nope"])
  with pytest.raises(cluster.ClusteringError, match="only Conv2D"):
    cluster.apply_clustering(trained_teacher, 8, layers=["block1_bn"])
  with pytest.raises(cluster.ClusteringError, match="fewer than 256 clusters"):
    cluster.apply_clustering(trained_teacher, 256)
  with pytest.raises(cluster.ClusteringError, match="centroid init"):
    cluster.apply_clustering(trained_teacher, 8, centroid_init="median")
  with pytest.raises(ConfigError, match="number_of_clusters"):
    ClusterConfig(number_of_clusters=1)
  with pytest.raises(ConfigError, match="layer_clusters"):
    ClusterConfig(layer_clusters={"fc": 300})
  with pytest.raises(cluster.ClusteringError, match="no layer 'nope'"):
    cluster.apply_clustering(trained_teacher, 8, layer_clusters={"nope": 4})


def test_depthwise_kernels_are_left_to_themselves_as_tfmot_does():
  from tfopt.keras_io import models  # pylint: disable=g-import-not-at-top
  mobilenet = models.build_model("mobilenet_v1", (28, 28, 1), 10)
  chosen = cluster.check_layers(mobilenet, 16)
  assert "block1_pw" in chosen and not any(name.endswith("_dw") for name in chosen)
  with pytest.raises(cluster.ClusteringError, match="does not cluster DepthwiseConv2D"):
    cluster.check_layers(mobilenet, 16, names=["block1_dw"])
