"""One attempt of one task: what a worker thread or process executes.

``execute(job)`` resolves the operator, loads inputs (objects in-process, or
``OutputRef``s in a worker process), runs it with its output captured to the
attempt's log, stores the output durably (artifact file or inline bytes) and
returns an ``AttemptResult``. Every exception is caught here — the task
boundary — and becomes a failed result with its error and traceback text.
"""

from __future__ import annotations

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

from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.operators.registry import instantiate
from stageflow.runtime.artifacts import ArtifactStore, load_output, store_output
from stageflow.runtime.logs import capture_thread_output, log_path, release_thread_output
from stageflow.runtime.store.base import OutputRef
from stageflow.spec.models import Task

__all__ = ["AttemptResult", "Job", "error_types", "execute"]


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
    #: ``fatal_on``); empty when nothing was raised (e.g. the worker process died).
    error_types: tuple[str, ...] = ()


def error_types(cls: type[BaseException]) -> tuple[str, ...]:
    """``module.QualName`` of ``cls`` and of every base class but ``object``."""
    return tuple(f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__ if c is not object)


def execute(
    job: Job, cancelled: threading.Event | None = None, *, in_process: bool = False
) -> AttemptResult:
    """Run one attempt; never raises (a failure is a result)."""
    started = time.time()
    task_id = job.task_id
    path = log_path(job.logs_dir, job.run_id, task_id, job.attempt)
    restore: Callable[[], None]
    if in_process:
        restore = _redirect_fds(path)
    else:
        handle = capture_thread_output(path)

        def restore() -> None:
            release_thread_output(handle)

    logger = _TASK_LOGGER
    ctx = TaskContext(
        run_id=job.run_id,
        task_id=task_id,
        attempt=job.attempt,
        params=job.run_params,
        work_dir=Path(f"{path.parent}{os.sep}work-{job.attempt}"),
        log_path=path,
        logger=logger,
        deadline=job.deadline,
        cancelled=cancelled or threading.Event(),
        artifacts_root=job.artifacts_root,
        home=job.logs_dir.parent,  # logs live at <home>/logs (Settings.logs_dir)
    )
    try:
        artifacts = ArtifactStore(job.artifacts_root)
        inputs = _inputs(job, artifacts)
        operator, params = instantiate(job.task, job.parameters)
        value = operator.run(params, inputs, ctx)
        ref = store_output(
            value,
            run_id=job.run_id,
            task_id=task_id,
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
        )
    except TaskFailed as exc:
        _log_line(path, f"task failed: {exc}")
        return AttemptResult(
            job.run_id,
            task_id,
            job.attempt,
            False,
            started,
            time.time(),
            error=str(exc),
            error_types=error_types(type(exc)),
        )
    except BaseException as exc:  # the task boundary: any error fails this attempt only
        if isinstance(exc, KeyboardInterrupt | SystemExit) and not in_process:
            error = f"{type(exc).__name__} raised in the task"
        else:
            error = f"{type(exc).__name__}: {exc}"
        tb = traceback.format_exc()
        _log_line(path, tb)
        return AttemptResult(
            job.run_id,
            task_id,
            job.attempt,
            False,
            started,
            time.time(),
            error=error,
            traceback=tb,
            error_types=error_types(type(exc)),
        )
    finally:
        restore()


def _inputs(job: Job, artifacts: ArtifactStore) -> Mapping[str, Any]:
    if not job.input_refs:
        return job.inputs
    inputs = dict(job.inputs)
    for tid, ref in job.input_refs.items():
        inputs[tid] = load_output(ref, artifacts)
    # keep upstream order
    return {u: inputs[u] for u in job.task.upstream if u in inputs}


_TASK_LOGGER = logging.getLogger("stageflow.task")


def _log_line(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n")


def _redirect_fds(path: Path) -> Callable[[], None]:
    """Point fds 1 and 2 of this (worker) process at the attempt's log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)

    def restore() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])

    return restore
