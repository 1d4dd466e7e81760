"""What a finished (or inspected) run looks like to a caller: ``RunResult``.

The same shape serves ``Pipeline.run()``'s return value, ``stageflow run
--format json`` and ``stageflow runs show --format json``. Its tasks are in
pipeline order, each mapped task followed by its elements by index
(``index_order``: ``train``, ``train[0]``, ``train[1]``, ..., ``train[10]``),
whatever order they were created or finished in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from typing import Any

from stageflow.runtime.store.base import RunRecord, TaskRunRecord

__all__ = ["RunResult", "TaskResult", "index_order", "iso"]


def iso(ts: float | None) -> str | None:
    """An ISO-8601 UTC timestamp, or ``None``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def index_order(task_ids: Iterable[str]) -> list[str]:
    """``task_ids`` with each mapped element ``ID[K]`` right after ``ID``, by the
    number ``K`` (elements of an unlisted ``ID`` stay together, where the first of
    them was); every other id keeps its place."""
    ids = list(task_ids)
    children: dict[str, list[tuple[int, str]]] = {}
    parent: dict[str, str] = {}
    for tid in ids:
        if tid.endswith("]"):
            base, sep, k = tid[:-1].rpartition("[")
            if sep and k.isdigit():
                children.setdefault(base, []).append((int(k), tid))
                parent[tid] = base
    if not children:
        return ids
    listed = set(ids)
    out: list[str] = []

    def emit_children(base: str) -> None:
        for _, kid in sorted(children.pop(base, ())):
            out.append(kid)
            emit_children(kid)  # an element that is itself mapped

    for tid in ids:
        of = parent.get(tid)
        if of is None:
            out.append(tid)
            emit_children(tid)
        elif of not in listed:
            emit_children(of)  # the first element met of an unlisted task: all of them
    return out


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
        if any(tid.endswith("]") for tid in self.tasks):  # mapped elements: by index
            order = index_order(self.tasks)
            if order != list(self.tasks):
                self.tasks = {tid: self.tasks[tid] for tid in order}

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
