"""What an operator is and what it sees: ``Operator`` and ``TaskContext``.

An operator is a reusable, named implementation of a step with a typed
(pydantic) parameter model. It sees only a ``TaskContext`` — ids, the attempt
number, run parameters, a logger, its pipeline's folder (where relative paths
start, see ``operators/paths.py``), a scratch folder, the deadline, a
cancellation flag and ``write_file`` for the files it makes (through a
``FileStore``: the runtime's artifact store) — plus its upstream outputs. It
never sees the store, the engine or the executor, so the same operator runs
in a thread, a worker process or on a cluster. (The pipeline's name and the
run's failed tasks so far, with their errors, come along for a notification.)
An operator may check more of a task's use before anything runs than its
parameter model can (``Operator.spec_problems``: upstream, other tasks).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from stageflow.operators.paths import resolve_path

if TYPE_CHECKING:
    from stageflow.errors import Problem
    from stageflow.spec.models import Pipeline, Task

__all__ = ["FileStore", "NoParams", "Operator", "SkipDownstream", "TaskContext", "TaskFailed"]


class TaskFailed(Exception):
    """Raised by an operator for an expected failure: the message is the whole story
    (no traceback is shown for it).

    ``retryable=False`` says another attempt cannot change the outcome (the data or
    the model is wrong, not the moment): the task fails at once, whatever its retry
    policy; its error's classes then include ``stageflow.NotRetryable``
    (``engine.retry.NOT_RETRYABLE``), which ``fatal_on`` may name.
    """

    def __init__(self, *args: object, retryable: bool = True) -> None:
        super().__init__(*args)
        # An instance attribute: pickling keeps it (a worker process raises it).
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class SkipDownstream:
    """Returned by an operator (or a ``python`` step): the task succeeds with
    ``output``, and every task directly downstream of it is skipped, ``reason``
    saying why (a data check's ``on_violation: skip_downstream``; Airflow's
    short-circuit). What is further downstream follows its trigger rules, so a
    ``none_failed`` or ``all_done`` task after the skipped ones still runs."""

    output: Any
    reason: str


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileStore(Protocol):
    """Where ``TaskContext.write_file`` writes: the runtime's ``ArtifactStore``."""

    def put(self, relpath: str, data: bytes) -> str:
        """Write ``data`` whole at ``relpath`` (readers see all of it or none); return its URI."""
        ...


