"""What a finished (or inspected) run looks like to a caller: ``RunResult``.

The same shape serves ``Pipeline.run()``'s return value, ``stageflow run
--format json`` and ``stageflow runs show --format json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from typing import Any

from stageflow.runtime.store.base import RunRecord, TaskRunRecord

__all__ = ["RunResult", "TaskResult", "iso"]


def iso(ts: float | None) -> str | None:
    """An ISO-8601 UTC timestamp, or ``None``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass
class TaskResult:
    task_id: str
    state: str
    attempts: int
    started_at: float | None
    ended_at: float | None
    error: str | None
    output: Any = None
    note: str | None = None  # "cached" or "fallback": how a success was reached

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return round(self.ended_at - self.started_at, 6)

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "attempts": self.attempts,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_s": self.duration_s,
            "error": self.error,
            "cached": self.note == "cached",
            "fallback": self.note == "fallback",
        }


@dataclass
class RunResult:
    """A run's outcome. ``path``: its critical path (task ids), or a function that
    computes it: a run of 100,000 tasks pays for the path only if someone reads
    ``critical_path``."""

    run_id: str
    pipeline: str
    state: str
    started_at: float | None
    ended_at: float | None
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    path: InitVar[list[str] | Callable[[], list[str]] | None] = None
    _path: list[str] | Callable[[], list[str]] | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self, path: list[str] | Callable[[], list[str]] | None) -> None:
        self._path = path

    @property
    def critical_path(self) -> list[str]:
        """The longest chain of measured durations through the DAG, first to last."""
        if callable(self._path):
            self._path = self._path()
        return self._path or []

    @critical_path.setter
    def critical_path(self, tasks: list[str]) -> None:
        self._path = tasks

    @property
    def ok(self) -> bool:
        return self.state == "success"

    def output(self, task_id: str) -> Any:
        """The output of ``task_id`` (``KeyError`` for an unknown task)."""
        return self.tasks[task_id].output

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "state": self.state,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "tasks": {tid: t.as_json() for tid, t in self.tasks.items()},
        }

    @classmethod
    def from_records(cls, run: RunRecord, task_runs: list[TaskRunRecord]) -> RunResult:
        return cls(
            run_id=run.run_id,
            pipeline=run.pipeline,
            state=run.state,
            started_at=run.started_at,
            ended_at=run.ended_at,
            tasks={
                t.task_id: TaskResult(
                    t.task_id, t.state, t.attempts, t.started_at, t.ended_at, t.error, note=t.note
                )
                for t in task_runs
            },
        )
