"""Every setting of a run, read from PipelineConfig: the option reference.

A setting is a field of PipelineConfig or of one of its sections (the
dataclasses in tfopt.config: the run-wide ones and each technique's settings.py).
Each one can be set in a recipe (`section: {field: value}`) and on the command line as
`--section.field=value`; the everyday ones also have a short flag, listed in
ALIASES (cli/compress.py defines those flags and reads this table). The docs site's
option reference is `reference_markdown()`, so it cannot drift from the code.
A field's description is its entry in its class's docstring
(`name: text`, or `a / b: text` for several fields).
"""

import dataclasses
import re
import typing
from typing import Dict, List, Optional, Tuple

from tfopt.config import PipelineConfig
from tfopt.config.technique_config import FineTuneConfig

__all__ = ["ALIASES", "EVERYDAY", "DEPRECATED", "replacement", "MULTI_ALIASES", "FINE_TUNING", "Option", "sections", "options",
           "field_descriptions", "reference_markdown", "task_reference_markdown"]

# short flag -> (section, field); section None: a top-level field.
ALIASES: Dict[str, Tuple[Optional[str], str]] = {
    "dataset": ("data", "dataset"), "data_dir": ("data", "data_dir"),
    "labels_file": ("data", "labels_file"), "color_mode": ("data", "color_mode"),
    "augment": ("data", "augment"), "image_size": ("data", "image_size"),
    "input_range": ("data", "input_range"),
    "seed": (None, "seed"), "strategy": (None, "strategy"),
    "worker_timeout": (None, "worker_timeout"), "model": (None, "model"),
    "output_dir": (None, "output_dir"), "compare_scratch": (None, "compare_scratch"),
    "allow_unsafe_model": (None, "allow_unsafe_model"), "stages": (None, "stages"),
    "teacher": ("teacher", "builder"), "teacher_epochs": ("teacher", "epochs"),
    "teacher_learning_rate": ("teacher", "learning_rate"),
    "student": ("distill", "builder"), "distill_epochs": ("distill", "epochs"),
    "distill_learning_rate": ("distill", "learning_rate"),
    "temperature": ("distill", "temperature"), "alpha": ("distill", "alpha"),
    "target_sparsity": ("prune", "target_sparsity"), "prune_epochs": ("prune", "epochs"),
    "slim_rate": ("slim", "rate"), "slim_prune_count": ("slim", "prune_count"),
    "slim_finetune_epochs": ("slim", "finetune_epochs"),
    "slim_sparsity_epochs": ("slim", "sparsity_epochs"),
    "slim_l1": ("slim", "l1_strength"), "slim_criterion": ("slim", "criterion"),
    "slim_scope": ("slim", "scope"), "slim_min_channels": ("slim", "min_channels"),
    "slim_layers": ("slim", "layers"),
    "strided_finetune_epochs": ("strided", "finetune_epochs"),
    "lowrank_energy": ("lowrank", "energy"),
    "lowrank_param_ratio": ("lowrank", "param_ratio"),
    "lowrank_finetune_epochs": ("lowrank", "finetune_epochs"),
    "lowrank_layers": ("lowrank", "layers"), "lowrank_ranks": ("lowrank", "ranks"),
    "clusters": ("cluster", "number_of_clusters"),
    "cluster_init": ("cluster", "centroid_init"), "cluster_epochs": ("cluster", "epochs"),
    "cluster_learning_rate": ("cluster", "learning_rate"),
    "cluster_preserve_sparsity": ("cluster", "preserve_sparsity"),
    "cluster_layers": ("cluster", "layers"),
    "cluster_layer_clusters": ("cluster", "layer_clusters"),
    "qat_scheme": ("qat", "scheme"), "qat_epochs": ("qat", "epochs"),
    "qat_bits": ("qat", "bits"), "qat_learning_rate": ("qat", "learning_rate"),
    "binary_mode": ("binary", "mode"), "binary_epochs": ("binary", "epochs"),
    "binary_layers": ("binary", "layers"),
    "bits": ("analysis", "bits"), "sweep_qualities": ("analysis", "sweep_qualities"),
    "sensitivity_sparsities": ("analysis", "sensitivity_sparsities"),
    "sensitivity_target_sparsity": ("analysis", "sensitivity_target_sparsity"),
    "latency_breakdown": ("evaluate", "latency_breakdown"),
    "quantization_debug": ("evaluate", "quantization_debug"),
    "num_threads": ("evaluate", "num_threads"), "latency_runs": ("evaluate", "latency_runs"),
    "objective": ("search", "objective"), "search_budget": ("search", "time_budget"),
    "search_modes": ("search", "modes"),
    "quant_modes": ("convert", "modes"), "int4_layers": ("convert", "int4_layers"),
    "int8_repair": ("convert", "int8_repair"),
    "int8_repair_size_ratio": ("convert", "int8_repair_size_ratio"),
    "int8_repair_latency_ratio": ("convert", "int8_repair_latency_ratio"),
}

