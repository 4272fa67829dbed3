"""Recipes: a run's whole configuration as a YAML file.

A recipe is PipelineConfig written out: top-level keys are its fields
(stages, seed, output_dir, ...), and each section (data, teacher, distill,
prune, slim, ...) is a mapping of that dataclass's fields. Every key may be
left out (it keeps its default). Values are checked by the same dataclasses
that check flags; an unknown key, a wrong type or a value out of range is one
RecipeError naming the file, the line and the key.

    load(path) -> Recipe       read and type-check a file (no defaults applied)
    from_assignments(["prune.target_sparsity=0.8"]) -> Recipe
                               the same from the command line's --section.field=value
    build(merge(recipe.changes(), more), recipe) -> PipelineConfig
    dump(config) -> str        the resolved recipe of a run (recipe.yaml)
    preset_path(name)          a recipe shipped in tfopt/config/presets/
    quick(**sections)          the quick preset as a PipelineConfig (tests, smoke runs)

Every run writes its resolved recipe.yaml into the output dir;
`tfopt compress --recipe runs/x/recipe.yaml` runs it again (resume keeps it).
"""

import dataclasses
import os
import re
import typing
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from tfopt.config import PipelineConfig, registry
from tfopt.config.technique_config import FINE_TUNED_SECTIONS, FineTuneConfig
from tfopt.core.validate import ConfigError

__all__ = ["RecipeError", "Recipe", "Setting", "load", "from_assignments", "assignments",
           "merge", "build", "dump", "preset_path", "preset_names",
           "quick", "FILENAME"]

FILENAME = "recipe.yaml"
PRESET_DIR = os.path.join(os.path.dirname(__file__), "presets")
_SECTIONS = tuple(field.name for field in dataclasses.fields(PipelineConfig)
                  if dataclasses.is_dataclass(field.type))
# Not a PipelineConfig section: its values are copied into the technique
# sections when a recipe's changes are read (Recipe.changes).
FINETUNE = "finetune"
STAGE_SETTINGS = "stage_settings"  # written as one section per stage, never by this name


def _read_sections() -> Tuple[str, ...]:
  """The sections a recipe may hold: PipelineConfig's, finetune, and those of
  the stages registered with their own settings."""
  return _SECTIONS + (FINETUNE,) + tuple(registry.stage_sections())


def _recipe_hints() -> Dict[str, Any]:
  """The keys a recipe may hold and their types."""
  hints = dict(typing.get_type_hints(PipelineConfig))
  del hints[STAGE_SETTINGS]
  hints[FINETUNE] = FineTuneConfig
  hints.update(registry.stage_sections())
  return hints


# {section name, or None for PipelineConfig's own fields: {field: value}}
Changes = Dict[Optional[str], Dict[str, Any]]


class RecipeError(ConfigError):
  """A recipe file cannot be read, or holds a bad key or value."""


@dataclasses.dataclass(frozen=True)
class Setting:
  """One value of a recipe, and where it was written."""
  section: Optional[str]  # None for a top-level key
  key: str
  value: Any
  line: int

  @property
  def name(self) -> str:
    return f"{self.section}.{self.key}" if self.section else self.key


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The settings a recipe file gives, type-checked, in file order."""
  path: str
  settings: Tuple[Setting, ...]

  def changes(self) -> Changes:
    """{section (None: top level): {key: value}}, as build() takes them; the
    shared `finetune` settings copied into each technique section that has
    them and does not set its own here (see FineTuneConfig)."""
    changes: Changes = {}
    for setting in self.settings:
      if setting.section != FINETUNE:
        changes.setdefault(setting.section, {})[setting.key] = setting.value
    shared, hints = self.finetune(), typing.get_type_hints(PipelineConfig)
    for section in FINE_TUNED_SECTIONS:
      fields = tuple(item.name for item in dataclasses.fields(hints[section]))
      for key, value in shared.shared_with(fields).items():
        changes.setdefault(section, {}).setdefault(key, value)
    return changes

  def finetune(self) -> FineTuneConfig:
    """The shared fine-tuning settings this recipe gives (FineTuneConfig)."""
    given = [s for s in self.settings if s.section == FINETUNE]
    try:
      return FineTuneConfig(**{s.key: s.value for s in given})
    except ConfigError as error:
      culprit = _culprit(str(error), given)
      raise (self.error(culprit, str(error)) if culprit else error) from None

  def sets(self, section: Optional[str], key: str) -> bool:
    """Whether this recipe gives section.key itself (not through finetune)."""
    return any(s.section == section and s.key == key for s in self.settings)

  def error(self, setting: Setting, message: str) -> RecipeError:
    return RecipeError(f"recipe {self.path}, line {setting.line} ({setting.name}): "
                       f"{message}")


def merge(*layers: Changes) -> Changes:
  """The layers' values, each layer over the ones before it."""
  merged: Changes = {}
  for layer in layers:
    for section, values in layer.items():
      merged.setdefault(section, {}).update(values)
  return merged


