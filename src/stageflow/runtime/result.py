"""What a finished (or inspected) run looks like to a caller: ``RunResult``.

The same shape serves ``Pipeline.run()``'s return value, ``stageflow run
--format json`` and ``stageflow runs show --format json``. Its tasks are in
pipeline order, each mapped task followed by its elements by index
(``index_order``: ``train``, ``train[0]``, ``train[1]``, ..., ``train[10]``),
whatever order they were created or finished in.

Table rows. A task that took tables in or gave one out has ``rows_in`` / ``rows_out``
(``runtime.attempt`` counts them; the store keeps them on the attempt), those of its
last attempt. A run's ``total_records_processed`` counts the records that entered its
table flow once, however many tasks then transform them: the ``rows_out`` of every
task that gives a table out without taking one in (the loads, queries and ingests the
tables start from). A chain ``load`` (1,000 rows) -> ``clean`` (990) -> ``aggregate``
(12) processed 1,000 records, not 2,002; a join of two loaded tables processed both.
``None`` when no task gave a table out; a success taken from the cache ran no code and
counts no rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from stageflow.runtime.store.base import CACHED_NOTES, AttemptRecord, RunRecord, TaskRunRecord

__all__ = [
    "RunResult",
    "TaskResult",
    "index_order",
    "iso",
    "records_processed",
    "rows_by_task",
    "sum_known",
]

_N = TypeVar("_N", int, float)


def iso(ts: float | None) -> str | None:
    """An ISO-8601 UTC timestamp, or ``None``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def rows_by_task(attempts: Iterable[AttemptRecord]) -> dict[str, tuple[int | None, int | None]]:
    """``(rows_in, rows_out)`` of each task's last attempt among ``attempts`` that
    counted any (tasks without rows are left out)."""
    last: dict[str, AttemptRecord] = {}
    for a in attempts:
        seen = last.get(a.task_id)
        if seen is None or a.attempt > seen.attempt:
            last[a.task_id] = a
    return {
        tid: (a.rows_in, a.rows_out)
        for tid, a in last.items()
        if a.rows_in is not None or a.rows_out is not None
    }


def records_processed(rows: Iterable[tuple[int | None, int | None]]) -> int | None:
    """The records that entered a run's table flow: the ``rows_out`` of every
    ``(rows_in, rows_out)`` with no rows in (see the module docstring); ``None``
    when no table came out of any task."""
    return sum_known(rows_out for rows_in, rows_out in rows if rows_in is None)


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
    # how a success was reached: "cached", "fallback", "skipped downstream" (it skipped
    # its direct downstream) or "cached, skipped downstream"
    note: str | None = None
    rows_in: int | None = None  # rows of its table inputs, summed (module docstring)
    rows_out: int | None = None  # rows of its table output

    @property
    def cached(self) -> bool:
        """Served from the cache: no attempt of its own ran."""
        return self.note in CACHED_NOTES

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return round(self.ended_at - self.started_at, 6)

    def as_json(self) -> dict[str, Any]:
        """Its JSON; ``rows_in`` and ``rows_out`` only for a task that took or gave tables."""
        doc: dict[str, Any] = {
            "state": self.state,
            "attempts": self.attempts,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_s": self.duration_s,
            "error": self.error,
            "cached": self.cached,
            "fallback": self.note == "fallback",
        }
        if self.rows_in is not None or self.rows_out is not None:
            doc["rows_in"], doc["rows_out"] = self.rows_in, self.rows_out
        return doc


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

    @property
    def rows_in(self) -> int | None:
        """Rows its tasks took in as tables, summed over tasks (``None``: none)."""
        return sum_known(t.rows_in for t in self.tasks.values())

    @property
    def rows_out(self) -> int | None:
        """Rows its tasks gave out as tables, summed over tasks (``None``: none)."""
        return sum_known(t.rows_out for t in self.tasks.values())

    @property
    def total_records_processed(self) -> int | None:
        """The records that entered the run's table flow (see the module docstring)."""
        return records_processed((t.rows_in, t.rows_out) for t in self.tasks.values())

    def output(self, task_id: str) -> Any:
        """The output of ``task_id`` (``KeyError`` for an unknown task)."""
        return self.tasks[task_id].output

    def as_json(self) -> dict[str, Any]:
        """Its JSON; ``rows_in``, ``rows_out`` and ``total_records_processed`` only for
        a run whose tasks took or gave tables (a run of none keeps its old shape)."""
        doc: dict[str, Any] = {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "state": self.state,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
        }
        rows_in, rows_out = self.rows_in, self.rows_out
        if rows_in is not None or rows_out is not None:
            doc["rows_in"], doc["rows_out"] = rows_in, rows_out
            doc["total_records_processed"] = self.total_records_processed
        doc["tasks"] = {tid: t.as_json() for tid, t in self.tasks.items()}
        return doc

    @classmethod
    def from_records(
        cls,
        run: RunRecord,
        task_runs: list[TaskRunRecord],
        attempts: Iterable[AttemptRecord] = (),
    ) -> RunResult:
        """The run as stored; with its ``attempts`` (``Store.attempts``), its tasks'
        table rows too."""
        rows = rows_by_task(attempts)
        return cls(
            run_id=run.run_id,
            pipeline=run.pipeline,
            state=run.state,
            started_at=run.started_at,
            ended_at=run.ended_at,
            tasks={
                t.task_id: TaskResult(
                    t.task_id,
                    t.state,
                    t.attempts,
                    t.started_at,
                    t.ended_at,
                    t.error,
                    note=t.note,
                    rows_in=rows.get(t.task_id, _NO_ROWS)[0],
                    rows_out=rows.get(t.task_id, _NO_ROWS)[1],
                )
                for t in task_runs
            },
        )


_NO_ROWS: tuple[None, None] = (None, None)


def sum_known(values: Iterable[_N | None]) -> _N | None:
    """The sum of the values that are not ``None``; ``None`` when all are."""
    total: _N | None = None
    for v in values:
        if v is not None:
            total = v if total is None else total + v
    return total
