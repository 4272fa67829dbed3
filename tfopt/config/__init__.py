"""Settings: one frozen dataclass per section, the recipes and flags that fill
them, and the registry of stage names.

    pipeline_config   PipelineConfig and the run-wide sections (data, teacher,
                      distill, convert, evaluate)
    technique_config  the sections techniques share: `analysis`, `finetune`
                      (each technique's own: tfopt/techniques/<name>/settings.py)
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
from tfopt.config.technique_config import __all__ as _SHARED_NAMES
from tfopt.techniques.search.settings import SEARCH_MODES, SEARCH_OBJECTIVES, require_search_space

__all__ = sorted(set(_PIPELINE_NAMES) | set(_SHARED_NAMES)
                 | {"COLOR_MODES", "INT8_REPAIR_MODES", "STRATEGIES", "SEARCH_MODES",
                    "SEARCH_OBJECTIVES", "require_search_space"})