# The everyday short flags. The other aliases keep working for this release,
# with a note naming their --section.field form; they go in tfopt 0.3.
EVERYDAY = frozenset((
    "dataset", "data_dir", "labels_file", "color_mode", "augment", "image_size",
    "input_range", "seed", "strategy", "model", "output_dir", "compare_scratch",
    "allow_unsafe_model", "stages", "teacher", "teacher_epochs", "student", "distill_epochs",
    "temperature", "alpha", "target_sparsity", "prune_epochs", "slim_rate", "clusters",
    "qat_scheme", "qat_bits", "binary_mode", "lowrank_param_ratio", "lowrank_energy",
    "lowrank_ranks", "cluster_layer_clusters", "objective",
    "search_budget", "quant_modes", "int4_layers", "int8_repair", "num_threads"))
DEPRECATED = frozenset(flag for flag, (section, _) in ALIASES.items()
                       if section is not None) - EVERYDAY


def replacement(flag: str) -> str:
  """The --section.field form of a short flag, e.g. --qat.epochs for --qat_epochs."""
  section, name = ALIASES[flag]
  return f"--{section}.{name}" if section else f"--{name}"


# Short flags that write one value into several settings.
MULTI_ALIASES: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "batch_size": tuple((section, "batch_size") for section in (
        "teacher", "distill", "prune", "slim", "strided", "lowrank", "cluster", "qat",
        "binary")),
    "max_accuracy_drop": (("analysis", "max_accuracy_drop"),
                          ("search", "max_accuracy_drop")),
}


# What the fine-tuning settings mean wherever a section has them.
FINE_TUNING = {
    "epochs": "training epochs of this stage",
    "finetune_epochs": "fine-tuning epochs after each change to the model",
    "batch_size": "training batch size (per replica with a distribution strategy)",
    "learning_rate": "peak learning rate of this stage's training",
    "use_teacher": "fine-tune by distillation from the teacher (when the run has one) "
                   "rather than from the labels alone",
}


@dataclasses.dataclass(frozen=True)
class Option:
  """One setting: where it lives, its type and default, and what it does."""
  section: Optional[str]  # None: a top-level field of PipelineConfig
  name: str
  type_text: str
  default: object
  description: str
  flags: Tuple[str, ...]  # the short flags that set it

  @property
  def key(self) -> str:
    return f"{self.section}.{self.name}" if self.section else self.name


def sections() -> List[Tuple[Optional[str], type]]:
  """[(section name, its dataclass)]: the top level (None) first, then
  PipelineConfig's sections, then `finetune` (shared by the techniques, read
  by recipes and flags; see FineTuneConfig), then those of the stages
  registered with their own settings (Stage.config_class)."""
  found = [(None, PipelineConfig)]
  hints = typing.get_type_hints(PipelineConfig)
  for item in dataclasses.fields(PipelineConfig):
    if dataclasses.is_dataclass(hints[item.name]):
      found.append((item.name, hints[item.name]))
  from tfopt.config import registry  # pylint: disable=g-import-not-at-top
  return found + [("finetune", FineTuneConfig)] + list(registry.stage_sections().items())


