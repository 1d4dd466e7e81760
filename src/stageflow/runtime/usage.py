"""Usage after the fact: what decided a run's end, what tasks used, what they cost.

Everything here reads store records (``AttemptRecord`` with its scheduling and
usage fields, ``TaskRunRecord``, ``RunRecord``); the functions are pure, except
the ``*_report`` helpers at the end, which read a store. Nothing here renders:
the interfaces turn these dataclasses into text, JSON or pictures
(``service.tables``, ``service.gantt``). Policy:

* **Measured critical path** of a run: start at the task that ended last (the
  one that decided the run's end; a tie goes to the one created last, i.e. the
  most downstream) and walk back, each time to the upstream task whose end was
  latest, until a task has no upstream that ended. A mapped task's end is decided
  by its elements (``task[k]``): the walk goes to the element that ended last,
  and from an element on to its parent's upstream. Each step shows the queued
  wait (``started_at - queued_at``) and run time of the task's last attempt and
  its number of attempts.
* **Efficiency and right-sizing**, per task over a pipeline's recent runs (an
  element ``task[k]`` counts as ``task``): the memory asked for (the newest
  request) against the largest peak resident memory measured, and the CPUs asked
  for against the cores used on average (CPU seconds / wall seconds). A task
  asking for more than twice its peak is told a smaller figure; one whose peak
  is above 90% of its request is told to raise it. The figure is 1.5 x the peak,
  rounded up to a multiple of 0.5 GB (at least 0.5 GB). 1 GB is 1024 MiB.
* **Cost**: an attempt costs what it held (its request: ``cpu``, ``memory_gb``,
  ``gpu``) for as long as it ran (``ended_at - started_at``), at the configured
  price per unit-hour (``Settings.cost_prices``). A task that declared no
  resources holds nothing: it counts as cpu 0 and costs 0, whatever it used.
  An attempt that never started or has not ended costs 0. A run costs the sum of
  its attempts; runs are summed per pipeline per UTC day of their creation.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from stageflow.errors import StageflowError
from stageflow.runtime.result import index_order, sum_known
from stageflow.runtime.store.base import AttemptRecord, RunRecord, TaskRunRecord

if TYPE_CHECKING:
    from stageflow.runtime.store.base import Store

__all__ = [
    "HISTORY_RUNS",
    "CostRow",
    "Efficiency",
    "PathStep",
    "RunReport",
    "TaskUsage",
    "attempt_cost",
    "attempt_hours",
    "base_task_id",
    "cost_by_pipeline_day",
    "cost_report",
    "efficiency",
    "format_gb",
    "measured_critical_path",
    "parse_request",
    "report_of",
    "run_cost",
    "run_report",
    "suggest_memory_gb",
    "task_usage",
    "utc_day",
]

#: How many recent runs of a pipeline right-sizing looks at.
HISTORY_RUNS = 10
#: A request above this multiple of the peak is oversized.
OVERSIZED = 2.0
#: A peak above this share of the request is too close to it.
TIGHT = 0.9
#: A suggested memory request: this multiple of the peak ...
HEADROOM = 1.5
#: ... rounded up to a multiple of this many GB.
MEMORY_STEP_GB = 0.5
MIB_PER_GB = 1024.0

_ELEMENT = re.compile(r"\[\d+\]$")

PricedResource = Literal["cpu", "memory_gb", "gpu"]
#: Which request field each price applies to.
PRICED: Mapping[str, PricedResource] = {
    "cpu_hour": "cpu",
    "memory_gb_hour": "memory_gb",
    "gpu_hour": "gpu",
}


# -- requests and attempts ---------------------------------------------------------


def parse_request(request_json: str | None) -> dict[str, float]:
    """An attempt's ``request_json`` as ``{"cpu": 2.0, ...}``: its numeric fields only.

    ``None``, malformed JSON or anything but an object gives ``{}`` (a report never
    fails on one odd row)."""
    if not request_json:
        return {}
    try:
        data = json.loads(request_json)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in data.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def base_task_id(task_id: str) -> str:
    """The spec's task id of a mapped element: ``train[3]`` -> ``train``."""
    while _ELEMENT.search(task_id):
        task_id = _ELEMENT.sub("", task_id)
    return task_id


