"""Usage after the fact: what decided a run's end, what tasks used, what they cost.

Everything here reads store records (``AttemptRecord`` with its scheduling and
usage fields, ``TaskRunRecord``, ``RunRecord``); the functions are pure, except
the ``*_report`` helpers at the end, which read a store, and ``gantt``, which
draws. Policy:

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
from stageflow.runtime.result import index_order
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
    "gantt",
    "measured_critical_path",
    "parse_request",
    "prices_text",
    "render_cost",
    "render_run_report",
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
_MAX_TASK_LINES = 200  # as the run summary: a huge run's table is cut here

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
                cpu_seconds=_sum(a.cpu_seconds for a in mine),
                peak_rss_mb=_max(a.peak_rss_mb for a in mine),
                gpu_seconds=_sum(a.gpu_seconds for a in mine),
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


def _sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _max(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


# -- reports: read the store, render text -------------------------------------------------------


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
    task_runs = store.task_runs(run_id)
    attempts = store.attempts(run_id)
    upstream = _stored_upstream(store, run)
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
    from stageflow.spec.load import pipeline_from_data

    try:
        spec = store.get_pipeline(run.pipeline, run.pipeline_version)
        return pipeline_from_data(json.loads(spec.spec_json)).upstream_map()
    except (StageflowError, ValueError):
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


def render_run_report(report: RunReport) -> list[str]:
    """The text sections of a run's usage report (empty sections are left out)."""
    lines: list[str] = []
    zero = report.zero
    if report.path:
        width = max([len(s.task_id) for s in report.path] + [4])
        end = report.path[-1].ended_at
        at = f" at +{_seconds(end - zero)}" if zero is not None else ""
        lines.append(f"measured critical path (the chain that decided the run's end{at}):")
        lines.append(f"  {'task':<{width}}  {'attempts':>8} {'queued':>9} {'ran':>9} {'ended':>10}")
        for s in report.path:
            ended = f"+{_seconds(s.ended_at - zero)}" if zero is not None else "-"
            lines.append(
                f"  {s.task_id:<{width}}  {s.attempts:>8} {_seconds(s.wait_s):>9} "
                f"{_seconds(s.run_s):>9} {ended:>10}"
            )
    measured = [
        u
        for u in report.usage
        if u.request
        or u.cpu_seconds is not None
        or u.peak_rss_mb is not None
        or u.gpu_seconds is not None
    ]
    if measured:
        width = max([len(u.task_id) for u in measured] + [4])
        priced = report.cost is not None
        lines.append("usage per task:")
        lines.append(
            f"  {'task':<{width}}  {'cpu s':>9} {'peak MiB':>9} {'gpu s':>8}"
            + (f" {'cost':>10}" if priced else "")
            + "  requested"
        )
        for u in measured[:_MAX_TASK_LINES]:
            cost = f" {_money(u.cost):>10}" if priced else ""
            lines.append(
                f"  {u.task_id:<{width}}  {_number(u.cpu_seconds, 2):>9} "
                f"{_number(u.peak_rss_mb, 1):>9} {_number(u.gpu_seconds, 2):>8}{cost}  "
                f"{_request_text(u.request, u.gpu_devices)}"
            )
        if len(measured) > _MAX_TASK_LINES:
            lines.append(f"  ... and {len(measured) - _MAX_TASK_LINES} more tasks")
        cpu = [u.cpu_seconds for u in measured if u.cpu_seconds is not None]
        peak = [u.peak_rss_mb for u in measured if u.peak_rss_mb is not None]
        gpu = [u.gpu_seconds for u in measured if u.gpu_seconds is not None]
        total = f" {_money(report.cost):>10}" if priced and report.cost is not None else ""
        lines.append(  # the run: CPU and GPU seconds add up; the peak is the largest
            f"  {'run':<{width}}  {_number(sum(cpu) if cpu else None, 2):>9} "
            f"{_number(max(peak) if peak else None, 1):>9} "
            f"{_number(sum(gpu) if gpu else None, 2):>8}{total}  (largest peak of one task)"
        )
    if report.cost is not None:
        lines.append(f"cost: {_money(report.cost)} ({prices_text(report.prices)})")
    advice = [e.recommendation for e in report.history if e.recommendation]
    if advice:
        runs = "run" if report.history_runs == 1 else f"{report.history_runs} runs"
        lines.append(f"right-sizing (from the last {runs} of '{report.run.pipeline}'):")
        lines.extend(f"  {line}" for line in advice)
    return lines


def render_cost(rows: Sequence[CostRow], prices: Mapping[str, float]) -> list[str]:
    """The cost table: one line per pipeline per day, then the total."""
    priced = bool(prices)
    width = max([len(r.pipeline) for r in rows] + [len("pipeline")])
    head = f"{'pipeline':<{width}}  {'day':<10} {'runs':>6} {'task-hours':>11}"
    lines = [head + (f" {'cost':>12}" if priced else "")]
    for r in rows:
        lines.append(
            f"{r.pipeline:<{width}}  {r.day:<10} {r.runs:>6} {r.task_hours:>11.4f}"
            + (f" {_money(r.cost):>12}" if priced else "")
        )
    total_cost = sum(r.cost for r in rows)
    lines.append(
        f"{'total':<{width}}  {'':<10} {sum(r.runs for r in rows):>6} "
        f"{sum(r.task_hours for r in rows):>11.4f}"
        + (f" {_money(total_cost):>12}" if priced else "")
    )
    return lines