def build(changes: Changes, recipe: Optional[Recipe] = None) -> PipelineConfig:
  """PipelineConfig() with `changes`, validated in one go.

  A ConfigError about a value that `recipe` gave (and no later layer
  replaced) is raised again as a RecipeError naming its line.
  """
  default = PipelineConfig()
  sections, own = {}, registry.stage_sections()
  for name, values in changes.items():
    if name is not None:
      sections[name] = _explained(recipe, name, values, lambda: dataclasses.replace(
          default.section(name), **values))
  top = dict(changes.get(None, {}))
  stage_settings = tuple((name, sections.pop(name)) for name in own if name in sections)
  if stage_settings:
    top[STAGE_SETTINGS] = stage_settings
  return _explained(recipe, None, top, lambda: dataclasses.replace(
      default, **sections, **top))


def _explained(recipe: Optional[Recipe], section: Optional[str], values: dict, make):
  try:
    return make()
  except ConfigError as error:
    given = [s for s in (recipe.settings if recipe else ())
             if s.section == section and s.key in values and values[s.key] == s.value]
    culprit = _culprit(str(error), given)
    if culprit is None:
      raise
    raise recipe.error(culprit, str(error)) from None


def _culprit(message: str, settings: List[Setting]) -> Optional[Setting]:
  """The setting an error message is about: the one it names first, else
  stages (chain errors), else None."""
  named = [(message.find(s.key), s) for s in settings
           if re.search(rf"\b{re.escape(s.key)}\b", message)]
  if named:
    return min(named, key=lambda pair: pair[0])[1]
  return next((s for s in settings if s.key == "stages"), None)


def load(path: str) -> Recipe:
  """Reads and type-checks a recipe file.

  Raises:
    RecipeError: a missing or unreadable file, a YAML syntax error (with its
      line), an unknown or repeated key, or a value of the wrong type.
  """
  try:
    with open(path, encoding="utf-8") as file:
      text = file.read()
  except (OSError, UnicodeDecodeError) as error:
    raise RecipeError(f"recipe {path} cannot be read: {error}. Give a YAML file "
                      f"(see tfopt/config/presets/ for examples).") from None
  loader = yaml.SafeLoader(text)
  try:
    root = loader.get_single_node()
    settings = _settings(path, loader, root)
  except yaml.MarkedYAMLError as error:
    mark = error.problem_mark or error.context_mark
    line = f", line {mark.line + 1}" if mark else ""
    raise RecipeError(f"recipe {path}{line}: not valid YAML: {error.problem}.") from None
  except yaml.YAMLError as error:
    raise RecipeError(f"recipe {path}: not valid YAML: {error}.") from None
  finally:
    loader.dispose()
  return Recipe(path, tuple(settings))


def assignments(items: Sequence[str]) -> List[Tuple[Optional[str], str, Any]]:
  """["section.field=value", "field=value"] -> [(section or None, field, value)],
  each value read as YAML (0.8 a number, true a bool, [a, b] a list).

  Raises:
    RecipeError: an item without `=`, or a value that is not valid YAML.
  """
  parsed = []
  for item in items:
    name, equals, text = item.partition("=")
    if not equals or not name:
      raise RecipeError(f"--set {item!r}: write section.field=value, e.g. "
                        "prune.target_sparsity=0.8.")
    try:
      value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
      raise RecipeError(f"--{name}={text}: not a valid value ({error}).") from None
    section, dot, key = name.rpartition(".")
    parsed.append((section if dot else None, key, value))
  return parsed


def from_assignments(items: Sequence[str]) -> Recipe:
  """The command line's `--section.field=value` settings as a Recipe, each key
  and value checked as a recipe file's (position i stands for its line)."""
  hints = _recipe_hints()
  settings = []
  for position, (section, key, value) in enumerate(assignments(items), 1):
    name = f"{section}.{key}" if section else key
    fail = lambda message, name=name: RecipeError(f"--{name}: {message}")
    if section is not None and section not in _read_sections():
      raise fail(f"unknown section {section!r}; the sections are: {', '.join(_read_sections())}.")
    where = typing.get_type_hints(hints[section]) if section else hints
    if key not in where or (section is None and key in _read_sections()):
      known = [field for field in where if section or field not in _read_sections()]
      raise fail(f"unknown key {key!r} in {f'section {section}' if section else 'the recipe'}"
                 f"; the keys are: {', '.join(known)}.")
    typed = _typed(value, where[key], name, lambda message: RecipeError(f"--{message}"))
    settings.append(Setting(section, key, typed, position))
  return Recipe("the command line", tuple(settings))


