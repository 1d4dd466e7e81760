"""One attempt of one task: what a worker thread or process executes.

``execute(job)`` resolves the operator, loads inputs (objects in-process, or
``OutputRef``s in a worker process), runs it with its output captured to the
attempt's log, stores the output durably (artifact file or inline bytes) and
returns an ``AttemptResult``. Every exception is caught here — the task
boundary — and becomes a failed result with its error and traceback text.

An attempt always reports an outcome, whatever fails while it reports: a log
that cannot be written (a full disk, a read-only folder) adds a note to the
error instead of replacing it, and a failure outside the task's own code (the
log cannot be opened, the output cannot be captured or restored) is a failed
result saying so, never an exception that would leave the executor waiting.

Table rows: an attempt whose inputs include tables reports ``rows_in`` (their rows,
summed) and one whose output is a table ``rows_out``, counted where the objects are
(in a worker process, after its inputs are loaded there). A table is a pandas or
polars ``DataFrame`` or a pyarrow ``Table``, told by ``isinstance`` against the class
of a library that is already imported: whoever holds such an object has imported its
library, so counting imports nothing; the classes are looked up again only when
``sys.modules`` changed size, so an attempt with no table costs well under a microsecond.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stageflow.engine.retry import NOT_RETRYABLE
from stageflow.errors import MissingExtra
from stageflow.operators.base import SkipDownstream, TaskContext, TaskFailed
from stageflow.operators.bash import masked_copy
from stageflow.operators.registry import instantiate
from stageflow.runtime import secrets
from stageflow.runtime.artifacts import ArtifactStore, artifact_store, load_output, store_output
from stageflow.runtime.logs import capture_thread_output, log_file, release_thread_output
from stageflow.runtime.result import sum_known
from stageflow.runtime.store.base import OutputRef
from stageflow.spec.models import Task

__all__ = ["AttemptResult", "Job", "Usage", "error_types", "execute", "table_rows"]


@dataclass
class Job:
    """Everything an attempt needs, picklable for a worker process."""

    run_id: str
    task: Task
    attempt: int
    parameters: dict[str, Any]
    run_params: dict[str, Any]
    artifacts_root: str
    logs_dir: Path
    inline_limit: int
    deadline: float | None = None
    inputs: dict[str, Any] = field(default_factory=dict)  # objects (same process)
    input_refs: dict[str, OutputRef] = field(default_factory=dict)  # refs (worker process)
    keep_value: bool = True  # return the output object (thread executor)
    task_id: str = ""  # the task run's id when it is not the task's (``id[k]`` of a mapped task)
    env: dict[str, str] = field(default_factory=dict)  # e.g. CUDA_VISIBLE_DEVICES
    memory_limit_gb: float | None = None  # enforce_limits: the hard memory limit
    pipeline_dir: str = ""  # where relative paths start (operators/paths.py); "": cwd
    pipeline: str = ""  # the pipeline's name
    failures: dict[str, str] = field(default_factory=dict)  # failed so far: task -> error

    def __post_init__(self) -> None:
        if not self.task_id:
            self.task_id = self.task.id

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.run_id, self.task_id, self.attempt)


@dataclass
class AttemptResult:
    run_id: str
    task_id: str
    attempt: int
    ok: bool
    started_at: float
    ended_at: float
    output: OutputRef | None = None
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    #: ``module.QualName`` of every class in the raised exception's MRO (``retry_on``,
    #: ``fatal_on``), plus ``NOT_RETRYABLE`` for ``TaskFailed(..., retryable=False)``
    #: and ``MissingExtra``;
    #: empty when nothing was raised (e.g. the worker process died).
    error_types: tuple[str, ...] = ()
    #: What the attempt used, measured by the executor (``None`` when not measured).
    usage: Usage | None = None
    #: Rows of its table inputs, summed (``None``: it took no table; see the module docstring).
    rows_in: int | None = None
    #: Rows of its table output (``None``: it returned no table, or it failed).
    rows_out: int | None = None
    #: Why its success skips its direct downstream (the operator returned
    #: ``SkipDownstream``); ``None``: it does not.
    skip_downstream: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Measured use of one attempt: CPU seconds (user + system, the task's own
    processes included) and peak resident memory in MiB (``None``: not measurable
    for this executor, e.g. a thread shares its process's memory)."""

    cpu_seconds: float | None = None
    peak_rss_mb: float | None = None


def error_types(cls: type[BaseException]) -> tuple[str, ...]:
    """``module.QualName`` of ``cls`` and of every base class but ``object``."""
    return tuple(f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__ if c is not object)


def execute(
    job: Job, cancelled: threading.Event | None = None, *, in_process: bool = False
) -> AttemptResult:
    """Run one attempt; never raises (a failure is a result), whatever fails while
    it reports (see the module docstring)."""
    started = time.time()
    try:
        return _execute(job, cancelled, in_process, started)
    except BaseException as exc:  # the attempt's own set-up or reporting failed
        return AttemptResult(
            job.run_id,
            job.task_id,
            job.attempt,
            False,
            started,
            time.time(),
            error=f"the attempt failed outside the task's code: {type(exc).__name__}: {exc}",
            error_types=error_types(type(exc)),
        )