def prices_text(prices: Mapping[str, float]) -> str:
    """``cpu_hour=0.05, gpu_hour=2.5``: the prices as configured."""
    return ", ".join(f"{k}={v:g}" for k, v in prices.items())


def _request_text(request: Mapping[str, float], devices: str | None) -> str:
    if not request:
        return "nothing declared"
    parts = []
    for key, value in request.items():
        if key == "memory_gb":
            parts.append(f"memory {format_gb(value)}")
        else:
            parts.append(f"{key} {value:g}")
    if devices:
        parts.append(f"devices {devices}")
    return ", ".join(parts)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _money(value: float | None) -> str:
    """Four decimals; an amount under 0.0001 in scientific notation, so a
    cost is never shown as 0 when it is not."""
    if value is None:
        return "-"
    return f"{value:.4f}" if value == 0 or value >= 0.0001 else f"{value:.1e}"


# -- the Gantt chart --------------------------------------------------------------------------

_ROW = 22.0
_BAR = 14.0
_MARGIN = 16.0
_CHAR = 7.2  # monospace advance at 12 px
_PLOT_WIDTH = 760.0
_MAX_ROWS = 500
_INK = "#212529"
_GRID = "#dee2e6"
_BORDER = "#343a40"


@dataclass(frozen=True, slots=True)
class _Shape:
    kind: Literal["rect", "text", "line"]
    x: float
    y: float
    w: float = 0.0  # rect: width; line: x2
    h: float = 0.0  # rect: height; line: y2
    fill: str = _INK
    text: str = ""
    anchor: Literal["start", "middle", "end"] = "start"
    tip: str = ""
    outline: bool = False


def gantt(
    run: RunRecord,
    task_ids: Sequence[str],
    attempts: Sequence[AttemptRecord],
    fmt: Literal["svg", "png"],
) -> str | bytes:
    """One bar per attempt: y the task (in ``task_ids`` order, then any other; a mapped
    task's elements by index), x the seconds from the run's start, the colour its
    final state (the DAG drawing's colours); the queued wait is a lighter segment
    before the bar. An attempt still running is drawn up to the latest time
    recorded. SVG is text; PNG needs Pillow (``MissingExtra`` without it)."""
    shapes, width, height = _gantt_shapes(run, task_ids, attempts)
    if fmt == "svg":
        return _gantt_svg(shapes, width, height, run)
    return _gantt_png(shapes, width, height)


