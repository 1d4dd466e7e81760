"""Task output caching: content-addressed keys and their entries in the store.

Policy. A task with ``cache: true`` (its own or the pipeline's ``defaults``)
gets a key at dispatch: the sha256 of the canonical JSON of

* its code: the function's source (``inspect.getsource``; its ``module:qualname``
  when the source cannot be read), or ``operator:NAME:VERSION`` (``Operator.version``);
* its resolved parameters (``${params.X}`` substituted), and the run parameters
  it can see: for a function, those named like one of its parameters (all of
  them if it takes the task ``context``); for an operator, all of them;
* its data inputs' content hashes, in ``upstream`` order (the upstream
  ``OutputRef.sha256``: a hash of the serialized bytes), and its ``inputs``
  (which upstream output feeds which parameter) when it has any;
* ``cache_version`` (bump it to invalidate by hand, e.g. after changing a
  helper the function calls: only the function's own source is hashed);
* the source data's version where it can be known: every parameter value (at
  any depth) that is the path of an existing local file adds its size and
  ``st_mtime_ns`` (a relative path is looked up where the task will read it: an
  operator's in the pipeline's folder, ``operators/paths.py``; a function's in
  the current directory, which is the one it sees), so a rewritten input file
  is a miss even when the task's spec did not change; every fsspec URL
  (``s3://``, ``gs://``, ``https://``, ``memory://`` ...) adds the version
  fields its filesystem reports (ETag, generation, last modified, size), asked
  afresh each time (``operators/object_storage.py``: a listing this process
  cached, e.g. an object schedule's, would hide a rewritten object).
  Directories and databases are not looked into: give such a task
  ``cache_ttl_seconds`` or a ``cache_version`` parameter (a query's text is
  part of the parameters anyway).

A hit (an entry under the key, younger than ``cache_ttl_seconds`` and whose
output file still exists, locally or in the object store) is reused without
running: the ``OutputRef`` is copied into the new run, pointing at the bytes the
first run stored. After a successful attempt the entry is written (replacing
an older one) in the same transaction as the success; ``--no-cache`` skips
lookups but still writes, so it refreshes the entries. Outputs produced by a
``fallback`` are never cached.

Files' versions are read at dispatch (for the lookup) and again when the task
has succeeded: the entry is stored under the key *as of its end*. So a task
that writes a file named in its parameters (an output path) hits on the next
run while that file is untouched, and runs again when it was changed or
deleted; a task that only reads its files gets the same key both times.

Because keys hash input *contents*, a downstream task whose upstream re-ran
but produced byte-identical output is a legitimate hit: nothing it depends on
changed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stageflow.operators import object_storage
from stageflow.operators.base import TaskContext
from stageflow.operators.paths import resolve_path
from stageflow.operators.python import resolve_callable
from stageflow.operators.registry import get as get_operator
from stageflow.runtime.store.base import CacheEntry, OutputRef, Store
from stageflow.spec.models import Pipeline, Task, callable_ref

__all__ = ["KeyRecipe", "TaskCache", "code_identity", "file_versions"]

_KEY_FORMAT = 1  # bump when the key's recipe changes: old entries then simply miss
_MAX_PATH = 4096


class TaskCache:
    """Keys, lookups and new entries for one run's cached tasks (see the module doc)."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: Store,
        run_params: Mapping[str, Any],
        *,
        lookup: bool,
        pipeline_dir: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.pipeline_dir = pipeline_dir
        self.store = store
        self.run_params = run_params
        self.lookup_enabled = lookup
        self._purged = False
        # by function (its id: the pipeline keeps it alive), call target or operator:
        # generated graphs share one function across thousands of tasks, and
        # inspect.getsource tokenizes the function's file each time
        self._code: dict[object, tuple[str, list[str] | None]] = {}

    def key(self, task: Task, parameters: Mapping[str, Any], inputs: list[OutputRef | None]) -> str:
        """The cache key of ``task`` with these resolved parameters and inputs, now."""
        return self.prepare(task, parameters, inputs).key()

    def prepare(
        self, task: Task, parameters: Mapping[str, Any], inputs: list[OutputRef | None]
    ) -> KeyRecipe:
        """Everything in the key but the files' versions, which ``KeyRecipe.key``
        reads each time it is called."""
        code, visible = self._code_of(task)
        run_params = (
            dict(self.run_params)
            if visible is None
            else {k: self.run_params[k] for k in visible if k in self.run_params}
        )
        document = {
            "format": _KEY_FORMAT,
            "code": code,
            "parameters": parameters,
            "run_params": run_params,
            "inputs": [None if ref is None else ref.sha256 for ref in inputs],
            "cache_version": self.pipeline.cache_version_of(task),
        }
        if task.inputs:  # which output feeds which parameter (absent: keys stay as they were)
            document["bindings"] = dict(task.inputs)
        operator = task.fn is None and task.call is None  # it resolves paths itself
        base = self.pipeline_dir if operator else None
        return KeyRecipe(document, [parameters, run_params], base)

    def lookup(self, task: Task, key: str, now: float) -> CacheEntry | None:
        """A usable entry under ``key``: not expired, not older than the task's TTL
        now, and its output file still there (on disk, or in the object store)."""
        if not self.lookup_enabled:
            return None
        if not self._purged:  # once per run: expired entries go (an indexed delete)
            self._purged = True
            self.store.delete_expired_cache(now)
        entry = self.store.get_cache(key, now)
        if entry is None:
            return None
        ttl = self.pipeline.cache_ttl_of(task)
        if ttl is not None and now - entry.created_at > ttl:
            return None
        uri = entry.output.uri
        if entry.output.kind == "file" and uri is not None:
            if "://" not in uri or uri.startswith("file://"):
                present = Path(uri.removeprefix("file://")).is_file()
            else:  # an object store: one HEAD request
                present = bool(object_storage.object_version(uri))
            if not present:
                return None  # its run's artifacts were deleted: run again
        return entry

    def entry(self, task: Task, key: str, output: OutputRef, now: float) -> CacheEntry:
        """The entry to write after ``task`` produced ``output``."""
        ttl = self.pipeline.cache_ttl_of(task)
        return CacheEntry(key, self.pipeline.name, output, now, None if ttl is None else now + ttl)

    @staticmethod
    def reuse(entry: CacheEntry, run_id: str, task_id: str) -> OutputRef:
        """The cached output as this run's output of ``task_id`` (same bytes, same place)."""
        return entry.output._replace(run_id=run_id, task_id=task_id)

    def _code_of(self, task: Task) -> tuple[str, list[str] | None]:
        which: object = (
            ("fn", id(task.fn))
            if task.fn is not None
            else ("call", task.call)
            if task.call is not None
            else ("operator", task.operator_name)
        )
        found = self._code.get(which)
        if found is None:
            found = self._code[which] = code_identity(task)
        return found