def options() -> List[Option]:
  """Every setting of PipelineConfig and its sections, in declaration order."""
  flags_of = _flags_by_key()
  found = []
  for section, cls in sections():
    described = field_descriptions(cls)
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
      if section is None and (dataclasses.is_dataclass(hints[item.name])
                              or item.name == "stage_settings"):
        continue
      key = f"{section}.{item.name}" if section else item.name
      found.append(Option(section, item.name, _type_text(hints[item.name]),
                          _default(item),
                          described.get(item.name, FINE_TUNING.get(item.name, "")),
                          tuple(flags_of.get(key, ()))))
  return found


def field_descriptions(cls) -> Dict[str, str]:
  """{field: its text} from `name: text` entries of the class docstring."""
  described, names, text = {}, [], []
  entry = re.compile(r"^  ([a-z_][a-z0-9_]*(?:\s*[/,]\s*[a-z_][a-z0-9_]*)*): (.*)$")
  for line in (cls.__doc__ or "").splitlines()[1:] + [""]:
    match = entry.match(line)
    if match or not line.startswith("   "):
      for name in names:
        described[name] = " ".join(text)
      names, text = [], []
    if match:
      names = re.split(r"\s*[/,]\s*", match.group(1))
      text = [match.group(2).strip()]
    elif names:
      text.append(line.strip())
  return described


def reference_markdown(only: Optional[str] = "all") -> str:
  """The option reference as Markdown tables: every section ("all"), or one
  (its name; None: the top-level settings)."""
  found = options()
  return "\n".join(
      _table(f"`{section}`" if section else "Top level", cls,
             [option for option in found if option.section == section])
      for section, cls in sections() if only in (section, "all"))


def task_reference_markdown(configs: Dict[str, type], defaults: Dict[str, dict]) -> str:
  """A task's stage settings as tables: configs {stage: config class},
  defaults {stage: {field: the task's default}} (tfopt.run.task_run's)."""
  tables, flags_of = [], _flags_by_key()
  for stage, cls in configs.items():
    described = field_descriptions(cls)
    hints = typing.get_type_hints(cls)
    tables.append(_table(f"`{stage}` (task)", cls, [
        Option(stage, item.name, _type_text(hints[item.name]),
               defaults.get(stage, {}).get(item.name, _default(item)),
               described.get(item.name, FINE_TUNING.get(item.name, "")),
               tuple(flags_of.get(f"{stage}.{item.name}", ())))
        for item in dataclasses.fields(cls)]))
  return "\n".join(tables)


def _table(title: str, cls, rows: List[Option]) -> str:
  summary = (cls.__doc__ or "").strip().splitlines()[0]
  lines = [f"| `{option.key}` | {_cell(option.type_text)} | {_cell(repr(option.default))} "
           f"| {_cell(', '.join('--' + flag for flag in option.flags))} "
           f"| {_cell(option.description)} |" for option in rows]
  return (f"### {title}\n\n{summary}\n\n| setting | type | default | short flag "
          f"| what it does |\n|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def _flags_by_key() -> Dict[str, List[str]]:
  found: Dict[str, List[str]] = {}
  for flag, (section, name) in ALIASES.items():
    found.setdefault(f"{section}.{name}" if section else name, []).append(flag)
  for flag, targets in MULTI_ALIASES.items():
    for section, name in targets:
      found.setdefault(f"{section}.{name}", []).append(flag)
  return found


def _type_text(hint) -> str:
  text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
  text = text or str(hint).replace("typing.", "")
  return text.replace("NoneType", "None")


def _default(item: dataclasses.Field):
  if item.default is not dataclasses.MISSING:
    return item.default
  return item.default_factory() if item.default_factory is not dataclasses.MISSING else None


def _cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")