def _execute(
    job: Job, cancelled: threading.Event | None, in_process: bool, started: float
) -> AttemptResult:
    task_id = job.task_id
    path = log_file(job.logs_dir, job.run_id, task_id, job.attempt)
    restore: Callable[[], None]
    # Secrets: what the task names (resolved below, in the try), and whether its output
    # goes through the mask (this process holds a secret, or is about to: one the task
    # names, or a secret run parameter, which its environment and ``ctx.params`` get).
    named = secrets.uses_secrets(job.parameters)
    masked = named or secrets.active() or secrets.uses_secrets(job.run_params)
    if in_process:
        restore = _redirect_fds(path, masked=masked)
    else:
        handle = capture_thread_output(path)

        def restore() -> None:
            with contextlib.suppress(OSError):  # the log's last flush (a full disk)
                release_thread_output(handle)

    logger = _TASK_LOGGER
    artifacts = artifact_store(job.artifacts_root)  # a cached lookup: it does no I/O
    ctx = TaskContext(
        run_id=job.run_id,
        task_id=task_id,
        attempt=job.attempt,
        params=job.run_params,
        work_dir=f"{os.path.dirname(path)}{os.sep}work-{job.attempt}",
        log_path=path,
        logger=logger,
        deadline=job.deadline,
        cancelled=cancelled,
        artifacts_root=job.artifacts_root,
        home=_home_of(job.logs_dir),  # logs live at <home>/logs (Settings.logs_dir)
        extra_env=job.env,
        memory_limit_gb=job.memory_limit_gb,
        pipeline_dir=job.pipeline_dir or None,
        artifacts=artifacts,
        pipeline=job.pipeline,
        failures=job.failures,
        mask=secrets.mask if masked else None,
    )
    mark = _usage_mark(in_process)
    if in_process and job.env:  # a worker process: the task's own environment
        saved_env = {k: os.environ.get(k) for k in job.env}
        os.environ.update(job.env)
        restore_fds = restore

        def restore() -> None:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            restore_fds()

    rows_in: int | None = None  # a failed attempt that loaded its inputs counts them too
    try:
        inputs = _inputs(job, artifacts)
        rows_in = _rows_in(inputs)
        parameters = job.parameters
        try:  # resolved here, in the process that runs it
            if named:
                parameters = secrets.resolve(parameters)
            if secrets.uses_secrets(job.run_params):  # a secret parameter: for env()
                ctx.params = secrets.resolve(job.run_params)
        except secrets.MissingSecret as exc:
            raise TaskFailed(str(exc), retryable=False) from None
        operator, params = instantiate(job.task, parameters)
        value = operator.run(params, inputs, ctx)
        skip = None
        if isinstance(value, SkipDownstream):
            value, skip = value.output, secrets.mask(value.reason)
        ref = store_output(
            value,
            run_id=job.run_id,
            task_id=task_id,
            attempt=job.attempt,  # a file of its own: an abandoned attempt may still finish
            artifacts=artifacts,
            inline_limit=job.inline_limit,
        )
        return AttemptResult(
            job.run_id,
            task_id,
            job.attempt,
            True,
            started,
            time.time(),
            output=ref,
            value=value if job.keep_value else None,
            usage=_usage(ctx, mark, in_process),
            rows_in=rows_in,
            rows_out=table_rows(value),
            skip_downstream=skip,
        )
    except TaskFailed as exc:
        unlogged = _log_line(path, secrets.mask(f"task failed: {exc}"))
        return AttemptResult(
            job.run_id,
            task_id,
            job.attempt,
            False,
            started,
            time.time(),
            error=secrets.mask(str(exc) + unlogged),
            error_types=error_types(type(exc)) + (() if exc.retryable else (NOT_RETRYABLE,)),
            usage=_usage(ctx, mark, in_process),
            rows_in=rows_in,
        )
    except BaseException as exc:  # the task boundary: any error fails this attempt only
        if isinstance(exc, KeyboardInterrupt | SystemExit) and not in_process:
            error = f"{type(exc).__name__} raised in the task"
        else:
            error = f"{type(exc).__name__}: {exc}"
        tb = secrets.mask(traceback.format_exc())
        error = secrets.mask(error)
        unlogged = _log_line(path, tb)
        return AttemptResult(
            job.run_id,
            task_id,
            job.attempt,
            False,
            started,
            time.time(),
            error=error + unlogged,
            traceback=tb,
            # A package to install (a stageflow helper's optional extra): another
            # attempt cannot change that, whatever the retry policy says.
            error_types=error_types(type(exc))
            + ((NOT_RETRYABLE,) if isinstance(exc, MissingExtra) else ()),
            usage=_usage(ctx, mark, in_process),
            rows_in=rows_in,
        )
    finally:
        restore()


def table_rows(value: object) -> int | None:
    """The number of rows of ``value`` when it is a table (see the module docstring),
    else ``None``; never imports a table library."""
    classes = _table_classes()
    if classes and isinstance(value, classes):
        return int(value.shape[0])  # type: ignore[attr-defined]  # every table class has shape
    return None


