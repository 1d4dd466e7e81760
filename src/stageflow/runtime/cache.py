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

A hit is what the producing attempt did, not only its output: it exposes the
metrics that attempt recorded (``operators.metadata``, read from its log folder
as the run reads its own attempts'), so ``${T.metrics.NAME}`` conditions and
``inputs: {p: T.metrics.NAME}`` see the same values as if the task had run, and
it replays that attempt's decision to skip its direct downstream, with the same
reason (the producing task run's ``skipped downstream`` note). An entry whose
producing task run is no longer a success in the store is a miss, and so is one
whose producing task ran again in its run after the entry was written (``retry
--from`` under another key: the task run ended later than the entry was made, and
its metadata and note are the later attempt's). Without the
producing attempt's metadata file (it recorded nothing, or its log folder was
removed) the metrics are those the producing run's record kept when it ended
(none: it recorded none); when that record cannot tell either (the producing run
has not ended, or has no record) and another task reads the task's metrics, the
entry is a miss: the task runs again rather than hand its readers no metric.

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

from stageflow.engine.states import TaskState
from stageflow.operators import object_storage
from stageflow.operators.base import TaskContext
from stageflow.operators.metadata import metadata_file, read_metadata
from stageflow.operators.paths import resolve_path
from stageflow.operators.python import resolve_callable
from stageflow.operators.registry import get as get_operator
from stageflow.runtime.store.base import (
    SKIPPING_NOTES,
    CacheEntry,
    OutputRef,
    Store,
    TaskRunRecord,
)
from stageflow.spec.models import Pipeline, Task, callable_ref, input_source

__all__ = ["Hit", "KeyRecipe", "TaskCache", "code_identity", "file_versions", "metrics_read"]

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
        logs_dir: Path,
        pipeline_dir: str | None = None,
    ) -> None:
        """``logs_dir``: where producing attempts' metadata files are read."""
        self.pipeline = pipeline
        self.pipeline_dir = pipeline_dir
        self.logs_dir = logs_dir
        self.store = store
        self.run_params = run_params
        self.lookup_enabled = lookup
        self._purged = False
        # by function (its id: the pipeline keeps it alive), call target or operator:
        # generated graphs share one function across thousands of tasks, and
        # inspect.getsource tokenizes the function's file each time
        self._code: dict[object, tuple[str, list[str] | None]] = {}
        self._metrics_read: frozenset[str] | None = None  # computed at the first hit
        # producing task runs, by run: one query per producing run, not per hit
        self._producers: dict[str, dict[str, TaskRunRecord]] = {}

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

    def lookup(self, task: Task, key: str, now: float) -> Hit | None:
        """A usable entry under ``key`` with what its producing attempt decided: not
        expired, not older than the task's TTL now, its output file still there (on
        disk, or in the object store), its producing task run a success, and its
        metrics known (its metadata file, or its run's record) when another task reads
        ``task``'s metrics (module doc)."""
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
        return self._hit(task, entry)

    def entry(self, task: Task, key: str, output: OutputRef, now: float) -> CacheEntry:
        """The entry to write after ``task`` produced ``output``."""
        ttl = self.pipeline.cache_ttl_of(task)
        return CacheEntry(key, self.pipeline.name, output, now, None if ttl is None else now + ttl)

    @staticmethod
    def reuse(entry: CacheEntry, run_id: str, task_id: str) -> OutputRef:
        """The cached output as this run's output of ``task_id`` (same bytes, same place)."""
        return entry.output._replace(run_id=run_id, task_id=task_id)

    def _hit(self, task: Task, entry: CacheEntry) -> Hit | None:
        """``entry`` with its producing attempt's metrics and skip decision, or
        ``None`` when they cannot be known (a miss: module doc)."""
        run_id, task_id = entry.output.run_id, entry.output.task_id
        row = self._producer(run_id, task_id)
        if row is None or row.attempts < 1:
            return None
        if row.ended_at is not None and row.ended_at > entry.created_at:
            # It ran again in its run after this entry was written (``retry --from``)
            # under another key: its metadata and note are the later attempt's.
            return None
        if metadata_file(self.logs_dir, run_id, task_id, row.attempts).is_file():
            metrics = read_metadata(self.logs_dir, run_id, task_id, row.attempts)["metrics"]
        else:  # never recorded, or its log folder was removed: the producing run's record
            kept = self._recorded_metrics(run_id, task_id)
            if kept is None:
                if self._metrics_read is None:
                    self._metrics_read = metrics_read(self.pipeline)
                if task.id in self._metrics_read:
                    return None  # its readers would find no metric: run it again
            metrics = kept or {}
        skip = (row.error or "no reason recorded") if row.note in SKIPPING_NOTES else None
        return Hit(entry, dict(metrics), skip)

    def _recorded_metrics(self, run_id: str, task_id: str) -> dict[str, float] | None:
        """The metrics the producing run's record kept for ``task_id`` when that run
        ended (``{}``: the task recorded none); ``None`` when the record cannot tell
        (no record, or the run had not ended: it may yet record them)."""
        from stageflow.runtime.lineage import load_record  # only for a hit without its file

        record = load_record(self.store, run_id)
        if record is None or record.get("ended_at") is None:
            return None
        kept = (record.get("tasks") or {}).get(task_id) or {}
        metrics = kept.get("metrics") or {}
        return {str(k): float(v) for k, v in metrics.items() if isinstance(v, int | float)}

    def _producer(self, run_id: str, task_id: str) -> TaskRunRecord | None:
        """The task run that produced an entry, when it is a success in the store."""
        rows = self._producers.get(run_id)
        row = rows.get(task_id) if rows is not None else None
        if row is None or row.state != TaskState.SUCCESS:  # not read yet, or since changed
            rows = self._producers[run_id] = {r.task_id: r for r in self.store.task_runs(run_id)}
            row = rows.get(task_id)
        return row if row is not None and row.state == TaskState.SUCCESS else None

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
class Hit:
    """A usable cache entry and what the attempt that produced it decided beside
    its output: the metrics it recorded, why its success skipped its downstream
    (``None``: it skipped nothing)."""

    entry: CacheEntry
    metrics: dict[str, float]
    skip_downstream: str | None = None


def metrics_read(pipeline: Pipeline) -> frozenset[str]:
    """The tasks whose recorded metrics another task reads: ``${T.metrics...}`` in a
    ``when:``, or ``T.metrics[.NAME]`` in ``inputs:``."""
    from stageflow.spec.expr import ExpressionError, parse_expression  # conditions only

    found: set[str] = set()
    for task in pipeline.tasks:
        if task.when and "metrics" in task.when:
            try:
                expression = parse_expression(task.when, task.all_upstream)
            except ExpressionError:
                continue  # refused by validation before any run
            found.update(
                r.name
                for r in expression.references
                if r.kind == "task" and r.path[:1] == ("metrics",)
            )
        for source in task.inputs.values():
            up_id, metric = input_source(source)
            if metric is not None:
                found.add(up_id)
    return frozenset(found)


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