@dataclass(frozen=True, slots=True)
class KeyRecipe:
    """A task's cache key, short of the versions of the files its values name."""

    document: dict[str, Any]
    values: list[Any]
    base: str | None = None  # where relative paths start (``None``: the current directory)

    def key(self) -> str:
        """The key with the files' versions as they are now."""
        document = {**self.document, "files": file_versions(self.values, self.base)}
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=repr)
        return hashlib.sha256(text.encode()).hexdigest()


def code_identity(task: Task) -> tuple[str, list[str] | None]:
    """What identifies ``task``'s code, and the run parameters it can see by name
    (``None``: all of them)."""
    if task.fn is not None or task.call is not None:
        fn: Callable[..., Any] = (
            task.fn if task.fn is not None else resolve_callable(task.call or "")
        )
        try:
            code = "source:" + inspect.getsource(fn)
        except (OSError, TypeError):  # built in, generated, or no source file
            code = "name:" + callable_ref(fn)
        try:
            sig = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return code, None
        takes_context = any(
            name == "context" or p.annotation in (TaskContext, "TaskContext")
            for name, p in sig.items()
        )
        return code, None if takes_context else sorted(sig)
    cls = get_operator(task.operator_name, task=task.id)
    return f"operator:{task.operator_name}:{cls.version}", None


_REMOTE = re.compile(r"(s3|s3a|gs|gcs|az|abfs|abfss|adl|https?|memory|ftp|sftp)://\S+")


def file_versions(values: Any, base: str | None = None) -> dict[str, list[Any]]:
    """``{path: [size, mtime_ns]}`` for every string in ``values`` (nested lists and
    mappings) that is the path of an existing local file (a relative one under
    ``base`` when given), and ``{url: [...]}`` with the object's version fields
    (ETag, generation, last modified, size) for every fsspec URL (``s3://``,
    ``gs://``, ``https://``, ``memory://`` ...) that answers."""
    found: dict[str, list[Any]] = {}
    stack = [values]
    while stack:
        value = stack.pop()
        if isinstance(value, str) and _REMOTE.fullmatch(value):
            # read fresh (a listing cached by this process may be stale): an empty
            # one means the version cannot be known (no object, no driver, no answer)
            version = object_storage.object_version(value)
            if version:
                found[value] = version
        elif isinstance(value, str):
            if 0 < len(value) < _MAX_PATH and "\0" not in value and "\n" not in value:
                try:
                    st = os.stat(value if base is None else resolve_path(value, base))
                except (OSError, ValueError):
                    continue
                if stat.S_ISREG(st.st_mode):
                    found[value] = [st.st_size, st.st_mtime_ns]
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return found
