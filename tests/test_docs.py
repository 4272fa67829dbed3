"""The guides are maps that cannot go stale: README is short and points into
docs/, the site builds with warnings as errors, its option tables come from
the config, and every stage has its page."""

import re
import subprocess
import sys

from conftest import REPO_ROOT
from tfopt.config import registry

README_MAX_LINES = 250


def test_the_site_builds_with_warnings_as_errors(tmp_path):
  site = tmp_path / "site"
  done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                         "--site-dir", str(site)], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  options = (site / "reference" / "options" / "index.html").read_text()
  # The option tables were generated: every section, a setting's flag and default.
  assert "prune.target_sparsity" in options and "--target_sparsity" in options
  assert "distill.width" in options  # a task stage's own settings
  assert "tfopt:options" not in options
  api = (site / "reference" / "api" / "index.html").read_text()
  assert "calibration_count" in api  # tfopt.compress' arguments, from its signature


def test_readme_is_a_map_and_its_links_exist():
  readme = (REPO_ROOT / "README.md").read_text()
  assert len(readme.splitlines()) <= README_MAX_LINES
  links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
  assert len([link for link in links if link.startswith("docs/")]) >= 8
  missing = [link for link in links if not (REPO_ROOT / link).exists()]
  assert not missing, missing


def test_every_stage_is_in_the_techniques_table():
  table = (REPO_ROOT / "docs" / "techniques" / "index.md").read_text()
  pipeline_only = {"teacher", "scratch", "convert", "evaluate"}  # the run's own steps
  missing = [name for name in registry.names()
             if name not in pipeline_only and f"`{name}`" not in table]
  assert not missing, missing


def test_every_options_marker_names_a_section():
  pages = sorted((REPO_ROOT / "docs").rglob("*.md"))
  markers = [marker for page in pages
             for marker in re.findall(r"<!-- tfopt:options (\w+) -->", page.read_text())]
  from tfopt.config import options  # pylint: disable=g-import-not-at-top
  known = {name for name, _ in options.sections() if name} | {"all", "task", "top"}
  assert markers and set(markers) <= known, set(markers) - known
