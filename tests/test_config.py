import pytest

from tfopt.config import recipe
from tfopt.config import (ConfigError, DataConfig, DistillConfig, LowRankConfig, PipelineConfig,
                          PruneConfig, SlimConfig, TrainConfig)


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
    (lambda: PipelineConfig(stages=("teacher", "prune", "prune")), "stages",
     "teacher,prune,prune"),
    (lambda: PipelineConfig(stages=("teacher", "scratch")), "stages",
     "distill before scratch"),
    (lambda: SlimConfig(rate=-0.2), "rate", "-0.2"),
    (lambda: SlimConfig(min_channels=0), "min_channels", "0"),
    (lambda: SlimConfig(prune_count=0), "prune_count", "0"),
    (lambda: SlimConfig(scope="row"), "scope", "row"),
    (lambda: LowRankConfig(energy=0.9), "energy/param_ratio/ranks", "param_ratio"),
    (lambda: LowRankConfig(param_ratio=1.0), "param_ratio", "1.0"),
    (lambda: LowRankConfig(param_ratio=None, ranks={"fc": 0}), "ranks", "0"),
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
  quick = recipe.quick()
  assert quick.data.max_train_examples <= 5000
  assert quick.teacher.epochs <= 2 and quick.distill.epochs <= 2


def test_compare_scratch_puts_the_control_after_distill():
  config = PipelineConfig(compare_scratch=True, stages=("teacher", "distill",
                                                        "slim", "prune"))
  assert config.stage_list() == ("teacher", "distill", "scratch", "slim", "prune")
  assert PipelineConfig(compare_scratch=True,
                        stages=("teacher", "lowrank")).stage_list() == (
                            "teacher", "lowrank")
