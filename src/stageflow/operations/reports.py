"""Reports over recorded runs: usage, cost, statistics, lineage, diff, the record.

The arithmetic lives in the runtime (``runtime.usage``, ``runtime.stats``,
``runtime.lineage``: what counts and why is said there); these functions check
the arguments, read the store once and hand back dataclasses an interface
renders. Windows of days are UTC days ending today, today included. No state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageflow.errors import UsageError
from stageflow.operations.arguments import check_run_id
from stageflow.runtime.result import iso

if TYPE_CHECKING:  # the arithmetic is imported by the report that needs it
    from stageflow.operations.runs import RunDetail
    from stageflow.runtime.stats import PipelineStats
    from stageflow.runtime.store.base import Store
    from stageflow.runtime.usage import CostRow, RunReport

__all__ = [
    "MAX_DAYS",
    "CostReport",
    "Lineage",
    "RunDiff",
    "cost",
    "diff",
    "lineage",
    "record",
    "stats",
    "usage",
]

#: The widest window of days a report reads.
MAX_DAYS = 3660


@dataclass(frozen=True, slots=True)
class CostReport:
    """Runs, task-hours and cost per pipeline per UTC day over a window."""

    since: float
    until: float
    days: int
    pipeline: str | None
    prices: dict[str, float]  # empty: no prices configured (costs are then unknown)
    rows: list[CostRow]

    @property
    def runs(self) -> int:
        return sum(r.runs for r in self.rows)

    @property
    def task_hours(self) -> float:
        return sum(r.task_hours for r in self.rows)

    @property
    def total(self) -> float | None:
        """The window's cost; ``None`` when no prices are configured."""
        return sum(r.cost for r in self.rows) if self.prices else None

    def as_json(self) -> dict[str, Any]:
        rows = [r.as_json() for r in self.rows]
        if not self.prices:
            for row in rows:
                row["cost"] = None
        total = self.total
        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "days": self.days,
            "pipeline": self.pipeline,
            "prices": self.prices or None,
            "rows": rows,
            "total": {
                "runs": self.runs,
                "task_hours": round(self.task_hours, 6),
                "cost": None if total is None else round(total, 6),
            },
        }


@dataclass(frozen=True, slots=True)
class RunDiff:
    """What changed between runs ``a`` and ``b`` (``runtime.lineage.diff_runs``):
    ``changes`` maps a section (params, seeds, code, data, outputs, environment,
    metrics) to the entries that differ, ``{"a": ..., "b": ...}`` each."""

    a: str
    b: str
    pipelines: tuple[str, str]
    states: tuple[str, str]
    recorded: tuple[bool, bool]  # whether each run has a reproducibility record
    changes: dict[str, dict[str, Any]]
    same: list[str]  # the sections without a difference

    def as_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "pipelines": list(self.pipelines),
            "states": list(self.states),
            "recorded": list(self.recorded),
            "changes": self.changes,
            "same": self.same,
        }


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where a target came from and where it went (``runtime.lineage.lineage``): the
    producing task and run, what it read and wrote, its upstream chain (``depth``:
    steps up), the raw inputs, and the tasks that consumed it."""

    target: str
    matched: dict[str, Any]  # how the target was found: kind ("task", "input", ...)
    run_id: str
    pipeline: str
    task: str
    produced: dict[str, Any]
    upstream: list[dict[str, Any]]
    raw_inputs: list[dict[str, Any]]
    consumers: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "matched": self.matched,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "task": self.task,
            "produced": self.produced,
            "upstream": self.upstream,
            "raw_inputs": self.raw_inputs,
            "consumers": self.consumers,
        }


def usage(
    store: Store, run_id: str, prices: Mapping[str, float], *, detail: RunDetail | None = None
) -> RunReport:
    """``run_id``'s measured critical path, usage per task, cost (with ``prices``) and
    right-sizing from its pipeline's recent runs; ``detail``: the run as ``show_run``
    read it already (then only the recent runs are read). Raises ``UsageError``,
    ``RunNotFound``."""
    from stageflow.runtime.usage import report_of, run_report

    check_run_id(run_id)
    if detail is None or detail.run.run_id != run_id:
        return run_report(store, run_id, prices)
    upstream = detail.pipeline.upstream_map()
    return report_of(store, detail.run, detail.task_runs, detail.attempts, upstream, prices)


def cost(
    store: Store,
    prices: Mapping[str, float],
    *,
    days: int,
    now: float,
    pipeline: str | None = None,
) -> CostReport:
    """Runs created in the last ``days`` UTC days (of ``pipeline`` when given), summed
    per pipeline per day. Raises ``UsageError`` for ``days`` out of 1..``MAX_DAYS``."""
    from stageflow.runtime.usage import cost_report

    _check_days(days)
    since, until, rows = cost_report(store, prices, days=days, now=now, pipeline=pipeline)
    return CostReport(since, until, days, pipeline, dict(prices), rows)


def stats(store: Store, pipeline: str, *, days: int, now: float) -> PipelineStats:
    """Per-task statistics of ``pipeline`` over the runs created in the last ``days`` UTC
    days (``runtime.stats``). Raises ``UsageError`` for ``days`` out of range,
    ``StageflowError`` naming the closest pipeline when the store has none of that name."""
    from stageflow.runtime.stats import stats_report

    _check_days(days)
    return stats_report(store, pipeline, days=days, now=now)


def lineage(store: Store, target: str) -> Lineage:
    """Where ``target`` (``RUN_ID/TASK``, a task id, a file a task read or wrote, or a
    sha256 of 8+ hex digits) came from and went. Raises ``UsageError`` when nothing
    matches."""
    from stageflow.runtime.lineage import lineage as find

    if not target.strip() or len(target) > 4096:
        raise UsageError(
            "give RUN_ID/TASK, a task id, a file a task read or wrote, or a sha256",
            field="target",
        )
    found = find(store, target)
    return Lineage(
        target=found["target"],
        matched=found["matched"],
        run_id=found["run_id"],
        pipeline=found["pipeline"],
        task=found["task"],
        produced=found["produced"],
        upstream=found["upstream"],
        raw_inputs=found["raw_inputs"],
        consumers=found["consumers"],
    )


def diff(store: Store, run_a: str, run_b: str) -> RunDiff:
    """What changed between ``run_a`` and ``run_b``: parameters, seeds, code, data,
    outputs (by content), environment, metrics. Raises ``UsageError``, ``RunNotFound``."""
    from stageflow.runtime.lineage import diff_runs

    check_run_id(run_a)
    check_run_id(run_b)
    found = diff_runs(store, run_a, run_b)
    return RunDiff(
        a=found["a"],
        b=found["b"],
        pipelines=(found["pipelines"][0], found["pipelines"][1]),
        states=(found["states"][0], found["states"][1]),
        recorded=(found["recorded"][0], found["recorded"][1]),
        changes=found["changes"],
        same=found["same"],
    )


def record(store: Store, run_id: str) -> dict[str, Any] | None:
    """``run_id``'s reproducibility record (spec, code, environment, seeds, data read,
    tracking), or ``None`` for a run that has none. Raises ``UsageError``, ``RunNotFound``."""
    from stageflow.runtime.lineage import load_record

    check_run_id(run_id)
    store.get_run(run_id)
    return load_record(store, run_id)


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise UsageError(f"days {days} is out of range; give 1 to {MAX_DAYS}", field="days")
