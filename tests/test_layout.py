"""The house: folders by concern whose imports only point down, one folder
per technique, small modules and functions, the flat folder's paths still importable."""

import ast
import fnmatch
import importlib
import pathlib
import subprocess
import sys
import warnings

import pytest

from conftest import REPO_ROOT
from tfopt import _moved
from tfopt.config import registry
from tfopt.stages.base import Stage

PACKAGE = REPO_ROOT / "tfopt"
# Bottom to top: a module may import its own layer and the ones below it.
LAYERS = (
    ("core", ("tfopt.core", "tfopt.core.*")),
    # A technique's settings are plain dataclasses: PipelineConfig is made of them.
    ("config", ("tfopt.config", "tfopt.config.*", "tfopt.techniques.*.settings")),
    ("data and keras_io", ("tfopt.data", "tfopt.data.*", "tfopt.keras_io", "tfopt.keras_io.*")),
    ("training", ("tfopt.training", "tfopt.training.*")),
    ("litert", ("tfopt.litert", "tfopt.litert.*")),
    ("techniques", ("tfopt.techniques", "tfopt.techniques.*")),
    ("stages", ("tfopt.stages", "tfopt.stages.*")),
    # A user's task (its data, measurements, the task side of distill,
    # sensitivity and search), which a technique's stage runs on (on_task).
    ("task", ("tfopt.task", "tfopt.task.*", "tfopt.techniques.*.on_task")),
    ("technique stages", ("tfopt.techniques.*.stage",)),
    ("run", ("tfopt.run", "tfopt.run.*")),
    ("cli", ("tfopt.cli", "tfopt.cli.*")),
    ("entry points", ("tfopt", "tfopt.pipeline", "tfopt.__main__", "tfopt._moved")),
)
ENTRY_POINTS = ("__init__.py", "__main__.py", "pipeline.py", "_moved.py")


def _modules():
  found = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    found[name.removesuffix(".__init__")] = path
  return found


def _layer(module: str) -> int:
  """The layer of the most specific pattern that matches (a technique's settings.py
  is in config, its stage.py above stages/, the rest of its folder in techniques)."""
  matches = [(len(pattern), index) for index, (_, patterns) in enumerate(LAYERS)
             for pattern in patterns if fnmatch.fnmatchcase(module, pattern)]
  assert matches, f"{module} is in no layer of tests/test_layout.py"
  return max(matches)[1]


def _imports(path: pathlib.Path, modules, top_level_only: bool = False):
  """The tfopt modules `path` imports: anywhere, or only at module level (not
  inside a function or an `if __name__` guard). `from tfopt.core import errors`
  imports tfopt.core.errors (the package only as its parent)."""
  tree = ast.parse(path.read_text())
  found = set()
  for node in (tree.body if top_level_only else ast.walk(tree)):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfopt"):
      names = {f"{node.module}.{alias.name}" for alias in node.names}
      found.update(names & set(modules) or {node.module})
    elif isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names if alias.name.startswith("tfopt"))
  return {name for name in found if name in modules and name != "tfopt"}


def _edges(top_level_only: bool = False):
  modules = _modules()
  return {name: _imports(path, modules, top_level_only) for name, path in modules.items()}


def test_imports_only_point_down():
  upward = [f"{name} ({LAYERS[_layer(name)][0]}) imports {imported} "
            f"({LAYERS[_layer(imported)][0]})"
            for name, imported_set in _edges().items() for imported in sorted(imported_set)
            if _layer(imported) > _layer(name)]
  assert upward == []


def test_only_the_entry_points_sit_in_the_package_root():
  assert sorted(path.name for path in PACKAGE.glob("*.py")) == sorted(ENTRY_POINTS)


def test_nothing_imports_the_cli_and_the_library_has_no_import_cycle():
  edges = _edges()
  # pipeline.py and the `tfopt` command are the entry points that start the CLI.
  assert [name for name, imported in edges.items() if "tfopt.cli.compress" in imported
          and name not in ("tfopt.pipeline", "tfopt.cli.console")] == []
  _assert_no_cycle(_edges(top_level_only=True))
  # Nor through the imports inside functions (issue 29: _keras <-> image_files was one).
  _assert_no_cycle(edges)


def _assert_no_cycle(edges):
  for start in edges:
    seen, pending = set(), list(edges[start])
    while pending:
      name = pending.pop()
      assert name != start, f"import cycle through {start}"
      if name not in seen:
        seen.add(name)
        pending.extend(edges[name])


def test_each_technique_is_one_folder_with_its_algorithm_and_its_stage():
  folders = sorted(path.name for path in (PACKAGE / "techniques").iterdir()
                   if (path / "__init__.py").exists())
  assert folders and all((PACKAGE / "techniques" / name / "algorithm.py").exists()
                         for name in folders)
  assert [name for name in folders if name != "distill"  # distill's is the run-wide section
          and not (PACKAGE / "techniques" / name / "settings.py").exists()] == [
              "bitwidth", "sensitivity", "sweep"]  # their section: the shared `analysis`
  for name, module in registry.BUILTIN.items():
    stage = registry.get(name)
    assert isinstance(stage, Stage) and stage.name == name
    assert type(stage).run is not Stage.run
    if name in folders:
      assert module == f"tfopt.techniques.{name}.stage"
    else:  # the run's own stages: teacher, scratch, convert, evaluate
      assert module.startswith("tfopt.stages.")
  assert set(folders) <= set(registry.BUILTIN)


def test_settings_import_without_tensorflow():
  # A recipe or a config is read before TensorFlow starts (and --help without it).
  code = ("import sys, tfopt.config, tfopt.config.recipe, tfopt.config.options; "
          "print(sorted(name for name in ('tensorflow', 'tf_keras', 'numpy') if name in sys.modules))")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert done.stdout.strip() == "[]"


def test_modules_and_functions_stay_small():
  for path in _modules().values():
    lines = path.read_text().count("\n")
    assert lines <= 500, f"{path.relative_to(REPO_ROOT)} has {lines} lines"
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        assert length <= 60, f"{path.name}:{node.name} has {length} lines"


@pytest.mark.parametrize("old", ["prune", "stages.prune", "console", "technique_config", "task_run",
                                 "stages.registry", "search_space"])
def test_the_old_paths_still_import_with_a_deprecation_note(old):
  new = "tfopt." + _moved.MOVED[old]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    module = importlib.import_module("tfopt." + old)
  assert module is importlib.import_module(new) and module.__spec__.name == new
  assert any(f"tfopt.{old} moved to {new}" in str(warning.message) for warning in caught)


def test_every_moved_path_names_a_module_that_exists():
  modules = _modules()
  assert [new for new in _moved.MOVED.values() if "tfopt." + new not in modules] == []
  assert [old for old in _moved.MOVED if "tfopt." + old in modules] == []


def test_nothing_in_tfopt_imports_an_old_path():
  old = {"tfopt." + name for name in _moved.MOVED}
  for name, path in _modules().items():
    tree = ast.parse(path.read_text())
    named = {f"{node.module}.{alias.name}" for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}
    named |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    named |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
              for alias in node.names}
    assert not named & old, f"{name} imports {sorted(named & old)}"
