"""What an operator is and what it sees: ``Operator`` and ``TaskContext``.

An operator is a reusable, named implementation of a step with a typed
(pydantic) parameter model. It sees only a ``TaskContext`` — ids, the attempt
number, run parameters, a logger, a scratch folder, the deadline and a
cancellation flag — plus its upstream outputs. It never sees the store, the
engine or the executor, so the same operator runs in a thread, a worker
process or on a cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = ["NoParams", "Operator", "TaskContext", "TaskFailed"]


class TaskFailed(Exception):
    """Raised by an operator for an expected failure: the message is the whole story
    (no traceback is shown for it)."""


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskContext:
    """What a running attempt may know about itself.

    ``work_dir`` and ``log_path`` may be given as strings: they become ``Path``s
    on first use (most tasks never touch them, and a ``Path`` costs more to build
    than the smallest task does to run).
    """

    __slots__ = (
        "_log_path",
        "_work_dir",
        "artifacts_root",
        "attempt",
        "cancelled",
        "deadline",
        "extra_env",
        "home",
        "logger",
        "memory_limit_gb",
        "params",
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
    ) -> None:
        self.run_id = run_id
        self.task_id = task_id
        self.attempt = attempt
        self.params = params
        self._work_dir = work_dir
        self._log_path = log_path
        self.logger = logger
        #: wall-clock ``time.time()`` after which the attempt is killed
        self.deadline = deadline
        self.cancelled = cancelled if cancelled is not None else threading.Event()
        # Where operators keep files they make (reports, pictures, models): a local
        # folder or an fsspec URL; and the state folder (``STAGEFLOW_HOME``).
        self.artifacts_root = artifacts_root
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

    @property
    def work_dir(self) -> Path:
        """A scratch folder for this attempt (created by whoever uses it)."""
        if not isinstance(self._work_dir, Path):
            self._work_dir = Path(self._work_dir)
        return self._work_dir

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

    @abstractmethod
    def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        """Do the work; return the output (stored durably by the runtime).

        ``inputs`` maps each data-upstream task id to its output, in upstream order.
        Raise ``TaskFailed`` for an expected failure, anything else for a bug.
        """


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)