#: The table classes counted, by the module that defines them (looked up, not imported).
_TABLE_CLASSES: tuple[tuple[str, str], ...] = (
    ("pandas", "DataFrame"),
    ("polars", "DataFrame"),
    ("pyarrow", "Table"),
)
# The classes found, and len(sys.modules) when they were looked up: a library imported
# since then changes the count (an attempt pays one len() when nothing was imported).
_found: tuple[int, tuple[type, ...]] = (-1, ())


def _table_classes() -> tuple[type, ...]:
    global _found
    modules = sys.modules
    count = len(modules)
    if _found[0] == count:
        return _found[1]
    classes = []
    for module, name in _TABLE_CLASSES:
        cls = getattr(modules.get(module), name, None)
        if isinstance(cls, type):
            classes.append(cls)
    _found = (count, tuple(classes))
    return _found[1]


def _rows_in(inputs: Mapping[str, Any]) -> int | None:
    """The rows of the tables among ``inputs``, summed; ``None`` when none is a table."""
    classes = _table_classes()
    if not classes:
        return None
    return sum_known(
        int(value.shape[0])  # type: ignore[attr-defined]  # every table has shape
        for value in inputs.values()
        if isinstance(value, classes)
    )


def _inputs(job: Job, artifacts: ArtifactStore) -> Mapping[str, Any]:
    if not job.input_refs:
        return job.inputs
    inputs = dict(job.inputs)
    for tid, ref in job.input_refs.items():
        inputs[tid] = load_output(ref, artifacts)
    # keep upstream order (then a bound metric's value, ``check.metrics.NAME``)
    ordered = {u: inputs[u] for u in job.task.upstream if u in inputs}
    ordered.update((k, v) for k, v in inputs.items() if k not in ordered)
    return ordered


_TASK_LOGGER = logging.getLogger("stageflow.task")


def _usage_mark(in_process: bool) -> float:
    """Where the attempt's CPU time starts: this thread's, or in a worker process the
    whole process's and its waited-for children's (whose peak memory is reset too)."""
    if not in_process:
        return time.thread_time()
    import resource

    _reset_peak_rss()
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _usage(ctx: TaskContext, mark: float, in_process: bool) -> Usage:
    """What the attempt used since ``mark``.

    In a thread: the thread's CPU time plus that of the commands the operator ran
    (``ctx.record_subprocess_usage``), and their peak memory (a thread's own memory
    cannot be told from its process's). In a worker process: the process's and its
    children's CPU time (the commands' included), and the larger of the process's
    peak RSS and the commands'; the executor adds its sampled tree peak.
    """
    if not in_process:
        return Usage(
            time.thread_time() - mark + ctx.subprocess_cpu_seconds, ctx.subprocess_peak_rss_mb
        )
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime - mark
    peaks = [p for p in (_peak_rss_mb(), ctx.subprocess_peak_rss_mb) if p is not None]
    return Usage(cpu, max(peaks) if peaks else None)


_peak_reset = False  # this worker process's peak RSS was reset at the attempt's start


def _reset_peak_rss() -> None:
    """Start this process's peak RSS (VmHWM) afresh, where the system allows it."""
    global _peak_reset
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _peak_reset = True
    except OSError:
        _peak_reset = False


def _peak_rss_mb() -> float | None:
    """This process's peak RSS in MiB since ``_reset_peak_rss``, if it was reset."""
    if not _peak_reset:
        return None
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


_last_home: tuple[Path, Path] | None = None


def _home_of(logs_dir: Path) -> Path:
    """``logs_dir.parent``, kept for the last folder asked (every job of a run has
    the same one, and ``Path.parent`` costs more than a no-op task's attempt)."""
    global _last_home
    last = _last_home
    if last is not None and last[0] is logs_dir:
        return last[1]
    home = logs_dir.parent
    _last_home = (logs_dir, home)
    return home


def _log_line(path: str, text: str) -> str:
    """Append ``text`` to the attempt's log; ``""``, or a note for the attempt's
    error saying why the log could not be written (the error itself must survive)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")
    except OSError as exc:
        return f" (and the task log {path} could not be written: {exc.strerror or exc})"
    return ""


def _redirect_fds(path: str, masked: bool = False) -> Callable[[], None]:
    """Point fds 1 and 2 of this (worker) process at the attempt's log; ``masked``
    (the attempt uses secrets): through a pipe whose lines a thread writes to the log
    through ``secrets.mask``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pump: threading.Thread | None = None
    if masked:
        read_end, write_end = os.pipe()
        log = fd
        pump = masked_copy(
            os.fdopen(read_end, "rb"),
            lambda data: os.write(log, data),
            secrets.mask,
            done=lambda: os.close(log),
        )
        fd = write_end
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)

    def restore() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a full disk: restore anyway
                stream.flush()
        os.dup2(saved[0], 1)  # the pipe's last writer closes: the pump drains and ends
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        if pump is not None:
            pump.join(timeout=5)

    return restore
