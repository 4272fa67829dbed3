"""The README's commands are the contract with users: keep CI and docs in step."""

import re

from conftest import REPO_ROOT

TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest -q'


def test_ci_runs_the_readme_test_command():
  readme = (REPO_ROOT / "README.md").read_text()
  ci = (REPO_ROOT / ".ci" / "run").read_text()
  assert TEST_COMMAND in readme
  assert re.search(r"^" + re.escape(TEST_COMMAND) + r"$", ci, re.MULTILINE)


def test_readme_names_the_main_job():
  readme = (REPO_ROOT / "README.md").read_text()
  assert "python -m tfopt.pipeline --dataset mnist" in readme
  assert "TFOPT_DATA_DIR" in readme
