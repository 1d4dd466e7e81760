"""Where a task's relative paths start: its pipeline's folder.

Policy. A task works *in its pipeline's folder*: the folder of the file the
pipeline was loaded from (the YAML/JSON file, or the Python module of
``stageflow run file.py:pipeline`` / ``module:pipeline``), else the current
directory when the run started (a pipeline built and run in Python). That is
where ``call:`` targets are imported from, so a spec and the files beside it
travel together:

* a ``bash`` command starts there (its ``cwd``; a relative ``cwd`` starts there too);
* every path an operator is given (``source``, ``to``, ``input_path``,
  ``script_path``, a drift ``reference`` ...) that is relative is joined to it,
  and so is the file of a relative SQLite URL (``sqlite:///warehouse.db``);
* URLs (``s3://``, ``https://``, ``memory://`` ...), ``sklearn:NAME`` and
  absolute paths are left as they are; ``~`` is expanded.

The attempt's scratch folder stays available as ``TaskContext.work_dir`` and,
for commands, ``$STAGEFLOW_WORK_DIR`` (the folder is ``$STAGEFLOW_PIPELINE_DIR``).
Python functions are not moved: they run in stageflow's own process (a thread
shares the process's current directory and cannot have its own), so they join
``context.pipeline_dir`` themselves. Nothing here touches a file: it is string
arithmetic on a folder the caller hands in.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["is_local_path", "resolve_path"]

#: ``sqlite:///relative/file.db`` (a fourth slash makes the path absolute); an
#: optional ``+driver`` and query string are kept.
_SQLITE = re.compile(r"(sqlite(?:\+\w+)?:///)(?!/)([^?]+)(\?.*)?", re.DOTALL)


def is_local_path(value: str) -> bool:
    """True when ``value`` names a local file or folder (not a URL, not ``sklearn:NAME``)."""
    return bool(value) and "://" not in value and not value.startswith("sklearn:")


def resolve_path(value: str, base: str | Path) -> str:
    """``value`` with a relative local path (or relative SQLite file) joined to ``base``.

    Anything else (a URL, ``sklearn:NAME``, an absolute path, ``sqlite://`` in memory)
    comes back unchanged; ``~`` is expanded.
    """
    sqlite = _SQLITE.fullmatch(value)
    if sqlite is not None:
        prefix, path, query = sqlite.groups()
        if path == ":memory:":
            return value
        return f"{prefix}{_join(base, path)}{query or ''}"
    if not is_local_path(value):
        return value
    return _join(base, value)


def _join(base: str | Path, path: str) -> str:
    expanded = os.path.expanduser(path)
    if os.path.isabs(expanded):
        return expanded
    return os.path.join(base, expanded)
