"""mkdocs hook: `<!-- tfopt:options SECTION -->` in a page becomes that
section's option table, read from tfopt's config (tfopt.config.options); `<!--
tfopt:options all -->` every section's, `<!-- tfopt:options task -->` a task's
stages' settings. The reference cannot go stale."""

import re

from tfopt.config import options

_MARKER = re.compile(r"<!-- tfopt:options (\w+) -->")


def on_page_markdown(markdown, page, config, files):  # pylint: disable=unused-argument
  def table(match):
    section = match.group(1)
    if section == "task":
      from tfopt.run import task_run  # pylint: disable=g-import-not-at-top
      hooks = task_run.task_stages()
      return options.task_reference_markdown(
          {name: hook.config_class for name, hook in hooks.items()},
          {name: dict(hook.defaults) for name, hook in hooks.items()})
    known = {name or "top": name for name, _ in options.sections()}
    if section != "all" and section not in known:
      raise ValueError(f"{page.file.src_path}: no settings section {section!r}")
    return options.reference_markdown(known.get(section, "all"))
  return _MARKER.sub(table, markdown)
