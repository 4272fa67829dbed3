"""Settings: one frozen dataclass per section, the recipes and flags that fill
them, and the registry of stage names.

    pipeline_config   PipelineConfig and the run-wide sections (data, teacher,
                      distill, convert, evaluate)
    technique_config  the sections techniques share: `analysis`, `finetune`
                      (each technique's own: tfopt/techniques/<name>/settings.py)
    recipe            recipe files and presets/ (YAML) -> PipelineConfig
    options           --section.field flags, short aliases, the option reference
    registry          the only list of stage names and technique sections;
                      register() adds a stage (and its own section)

Everything a recipe or a script needs is importable from here:
`from tfopt.config import PipelineConfig, PruneConfig`.
"""

# pylint: disable=wildcard-import,unused-wildcard-import
from tfopt.config.pipeline_config import *
from tfopt.config.pipeline_config import COLOR_MODES, INT8_REPAIR_MODES, STRATEGIES
from tfopt.config.technique_config import *
# Each built-in technique's settings (registry.SECTIONS), for `from tfopt.config import ...`.
from tfopt.techniques.binary.settings import *
from tfopt.techniques.cluster.settings import *
from tfopt.techniques.lowrank.settings import *
from tfopt.techniques.prune.settings import *
from tfopt.techniques.qat.settings import *
from tfopt.techniques.search.settings import *
from tfopt.techniques.slim.settings import *
from tfopt.techniques.strided.settings import *

__all__ = sorted(name for name in globals() if not name.startswith("_") and name not in
                 ("pipeline_config", "technique_config", "registry", "techniques"))
