import pytest

from tfopt.config import (ConfigError, DataConfig, DistillConfig,
                          PipelineConfig, PruneConfig, TrainConfig)


@pytest.mark.parametrize("make, field, value", [
    (lambda: PruneConfig(target_sparsity=1.0), "target_sparsity", "1.0"),
    (lambda: PruneConfig(target_sparsity=-0.1), "target_sparsity", "-0.1"),
    (lambda: PruneConfig(target_sparsity=0.5, initial_sparsity=0.6),
     "initial_sparsity", "0.6"),
    (lambda: DistillConfig(temperature=0), "temperature", "0"),
    (lambda: DistillConfig(temperature=-2.0), "temperature", "-2.0"),
    (lambda: DistillConfig(alpha=1.5), "alpha", "1.5"),
    (lambda: DistillConfig(epochs=0), "epochs", "0"),
    (lambda: TrainConfig(epochs=0), "epochs", "0"),
    (lambda: TrainConfig(batch_size=2.5), "batch_size", "2.5"),
    (lambda: TrainConfig(learning_rate=0), "learning_rate", "0"),
    (lambda: DataConfig(dataset="imagenet"), "dataset", "imagenet"),
    (lambda: DataConfig(validation_fraction=1.0), "validation_fraction", "1.0"),
    (lambda: DataConfig(max_train_examples=0), "max_train_examples", "0"),
    (lambda: PipelineConfig(output_dir=" "), "output_dir", "' '"),
])
def test_invalid_values_name_the_field_and_value(make, field, value):
  with pytest.raises(ConfigError) as error:
    make()
  assert field in str(error.value)
  assert value in str(error.value)


def test_defaults_are_valid_and_not_shared():
  first, second = PipelineConfig(), PipelineConfig()
  assert first == second
  assert first.prune is not None and 0 < first.prune.target_sparsity < 1
  assert first.to_dict()["distill"]["temperature"] == first.distill.temperature


def test_quick_config_is_small():
  quick = PipelineConfig.quick()
  assert quick.data.max_train_examples <= 5000
  assert quick.teacher.epochs <= 2 and quick.distill.epochs <= 2
