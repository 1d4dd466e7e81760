"""Per-task statistics across a pipeline's recent runs (``stageflow stats``).

Everything here is pure arithmetic on store rows (``TaskRunStat``), except
``stats_report`` at the end, which reads a store; the interfaces render the
result (``service.tables``). Policy:

* **Which runs**: those created in the last ``days`` UTC days, today included (as
  ``runs cost``), at most the newest ``MAX_TASK_RUNS`` task runs of them.
* **Which task runs count**: those in a final state (``success``, ``failed``,
  ``skipped``, ``upstream_failed``, ``cancelled``); a task still pending, queued,
  running or waiting for a retry is not counted yet.
* **Mapped tasks**: an element ``train[3]`` counts as a task run of ``train``. The
  parent's own row (it holds no worker; its state sums up its elements) is not
  counted in a run where it has elements, so nothing counts twice.
* **Success rate**: successes (cache hits included) over successes plus failures;
  ``None`` when neither happened. ``other`` counts the rest: skipped,
  upstream_failed, cancelled.
* **Durations**: of the successful attempts that really ran (no cache hit, no
  fallback note), ``ended_at - started_at`` of the last attempt; p50 and p95 by
  nearest rank (the smallest value with at least p% of the values at or below it).
* **Last failure**: the failed task run that ended last (its run's creation time
  when it has no end), with the first non-blank line of its error.
* **Totals**: the window's runs counted by run state (counted by the store, so a
  window cut to ``MAX_TASK_RUNS`` task runs still counts every run).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from stageflow.engine.reliability import nearest_rank
from stageflow.errors import StageflowError
from stageflow.runtime.result import iso
from stageflow.runtime.store.base import RAN_NOTES, TaskRunStat
from stageflow.runtime.usage import base_task_id

if TYPE_CHECKING:
    from stageflow.runtime.store.base import Store

__all__ = [
    "MAX_TASK_RUNS",
    "PipelineStats",
    "TaskStats",
    "first_line",
    "nearest_rank",
    "stats_report",
    "task_stats",
]

#: The most task runs one report reads (the newest).
MAX_TASK_RUNS = 10_000

# DESIGN.md's final task states (strings, so the CLI does not load the engine).
_FINAL = frozenset({"success", "failed", "skipped", "upstream_failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class TaskStats:
    """One task's figures over the window (elements counted under their task)."""

    task_id: str
    runs: int
    successes: int
    failures: int
    other: int
    success_rate: float | None
    p50_seconds: float | None
    p95_seconds: float | None
    last_failure_at: float | None = None
    last_failure_run_id: str | None = None
    last_failure: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "runs": self.runs,
            "successes": self.successes,
            "failures": self.failures,
            "other": self.other,
            "success_rate": _round(self.success_rate),
            "p50_seconds": _round(self.p50_seconds),
            "p95_seconds": _round(self.p95_seconds),
            "last_failure_at": iso(self.last_failure_at),
            "last_failure_run_id": self.last_failure_run_id,
            "last_failure": self.last_failure,
        }


@dataclass(frozen=True, slots=True)
class PipelineStats:
    """A pipeline's statistics: the window, its runs by state, and every task's figures."""

    pipeline: str
    days: int
    since: float
    until: float
    runs_by_state: dict[str, int]
    tasks: list[TaskStats]
    truncated: bool = False  # the window held more than MAX_TASK_RUNS task runs

    @property
    def runs(self) -> int:
        return sum(self.runs_by_state.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "days": self.days,
            "since": iso(self.since),
            "until": iso(self.until),
            "runs": self.runs,
            "runs_by_state": dict(sorted(self.runs_by_state.items())),
            "truncated": self.truncated,
            "tasks": [t.as_json() for t in self.tasks],
        }


def first_line(error: str | None) -> str | None:
    """The first non-blank line of ``error``, stripped; ``None`` when there is none."""
    for line in (error or "").splitlines():
        if line.strip():
            return line.strip()
    return None


def task_stats(rows: Iterable[TaskRunStat]) -> list[TaskStats]:
    """Per task (elements under their task), in the order tasks are first met; see
    the module docstring for what counts."""
    rows = list(rows)
    parents: set[tuple[str, str]] = set()  # (run_id, task_id) of tasks with elements
    for r in rows:
        if r.task_id.endswith("]"):
            base, sep, k = r.task_id[:-1].rpartition("[")
            if sep and k.isdigit():
                parents.add((r.run_id, base))
    order: dict[str, _Tally] = {}
    for r in rows:
        if r.state not in _FINAL or (r.run_id, r.task_id) in parents:
            continue
        tally = order.setdefault(base_task_id(r.task_id), _Tally())
        tally.runs += 1
        if r.state == "success":
            tally.successes += 1
            ran = (r.note or "") in RAN_NOTES and r.attempts > 0
            if ran and r.attempt_started_at is not None and r.attempt_ended_at is not None:
                tally.durations.append(max(0.0, r.attempt_ended_at - r.attempt_started_at))
        elif r.state == "failed":
            tally.failures += 1
            at = r.ended_at if r.ended_at is not None else r.run_created_at
            if tally.last_at is None or at > tally.last_at:
                tally.last_at, tally.last_run, tally.last_error = at, r.run_id, r.error
    out = []
    for tid, t in order.items():
        decided = t.successes + t.failures
        out.append(
            TaskStats(
                task_id=tid,
                runs=t.runs,
                successes=t.successes,
                failures=t.failures,
                other=t.runs - decided,
                success_rate=t.successes / decided if decided else None,
                p50_seconds=nearest_rank(t.durations, 50),
                p95_seconds=nearest_rank(t.durations, 95),
                last_failure_at=t.last_at,
                last_failure_run_id=t.last_run,
                last_failure=first_line(t.last_error),
            )
        )
    return out


def stats_report(store: Store, pipeline: str, *, days: int, now: float) -> PipelineStats:
    """``pipeline``'s statistics over the runs created in the last ``days`` UTC days.

    Raises ``StageflowError`` (exit 1) when the store holds no pipeline of that name,
    naming the closest one."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = (today - timedelta(days=days - 1)).timestamp()
    until = (today + timedelta(days=1)).timestamp()
    rows = store.task_run_stats(pipeline, since, MAX_TASK_RUNS)
    if not rows:
        names = store.pipeline_names()
        if pipeline not in names:
            from stageflow.spec.suggest import did_you_mean

            hint = did_you_mean(pipeline, names)
            raise StageflowError(
                f"no pipeline '{pipeline}' in the store at {store.url}; "
                + (
                    f"did you mean '{hint}'?"
                    if hint
                    else "`stageflow runs list` shows the pipelines that have runs"
                ),
                pipeline=pipeline,
            )
    return PipelineStats(
        pipeline=pipeline,
        days=days,
        since=since,
        until=until,
        runs_by_state=store.run_states(pipeline, since) if rows else {},
        tasks=task_stats(rows),
        truncated=len(rows) >= MAX_TASK_RUNS,
    )


@dataclass(slots=True)
class _Tally:
    runs: int = 0
    successes: int = 0
    failures: int = 0
    durations: list[float] = field(default_factory=list)
    last_at: float | None = None
    last_run: str | None = None
    last_error: str | None = None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