def attempt_hours(attempt: AttemptRecord) -> float:
    """Wall hours the attempt ran (``ended_at - started_at``); 0 unless both are known."""
    if attempt.started_at is None or attempt.ended_at is None:
        return 0.0
    return max(attempt.ended_at - attempt.started_at, 0.0) / 3600.0


def attempt_cost(attempt: AttemptRecord, prices: Mapping[str, float]) -> float:
    """What the attempt held times how long it ran times the price per unit-hour.

    A task that declared no resources (``request_json`` ``None``) holds nothing:
    it counts as cpu 0 and costs 0."""
    hours = attempt_hours(attempt)
    if hours == 0.0 or not prices:
        return 0.0
    request = parse_request(attempt.request_json)
    return hours * sum(
        request.get(resource, 0.0) * prices.get(price, 0.0) for price, resource in PRICED.items()
    )


def run_cost(attempts: Iterable[AttemptRecord], prices: Mapping[str, float]) -> float:
    """The sum of the attempts' costs (see :func:`attempt_cost`)."""
    return sum(attempt_cost(a, prices) for a in attempts)


# -- cost per pipeline per day --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostRow:
    """One pipeline on one UTC day (the day its runs were created)."""

    pipeline: str
    day: str  # YYYY-MM-DD, UTC
    runs: int
    task_hours: float  # wall hours of all attempts
    cpu_hours: float  # CPUs held x hours (from the requests)
    memory_gb_hours: float
    gpu_hours: float
    cost: float  # 0.0 when no prices are configured

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "day": self.day,
            "runs": self.runs,
            "task_hours": round(self.task_hours, 6),
            "cpu_hours": round(self.cpu_hours, 6),
            "memory_gb_hours": round(self.memory_gb_hours, 6),
            "gpu_hours": round(self.gpu_hours, 6),
            "cost": round(self.cost, 6),
        }