def _gantt_shapes(
    run: RunRecord, task_ids: Sequence[str], attempts: Sequence[AttemptRecord]
) -> tuple[list[_Shape], float, float]:
    from stageflow.graph.drawing import STATE_COLOURS, UNKNOWN_STATE_COLOUR

    drawn = [a for a in attempts if a.started_at is not None or a.queued_at is not None]
    with_bars = {a.task_id for a in drawn}
    listed = [t for t in task_ids if t in with_bars]
    rows = index_order(dict.fromkeys([*listed, *(a.task_id for a in drawn)]))
    hidden = max(len(rows) - _MAX_ROWS, 0)
    rows = rows[:_MAX_ROWS]
    index = {t: i for i, t in enumerate(rows)}
    times = [t for a in drawn for t in (a.queued_at, a.started_at, a.ended_at) if t is not None] + [
        t for t in (run.started_at, run.ended_at) if t is not None
    ]
    zero = run.started_at if run.started_at is not None else min(times, default=0.0)
    zero = min([zero, *times])
    end = max(times, default=zero)
    span = max(end - zero, 1e-3)
    step = _tick_step(span)
    scale = _PLOT_WIDTH / span
    label_w = max([len(t) for t in rows] + [4]) * _CHAR + 12
    left = _MARGIN + label_w
    top = _MARGIN + 30.0
    plot_h = max(len(rows), 1) * _ROW
    shapes: list[_Shape] = []
    title = f"run {run.run_id} of pipeline '{run.pipeline}': {run.state}"
    shapes.append(_Shape("text", _MARGIN, _MARGIN + 14, text=title))
    for k in range(math.floor(span / step + 1e-9) + 1):
        tick = round(k * step, 9)
        x = left + tick * scale
        shapes.append(_Shape("line", x, top, x, top + plot_h, fill=_GRID))
        shapes.append(_Shape("text", x, top + plot_h + 16, text=f"{tick:g}s", anchor="middle"))
    for i, tid in enumerate(rows):
        y = top + i * _ROW + _ROW / 2
        shapes.append(_Shape("text", left - 8, y + 4, text=tid, anchor="end"))
    states: list[str] = []
    for a in drawn:
        if a.task_id not in index:
            continue
        colour = STATE_COLOURS.get(a.state, UNKNOWN_STATE_COLOUR)
        if a.state not in states:
            states.append(a.state)
        y = top + index[a.task_id] * _ROW + (_ROW - _BAR) / 2
        start = a.started_at if a.started_at is not None else (a.ended_at or end)
        stop = a.ended_at if a.ended_at is not None else end
        tip = f"{a.task_id} attempt {a.attempt}: {a.state}"
        if a.queued_at is not None and start > a.queued_at:
            shapes.append(
                _Shape(
                    "rect",
                    left + (a.queued_at - zero) * scale,
                    y,
                    (start - a.queued_at) * scale,
                    _BAR,
                    fill=_lighter(colour),
                    tip=f"{tip}, queued {start - a.queued_at:.2f}s",
                )
            )
        if a.started_at is not None:
            shapes.append(
                _Shape(
                    "rect",
                    left + (start - zero) * scale,
                    y,
                    max((stop - start) * scale, 1.0),
                    _BAR,
                    fill=colour,
                    tip=f"{tip}, ran {max(stop - start, 0.0):.2f}s",
                    outline=True,
                )
            )
    legend_y = top + plot_h + 40
    x = left
    ordered = [s for s in STATE_COLOURS if s in states] + [
        s for s in states if s not in STATE_COLOURS
    ]
    for state in ordered:
        colour = STATE_COLOURS.get(state, UNKNOWN_STATE_COLOUR)
        shapes.append(_Shape("rect", x, legend_y - 10, 12, 12, fill=colour, outline=True))
        shapes.append(_Shape("text", x + 18, legend_y, text=state))
        x += 18 + len(state) * _CHAR + 16
    shapes.append(_Shape("rect", x, legend_y - 10, 12, 12, fill=_lighter("#adb5bd")))
    shapes.append(_Shape("text", x + 18, legend_y, text="lighter: waiting in the queue"))
    note = "seconds from the run's start"
    if hidden:
        note += f"; {hidden} more tasks not drawn"
    shapes.append(_Shape("text", left, legend_y + 22, text=note))
    width = left + _PLOT_WIDTH + _MARGIN + 24
    width = max(width, _MARGIN * 2 + len(title) * _CHAR, x + 200)
    return shapes, width, legend_y + 22 + _MARGIN


def _tick_step(span: float) -> float:
    """A 1, 2 or 5 x 10^k step giving at most 10 ticks over ``span``."""
    raw = span / 10
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return float(factor * power)
    return float(10 * power)


def _lighter(colour: str) -> str:
    """``colour`` mixed 60% with white: the queued segment's shade."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (255 - c) * 0.6):02x}" for c in (r, g, b))


def _gantt_svg(shapes: Sequence[_Shape], width: float, height: float, run: RunRecord) -> str:
    from html import escape

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="ui-monospace, Menlo, Consolas, '
        '\'DejaVu Sans Mono\', monospace" font-size="12">',
        f"<title>{escape(f'run {run.run_id}')}</title>",
        f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
    ]
    for s in shapes:
        if s.kind == "line":
            out.append(
                f'<line x1="{s.x:.1f}" y1="{s.y:.1f}" x2="{s.w:.1f}" y2="{s.h:.1f}" '
                f'stroke="{s.fill}"/>'
            )
        elif s.kind == "rect":
            stroke = f' stroke="{_BORDER}" stroke-width="0.8"' if s.outline else ""
            tip = f"<title>{escape(s.tip)}</title>" if s.tip else ""
            out.append(
                f'<rect x="{s.x:.1f}" y="{s.y:.1f}" width="{s.w:.1f}" height="{s.h:.1f}" '
                f'fill="{s.fill}"{stroke}>{tip}</rect>'
            )
        else:
            out.append(
                f'<text x="{s.x:.1f}" y="{s.y:.1f}" text-anchor="{s.anchor}" '
                f'fill="{s.fill}">{escape(s.text)}</text>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _gantt_png(shapes: Sequence[_Shape], width: float, height: float) -> bytes:
    import io

    from stageflow.errors import MissingExtra

    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:
        raise MissingExtra("drawing PNG needs Pillow: pip install 'stageflow[draw]'") from exc
    image = Image.new("RGB", (math.ceil(width), math.ceil(height)), "#ffffff")
    pen = ImageDraw.Draw(image)
    font: Any
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow before 10.1: only the fixed-size bitmap font
        font = ImageFont.load_default()
    for s in shapes:
        if s.kind == "line":
            pen.line((s.x, s.y, s.w, s.h), fill=s.fill)
        elif s.kind == "rect":
            pen.rectangle(
                (s.x, s.y, s.x + max(s.w, 1.0), s.y + s.h),
                fill=s.fill,
                outline=_BORDER if s.outline else None,
            )
        else:
            length = font.getlength(s.text)
            x = s.x - (length if s.anchor == "end" else length / 2 if s.anchor == "middle" else 0)
            pen.text((x, s.y - 11), s.text, fill=s.fill, font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