def _settings(path: str, loader, root) -> List[Setting]:
  if root is None:
    return []  # an empty file: every default
  fail = lambda node, message: RecipeError(
      f"recipe {path}, line {node.start_mark.line + 1}: {message}")
  if not isinstance(root, yaml.MappingNode):
    raise fail(root, "a recipe is a mapping of keys (stages:, seed:, teacher:, ...).")
  hints = _recipe_hints()
  settings = []
  for key_node, value_node, key in _keys(root, loader, fail, hints, "the recipe"):
    if key in _read_sections():
      if not isinstance(value_node, yaml.MappingNode):
        raise fail(value_node, f"{key} is a section: give its keys below it, indented.")
      section_hints = typing.get_type_hints(hints[key])
      for sub_key_node, sub_value_node, sub_key in _keys(
          value_node, loader, fail, section_hints, f"section {key}"):
        value = loader.construct_object(sub_value_node, deep=True)
        settings.append(Setting(key, sub_key, _typed(
            value, section_hints[sub_key], f"{key}.{sub_key}",
            lambda message, node=sub_value_node: fail(node, message)),
                                sub_key_node.start_mark.line + 1))
    else:
      value = loader.construct_object(value_node, deep=True)
      settings.append(Setting(None, key, _typed(
          value, hints[key], key, lambda message, node=value_node: fail(node, message)),
                              key_node.start_mark.line + 1))
  return settings


def _keys(mapping, loader, fail, hints: Dict[str, Any], where: str):
  """(key node, value node, key) of a mapping; unknown or repeated keys refused."""
  seen = set()
  for key_node, value_node in mapping.value:
    key = loader.construct_object(key_node)
    if not isinstance(key, str) or key not in hints:
      known = ", ".join(hints)
      raise fail(key_node, f"unknown key {key!r} in {where}; the keys are: {known}.")
    if key in seen:
      raise fail(key_node, f"{key} is given twice in {where}.")
    seen.add(key)
    yield key_node, value_node, key


def _typed(value, hint, name: str, fail):
  """`value` as the field's type wants it (lists become tuples); else fail."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin is typing.Union:  # Optional[X]
    if value is None:
      return None
    hint = next(arg for arg in args if arg is not type(None))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin is tuple:
    if not isinstance(value, list):
      raise fail(f"{name}: {value!r} is not a list; write [a, b, ...].")
    kinds = args[:1] * len(value) if args[-1] is Ellipsis else args
    if len(kinds) != len(value):
      raise fail(f"{name}: {value!r} must be a list of {len(args)} values.")
    return tuple(_typed(item, kind, name, fail) for item, kind in zip(value, kinds))
  if origin is dict:
    if not isinstance(value, dict):
      raise fail(f"{name}: {value!r} is not a mapping; write {{layer: value, ...}}.")
    return {_typed(k, args[0], name, fail): _typed(v, args[1], name, fail)
            for k, v in value.items()}
  return _scalar(value, hint, name, fail)


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


# YAML 1.1 reads on / off / yes / no as booleans; a string setting whose
# values are words (convert.int8_repair: on | off) takes them back.
_BOOL_WORDS = {True: "on", False: "off"}


def _scalar(value, hint, name: str, fail):
  if hint is str and isinstance(value, bool):
    return _BOOL_WORDS[value]
  if hint is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
    return value
  raise fail(f"{name}: {value!r} is not {_TYPE_NAMES.get(hint, hint.__name__)}.")


def dump(config: PipelineConfig) -> str:
  """The resolved recipe of `config`: every value, top-level keys first."""
  as_dict = config.to_dict()
  stage_settings = as_dict.pop(STAGE_SETTINGS)
  ordered = {key: value for key, value in as_dict.items() if key not in _SECTIONS}
  ordered.update((key, as_dict[key]) for key in _SECTIONS)
  ordered.update((name, values) for name, values in stage_settings)
  header = ("# tfopt recipe: every setting of one run. Rerun it with\n"
            "#   tfopt compress --recipe THIS_FILE\n"
            "# (flags given as well override its values).\n")
  return header + yaml.dump(ordered, Dumper=_Dumper, sort_keys=False,
                            default_flow_style=False, width=100)


class _Dumper(yaml.SafeDumper):
  """Lists on one line ([8, 4, 2]), mappings as indented blocks."""


_Dumper.add_representer(list, lambda dumper, value: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", value, flow_style=True))
_Dumper.add_representer(tuple, lambda dumper, value: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", list(value), flow_style=True))


def quick(**sections) -> PipelineConfig:
  """The quick preset (tfopt/config/presets/quick.yaml) as a PipelineConfig, with
  whole sections replaced by `sections` (e.g. data=DataConfig(data_dir=...))."""
  return dataclasses.replace(build(load(preset_path("quick")).changes()), **sections)


def preset_names() -> List[str]:
  return sorted(name[:-len(".yaml")] for name in os.listdir(PRESET_DIR)
                if name.endswith(".yaml"))


def preset_path(name: str) -> str:
  """tfopt/config/presets/NAME.yaml; RecipeError listing the presets if none."""
  if name not in preset_names():
    raise RecipeError(f"preset={name!r} is invalid: it must be one of "
                      f"{', '.join(preset_names())}.")
  return os.path.join(PRESET_DIR, f"{name}.yaml")