def utc_day(ts: float) -> str:
    """``YYYY-MM-DD`` of ``ts`` in UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def cost_by_pipeline_day(
    runs: Iterable[tuple[RunRecord, Sequence[AttemptRecord]]], prices: Mapping[str, float]
) -> list[CostRow]:
    """Runs and their attempts summed per pipeline per UTC day of the run's creation;
    sorted by day, then pipeline. A run without attempts (e.g. all cached) counts
    as a run that cost nothing."""
    sums: dict[tuple[str, str], list[float]] = {}
    for run, attempts in runs:
        row = sums.setdefault((utc_day(run.created_at), run.pipeline), [0.0] * 6)
        row[0] += 1
        for a in attempts:
            hours = attempt_hours(a)
            request = parse_request(a.request_json)
            row[1] += hours
            row[2] += request.get("cpu", 0.0) * hours
            row[3] += request.get("memory_gb", 0.0) * hours
            row[4] += request.get("gpu", 0.0) * hours
            row[5] += attempt_cost(a, prices)
    return [
        CostRow(pipeline, day, int(r[0]), r[1], r[2], r[3], r[4], r[5])
        for (day, pipeline), r in sorted(sums.items())
    ]


# -- the measured critical path -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathStep:
    """One task on the measured critical path (times from its last attempt)."""

    task_id: str
    state: str
    attempts: int
    ended_at: float
    queued_at: float | None = None
    started_at: float | None = None
    wait_s: float | None = None  # started_at - queued_at
    run_s: float | None = None  # ended_at - started_at of the last attempt

    def as_json(self, zero: float | None = None) -> dict[str, Any]:
        def rel(ts: float | None) -> float | None:
            return None if ts is None or zero is None else round(ts - zero, 6)

        return {
            "task_id": self.task_id,
            "state": self.state,
            "attempts": self.attempts,
            "wait_s": None if self.wait_s is None else round(self.wait_s, 6),
            "run_s": None if self.run_s is None else round(self.run_s, 6),
            "ended_s": rel(self.ended_at),
        }


def measured_critical_path(
    upstream: Mapping[str, Sequence[str]],
    task_runs: Sequence[TaskRunRecord],
    attempts: Sequence[AttemptRecord],
) -> list[PathStep]:
    """The chain of tasks that decided the run's end, first task first (see the
    module docstring). Tasks that never ended are not on it; an empty list when
    no task ended."""
    by_task: dict[str, list[AttemptRecord]] = {}
    for a in attempts:
        by_task.setdefault(a.task_id, []).append(a)
    # Task creation order, then tasks seen only in attempts (a dict keeps order).
    order = list(dict.fromkeys([*(t.task_id for t in task_runs), *by_task]))
    rows = {t.task_id: t for t in task_runs}
    ends: dict[str, float] = {}
    for tid in order:
        end = rows[tid].ended_at if tid in rows else None
        if end is None:
            end = max(
                (a.ended_at for a in by_task.get(tid, []) if a.ended_at is not None), default=None
            )
        if end is not None:
            ends[tid] = end
    if not ends:
        return []
    position = {tid: i for i, tid in enumerate(order)}
    elements: dict[str, list[str]] = {}
    for tid in order:
        match = _ELEMENT.search(tid)
        if match is not None:
            elements.setdefault(tid[: match.start()], []).append(tid)

    def before(tid: str) -> list[str]:
        """What ``tid`` waited for: a mapped task's elements, else its upstream (an
        element's are its task's)."""
        if elements.get(tid):
            return elements[tid]
        spec_id = tid
        while spec_id not in upstream and _ELEMENT.search(spec_id):
            spec_id = _ELEMENT.sub("", spec_id)
        return list(upstream.get(spec_id, ()))

    last = max(ends, key=lambda tid: (ends[tid], position[tid]))
    chain = [last]
    seen = {last}
    while True:
        candidates = [u for u in before(chain[-1]) if u in ends and u not in seen]
        if not candidates:
            break
        # The upstream that ended latest; a tie goes to the first listed.
        nxt = candidates[0]
        for u in candidates[1:]:
            if ends[u] > ends[nxt]:
                nxt = u
        chain.append(nxt)
        seen.add(nxt)
    chain.reverse()
    return [_step(tid, rows.get(tid), by_task.get(tid, []), ends[tid]) for tid in chain]


def _step(
    tid: str, row: TaskRunRecord | None, attempts: Sequence[AttemptRecord], end: float
) -> PathStep:
    last = max(attempts, key=lambda a: a.attempt) if attempts else None
    state = row.state if row is not None else (last.state if last is not None else "unknown")
    count = max(row.attempts if row is not None else 0, len(attempts))
    if last is None:
        return PathStep(tid, state, count, end)
    wait = None
    if last.queued_at is not None and last.started_at is not None:
        wait = max(last.started_at - last.queued_at, 0.0)
    run = None
    if last.started_at is not None and last.ended_at is not None:
        run = max(last.ended_at - last.started_at, 0.0)
    return PathStep(tid, state, count, end, last.queued_at, last.started_at, wait, run)


# -- usage of one run, efficiency over recent runs ----------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskUsage:
    """What one task of one run used, over all its attempts."""

    task_id: str
    attempts: int
    wall_s: float  # sum of the attempts' run times
    cpu_seconds: float | None  # sum of the measured ones; None: none measured
    peak_rss_mb: float | None  # the largest measured
    gpu_seconds: float | None
    gpu_devices: str | None  # of the last attempt that had some
    request: dict[str, float] = field(default_factory=dict)  # the last attempt's
    cost: float | None = None  # None: no prices configured

    def as_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "attempts": self.attempts,
            "wall_s": round(self.wall_s, 6),
            "cpu_seconds": self.cpu_seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "gpu_seconds": self.gpu_seconds,
            "gpu_devices": self.gpu_devices,
            "request": self.request,
            "cost": None if self.cost is None else round(self.cost, 6),
        }


def task_usage(
    attempts: Sequence[AttemptRecord], prices: Mapping[str, float] | None = None
) -> list[TaskUsage]:
    """Per task (in the order first met, a mapped task's elements by index), its
    attempts' usage; ``cost`` only with prices."""
    by_task: dict[str, list[AttemptRecord]] = {}
    for a in attempts:
        by_task.setdefault(a.task_id, []).append(a)
    out = []
    for tid in index_order(by_task):
        mine = by_task[tid]
        requests = [a.request_json for a in mine if a.request_json]
        devices = [a.gpu_devices for a in mine if a.gpu_devices]
        out.append(
            TaskUsage(
                task_id=tid,
                attempts=len(mine),
                wall_s=sum(attempt_hours(a) for a in mine) * 3600.0,
                cpu_seconds=sum_known(a.cpu_seconds for a in mine),
                peak_rss_mb=_max(a.peak_rss_mb for a in mine),
                gpu_seconds=sum_known(a.gpu_seconds for a in mine),
                gpu_devices=devices[-1] if devices else None,
                request=parse_request(requests[-1]) if requests else {},
                cost=run_cost(mine, prices) if prices else None,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Efficiency:
    """One task over a pipeline's recent runs: asked for against used."""

    task_id: str
    runs: int  # runs in which it has a measured attempt
    requested_memory_gb: float | None  # the newest request's; None: none asked
    peak_rss_mb: float | None
    requested_cpu: float | None
    cores_used: float | None  # CPU seconds / wall seconds, over measured attempts
    recommendation: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "runs": self.runs,
            "requested_memory_gb": self.requested_memory_gb,
            "peak_rss_mb": self.peak_rss_mb,
            "requested_cpu": self.requested_cpu,
            "cores_used": None if self.cores_used is None else round(self.cores_used, 4),
            "recommendation": self.recommendation,
        }


def suggest_memory_gb(peak_gb: float) -> float:
    """1.5 x the peak, rounded up to a multiple of 0.5 GB, at least 0.5 GB."""
    steps = math.ceil(round(HEADROOM * peak_gb / MEMORY_STEP_GB, 9))
    return max(steps, 1) * MEMORY_STEP_GB


def format_gb(gb: float) -> str:
    """``8 GB``, ``1.2 GB``, ``0.25 GB``; under 0.1 GB in MiB (``45 MiB``)."""
    if gb < 0.1:
        return f"{gb * MIB_PER_GB:.0f} MiB"
    return f"{round(gb, 2 if gb < 10 else 1):g} GB"


def efficiency(runs: Sequence[tuple[RunRecord, Sequence[AttemptRecord]]]) -> list[Efficiency]:
    """Per task (spec id: elements count as their task), over ``runs`` given newest
    first (as ``Store.recent_attempts`` returns them), with a recommendation where
    the memory request is off (see the module docstring). Tasks without any
    measurement or request are left out."""
    order: dict[str, None] = {}  # tasks in the order first met
    request: dict[str, dict[str, float]] = {}  # the newest request of each task
    peak: dict[str, float] = {}
    cpu_s: dict[str, float] = {}
    wall_s: dict[str, float] = {}
    measured_runs: dict[str, set[str]] = {}
    for run, attempts in runs:
        newest_here: dict[str, dict[str, float]] = {}
        for a in attempts:
            tid = base_task_id(a.task_id)
            order.setdefault(tid, None)
            if a.request_json:
                newest_here[tid] = parse_request(a.request_json)
            if a.peak_rss_mb is not None or a.cpu_seconds is not None:
                measured_runs.setdefault(tid, set()).add(run.run_id)
            if a.peak_rss_mb is not None:
                peak[tid] = max(peak.get(tid, 0.0), a.peak_rss_mb)
            hours = attempt_hours(a)
            if a.cpu_seconds is not None and hours > 0:
                cpu_s[tid] = cpu_s.get(tid, 0.0) + a.cpu_seconds
                wall_s[tid] = wall_s.get(tid, 0.0) + hours * 3600.0
        for tid, req in newest_here.items():
            request.setdefault(tid, req)  # runs come newest first: keep the first seen
    out = []
    for tid in order:
        req = request.get(tid, {})
        if tid not in measured_runs and not req:
            continue
        memory = req.get("memory_gb") or None
        count = len(measured_runs.get(tid, ()))
        out.append(
            Efficiency(
                task_id=tid,
                runs=count,
                requested_memory_gb=memory,
                peak_rss_mb=peak.get(tid),
                requested_cpu=req.get("cpu"),
                cores_used=cpu_s[tid] / wall_s[tid] if wall_s.get(tid) else None,
                recommendation=_recommend(tid, memory, peak.get(tid), count),
            )
        )
    return out


def _recommend(tid: str, memory_gb: float | None, peak_mb: float | None, runs: int) -> str | None:
    if not memory_gb or not peak_mb or runs == 0:
        return None
    peak_gb = peak_mb / MIB_PER_GB
    over = "over its last run" if runs == 1 else f"over its last {runs} runs"
    suggestion = suggest_memory_gb(peak_gb)
    asked, peaked = format_gb(memory_gb), format_gb(peak_gb)
    if memory_gb > OVERSIZED * peak_gb and suggestion < memory_gb:
        return f"{tid} asked {asked}, peaked at {peaked} {over}; {format_gb(suggestion)} would do"
    if peak_gb > TIGHT * memory_gb:
        share = f"{100 * peak_gb / memory_gb:.0f}%"
        return (
            f"{tid} asked {asked}, peaked at {peaked} ({share} of it) {over}; "
            f"raise it to {format_gb(suggestion)}"
        )
    return None


def _max(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


# -- reports: read the store -------------------------------------------------------------------


@dataclass
class RunReport:
    """Everything ``stageflow runs show`` adds about usage for one run."""

    run: RunRecord
    zero: float | None  # the run's start: times are shown relative to it
    path: list[PathStep]
    usage: list[TaskUsage]
    cost: float | None  # None: no prices configured
    prices: dict[str, float]
    history: list[Efficiency]
    history_runs: int  # how many recent runs of the pipeline ``history`` covers

    def as_json(self) -> dict[str, Any]:
        return {
            "critical_path": [step.as_json(self.zero) for step in self.path],
            "usage": [u.as_json() for u in self.usage],
            "cost": None if self.cost is None else round(self.cost, 6),
            "prices": self.prices,
            "right_sizing": [e.as_json() for e in self.history],
            "right_sizing_runs": self.history_runs,
        }


def run_report(
    store: Store, run_id: str, prices: Mapping[str, float], *, history: int = HISTORY_RUNS
) -> RunReport:
    """The usage report of ``run_id``; ``RunNotFound`` when the store has no such run.

    The task graph comes from the pipeline version the run used (as stored); a
    spec that cannot be read back gives a path of just the task that ended last."""
    run = store.get_run(run_id)
    upstream = _stored_upstream(store, run)
    return report_of(
        store, run, store.task_runs(run_id), store.attempts(run_id), upstream, prices, history
    )


def report_of(
    store: Store,
    run: RunRecord,
    task_runs: list[TaskRunRecord],
    attempts: list[AttemptRecord],
    upstream: Mapping[str, list[str]],
    prices: Mapping[str, float],
    history: int = HISTORY_RUNS,
) -> RunReport:
    """``run_report`` of records the caller read already (only the pipeline's recent
    attempts are read here)."""
    recent = store.recent_attempts(run.pipeline, history)
    return RunReport(
        run=run,
        zero=_zero(run, attempts),
        path=measured_critical_path(upstream, task_runs, attempts),
        usage=task_usage(attempts, prices),
        cost=run_cost(attempts, prices) if prices else None,
        prices=dict(prices),
        history=efficiency(recent),
        history_runs=len(recent),
    )


def _stored_upstream(store: Store, run: RunRecord) -> dict[str, list[str]]:
    from stageflow.runtime.loading import pipeline_of_run

    try:
        return pipeline_of_run(store, run).upstream_map()
    except StageflowError:  # the version is gone or no longer builds: no graph
        return {}


def _zero(run: RunRecord, attempts: Sequence[AttemptRecord]) -> float | None:
    if run.started_at is not None:
        return run.started_at
    times = [t for a in attempts for t in (a.queued_at, a.started_at) if t is not None]
    return min(times, default=None)


def cost_report(
    store: Store,
    prices: Mapping[str, float],
    *,
    days: int,
    now: float,
    pipeline: str | None = None,
) -> tuple[float, float, list[CostRow]]:
    """``(since, until, rows)``: the runs created in the last ``days`` UTC days
    (today included), summed per pipeline per day."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = (today - timedelta(days=days - 1)).timestamp()
    until = (today + timedelta(days=1)).timestamp()
    rows = cost_by_pipeline_day(store.attempts_between(since, until, pipeline), prices)
    return since, until, rows
