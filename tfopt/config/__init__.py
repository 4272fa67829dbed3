"""Settings: one frozen dataclass per section, the recipes and flags that fill
them, and the registry of stage names.

    pipeline_config   PipelineConfig and the run-wide sections (data, teacher,
                      distill, convert, evaluate)
    technique_config  each compression technique's section, and `finetune`
    recipe            recipe files and presets/ (YAML) -> PipelineConfig
    options           --section.field flags, short aliases, the option reference
    registry          the only list of stage names; register() adds one

Everything a recipe or a script needs is importable from here:
`from tfopt.config import PipelineConfig, PruneConfig`.
"""

# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.config.pipeline_config import *
from tfopt.config.pipeline_config import (COLOR_MODES, INT8_REPAIR_MODES, STRATEGIES,
                                          __all__ as _PIPELINE_NAMES)
from tfopt.config.technique_config import *
from tfopt.config.technique_config import __all__ as _TECHNIQUE_NAMES

__all__ = sorted(set(_PIPELINE_NAMES) | set(_TECHNIQUE_NAMES)
                 | {"COLOR_MODES", "INT8_REPAIR_MODES", "STRATEGIES"})