class TaskContext:
    """What a running attempt may know about itself.

    ``work_dir`` and ``log_path`` may be given as strings: they become ``Path``s
    on first use (most tasks never touch them, and a ``Path`` costs more to build
    than the smallest task does to run).
    """

    __slots__ = (
        "_log_path",
        "_pipeline_dir",
        "_work_dir",
        "artifacts",
        "artifacts_root",
        "attempt",
        "cancelled",
        "deadline",
        "extra_env",
        "failures",
        "home",
        "logger",
        "mask",
        "memory_limit_gb",
        "params",
        "pipeline",
        "run_id",
        "subprocess_cpu_seconds",
        "subprocess_peak_rss_mb",
        "task_id",
    )

    def __init__(
        self,
        run_id: str,
        task_id: str,
        attempt: int,
        params: Mapping[str, Any],
        work_dir: Path | str,
        log_path: Path | str,
        logger: logging.Logger,
        deadline: float | None = None,
        cancelled: threading.Event | None = None,
        artifacts_root: str | None = None,
        home: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        memory_limit_gb: float | None = None,
        pipeline_dir: Path | str | None = None,
        artifacts: FileStore | None = None,
        pipeline: str = "",
        failures: Mapping[str, str] | None = None,
        mask: Callable[[str], str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.task_id = task_id
        self.attempt = attempt
        self.params = params
        self._work_dir = work_dir
        self._log_path = log_path
        self._pipeline_dir = pipeline_dir
        self.logger = logger
        #: wall-clock ``time.time()`` after which the attempt is killed
        self.deadline = deadline
        self.cancelled = cancelled if cancelled is not None else threading.Event()
        # Where operators keep files they make (reports, pictures, models): a local
        # folder or an fsspec URL; and the state folder (``STAGEFLOW_HOME``).
        self.artifacts_root = artifacts_root
        self.artifacts = artifacts  # the store at artifacts_root (``write_file``)
        self.home = home
        # Variables the runtime sets for this attempt (``CUDA_VISIBLE_DEVICES`` for the
        # GPUs assigned to it); part of ``env()`` for subprocesses.
        self.extra_env: Mapping[str, str] = extra_env if extra_env is not None else {}
        # ``enforce_limits``: the memory (GiB) the attempt may use; an operator that
        # runs subprocesses kills them above it (``None``: no limit).
        self.memory_limit_gb = memory_limit_gb
        # What the subprocesses the operator ran used (``record_subprocess_usage``);
        # the attempt reports it with its own.
        self.subprocess_cpu_seconds = 0.0
        self.subprocess_peak_rss_mb: float | None = None
        # The pipeline's name, and the tasks of this run that had failed when the
        # attempt started, each with its error (a notification reports them).
        self.pipeline = pipeline
        self.failures: Mapping[str, str] = failures if failures is not None else {}
        # Set when this process holds secrets (``runtime.secrets``): what an operator
        # writes to the log itself, or lets a subprocess write, goes through it.
        self.mask = mask

    @property
    def work_dir(self) -> Path:
        """A scratch folder for this attempt (created by whoever uses it)."""
        if not isinstance(self._work_dir, Path):
            self._work_dir = Path(self._work_dir)
        return self._work_dir

    @property
    def pipeline_dir(self) -> Path:
        """The pipeline's folder: where bash commands start and relative paths
        resolve (``operators/paths.py``); the current directory when not given."""
        if not isinstance(self._pipeline_dir, Path):
            self._pipeline_dir = Path(self._pipeline_dir or os.getcwd())
        return self._pipeline_dir

    def resolve_path(self, value: str) -> str:
        """``value`` with a relative local path joined to ``pipeline_dir``; URLs,
        ``sklearn:NAME`` and absolute paths unchanged (``operators/paths.py``)."""
        return resolve_path(value, self.pipeline_dir)

    @property
    def log_path(self) -> Path:
        """This attempt's log file (print output and logging go there)."""
        if not isinstance(self._log_path, Path):
            self._log_path = Path(self._log_path)
        return self._log_path

    def __repr__(self) -> str:
        return (
            f"TaskContext(run_id={self.run_id!r}, task_id={self.task_id!r}, attempt={self.attempt})"
        )

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and resumes: ``run_id/task_id``."""
        return f"{self.run_id}/{self.task_id}"

    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None``: no timeout)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.time())

    def write_file(self, name: str, data: bytes) -> str:
        """Store ``data`` as this task's file ``name`` (``runs/<run_id>/<task_id>/NAME``
        in the artifact store), whole: a reader sees all of it or none. Returns its URI.

        Raises ``TaskFailed`` once the attempt was stopped (timed out or cancelled: in
        a thread it goes on, and must not replace what a later attempt wrote);
        ``ValueError`` when ``name`` is not a relative path inside that folder;
        ``RuntimeError`` when the context was made without an artifact store.
        """
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or "\\" in name or ".." in parts:
            raise ValueError(
                f"task '{self.task_id}': file name {name!r} must be a relative path "
                "inside the task's folder (no leading '/', no '..')"
            )
        if self.artifacts is None:
            raise RuntimeError(
                f"task '{self.task_id}': cannot write {name!r}: this TaskContext has no "
                "artifact store (the runtime gives every attempt one; pass artifacts=)"
            )
        if self.cancelled.is_set():
            raise TaskFailed(
                f"task '{self.task_id}' attempt {self.attempt} was stopped (timed out or "
                f"cancelled): {name!r} was not written"
            )
        return self.artifacts.put(f"runs/{self.run_id}/{self.task_id}/{name}", data)

    def record_subprocess_usage(self, cpu_seconds: float, peak_rss_mb: float | None) -> None:
        """Add a finished subprocess tree's use: CPU adds up; the peak is the largest
        (an operator's commands run one after another)."""
        self.subprocess_cpu_seconds += cpu_seconds
        if peak_rss_mb is not None:
            peak = self.subprocess_peak_rss_mb
            self.subprocess_peak_rss_mb = peak_rss_mb if peak is None else max(peak, peak_rss_mb)

    def env(self) -> dict[str, str]:
        """Variables describing this attempt, for subprocesses."""
        env = {
            "STAGEFLOW_RUN_ID": self.run_id,
            "STAGEFLOW_TASK_ID": self.task_id,
            "STAGEFLOW_ATTEMPT": str(self.attempt),
            "STAGEFLOW_IDEMPOTENCY_KEY": self.idempotency_key,
            "STAGEFLOW_PIPELINE_DIR": str(self.pipeline_dir),
            "STAGEFLOW_WORK_DIR": str(self._work_dir),
        }
        for name, value in self.params.items():
            env[f"STAGEFLOW_PARAM_{name.upper()}"] = (
                value if isinstance(value, str) else (_json(value))
            )
        env.update(self.extra_env)
        return env


class Operator(ABC):
    """A named step implementation; subclasses set ``name`` and ``Params``."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = NoParams
    #: The metrics it records (``operators.metadata.record``), which conditions read as
    #: ``${TASK.metrics.NAME}`` and validation checks; a name ending in ``.`` stands for
    #: every name it starts. ``None``: it cannot say (a Python step records anything).
    metric_names: ClassVar[tuple[str, ...] | None] = None

    @abstractmethod
    def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        """Do the work; return the output (stored durably by the runtime).

        ``inputs`` maps each data-upstream task id to its output, in upstream order.
        Raise ``TaskFailed`` for an expected failure, anything else for a bug.
        """

    @classmethod
    def spec_problems(
        cls,
        params: BaseModel,
        task: Task,
        pipeline: Pipeline | None,
        run_params: Mapping[str, Any],
    ) -> list[Problem]:
        """What validation finds wrong beyond ``Params`` (``params`` passed it): a use
        that depends on the task's upstream, other tasks of ``pipeline`` (``None``
        when validated alone) or the run's parameters. None by default."""
        return []


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)
