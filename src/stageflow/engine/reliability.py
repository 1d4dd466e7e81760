"""Reliability arithmetic: a pipeline's run statistics and its quality gates.

Pure: handed the runs (``RunPoint``), the failed task runs (``TaskFailure``) and the
time, it returns ``Reliability`` and ``GateResult`` values; it reads no store and no
clock (``operations.monitoring`` reads them). Policy:

* **Success rate**: successful runs over successful plus failed runs; a cancelled or
  unfinished run decides nothing. ``None`` when no run succeeded or failed.
* **Durations**: ``ended_at - started_at`` of every run that started and ended
  (success, failed or cancelled): the time a user waited for an outcome. p50, p95
  and p99 by nearest rank (the smallest value with at least p% of the values at or
  below it).
* **Queue wait**: ``started_at - created_at`` of every run that started; p50, p95.
* **Incidents and MTTR**: runs that ended ``success`` or ``failed``, by end time. A
  failed run opens an incident (unless one is open); the next successful run closes
  it. Its recovery time is the success's end minus the first failure's end. MTTR is
  the mean recovery time of the closed incidents (``None``: none closed). An incident
  still open at the end is reported as ``open_incident_since`` (its first failure's
  end), not averaged: its recovery time is not known yet.
* **MTBF**: the mean time between consecutive failed runs' ends (``None`` with fewer
  than two failures): how often the pipeline fails while it is used.
* **Failures by task and by error type**: failed task runs, a mapped element
  (``train[3]``) under its task (``train``); the error type is the exception class
  that starts the error's first non-blank line (``ValueError: ...`` -> ``ValueError``),
  else that line itself (at most ``ERROR_TYPE_CHARS`` characters).

Quality gates (seed 002's success criteria): **reliability** (success rate above
``min_success_rate``, 95 %; no finished run fails it: nothing proves it), **recovery**
(MTTR below ``max_recovery_seconds``, 30 min; an open incident older than that fails
it too; no failure passes it) and **execution time** (p95 duration below
``max_duration_seconds``, 4 h; no run passes it).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_MAX_DURATION_SECONDS",
    "DEFAULT_MAX_RECOVERY_SECONDS",
    "DEFAULT_MIN_SUCCESS_RATE",
    "ERROR_TYPE_CHARS",
    "GateResult",
    "Reliability",
    "RunPoint",
    "TaskFailure",
    "Thresholds",
    "error_type",
    "evaluate_gates",
    "nearest_rank",
    "reliability",
]

#: Seed 002: "Pipeline Reliability: >95% success rate" (percent).
DEFAULT_MIN_SUCCESS_RATE = 95.0
#: Seed 002: "Recovery Time: <30 minutes for error recovery".
DEFAULT_MAX_RECOVERY_SECONDS = 30 * 60.0
#: Seed 002: "Execution Time: <4 hours for full pipeline".
DEFAULT_MAX_DURATION_SECONDS = 4 * 3600.0
#: The longest error type kept from an error's first line.
ERROR_TYPE_CHARS = 100

_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
_ELEMENT = re.compile(r"\[\d+\]$")


@dataclass(frozen=True, slots=True)
class RunPoint:
    """The times and state of one run."""

    run_id: str
    state: str
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """One failed task run: its task id and error text."""

    task_id: str
    error: str | None


@dataclass(frozen=True, slots=True)
class Reliability:
    """A pipeline's statistics over a window (module docstring)."""

    runs: int
    runs_by_state: dict[str, int]
    success_rate: float | None  # 0..1
    duration_p50: float | None
    duration_p95: float | None
    duration_p99: float | None
    queue_wait_p50: float | None
    queue_wait_p95: float | None
    mttr_seconds: float | None
    recoveries: int
    open_incident_since: float | None
    mtbf_seconds: float | None
    failures: int
    failures_by_task: dict[str, int] = field(default_factory=dict)
    failures_by_error: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "runs_by_state": dict(sorted(self.runs_by_state.items())),
            "success_rate": _round(self.success_rate),
            "duration_seconds": {
                "p50": _round(self.duration_p50),
                "p95": _round(self.duration_p95),
                "p99": _round(self.duration_p99),
            },
            "queue_wait_seconds": {
                "p50": _round(self.queue_wait_p50),
                "p95": _round(self.queue_wait_p95),
            },
            "mttr_seconds": _round(self.mttr_seconds),
            "recoveries": self.recoveries,
            "open_incident_since": self.open_incident_since,
            "mtbf_seconds": _round(self.mtbf_seconds),
            "failures": self.failures,
            "failures_by_task": dict(self.failures_by_task),
            "failures_by_error": dict(self.failures_by_error),
        }


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The quality gates' limits: percent, seconds, seconds."""

    min_success_rate: float = DEFAULT_MIN_SUCCESS_RATE
    max_recovery_seconds: float = DEFAULT_MAX_RECOVERY_SECONDS
    max_duration_seconds: float = DEFAULT_MAX_DURATION_SECONDS


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate: its name, whether it passed, its figure and threshold (``None``:
    no figure), in the gate's unit, and why in words."""

    gate: str
    passed: bool
    figure: float | None
    threshold: float
    unit: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "passed": self.passed,
            "figure": _round(self.figure),
            "threshold": self.threshold,
            "unit": self.unit,
            "reason": self.reason,
        }


def nearest_rank(values: Sequence[float], percent: float) -> float | None:
    """The ``percent`` percentile of ``values`` by nearest rank; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def error_type(error: str | None) -> str:
    """The exception class starting ``error``'s first non-blank line, else that line
    (cut to ``ERROR_TYPE_CHARS``); ``"unknown"`` for no text."""
    line = next((ln.strip() for ln in (error or "").splitlines() if ln.strip()), "")
    if not line:
        return "unknown"
    found = _EXCEPTION.match(line)
    if found and (found.group(1)[:1].isupper() or "." in found.group(1)):
        return found.group(1)
    return line[:ERROR_TYPE_CHARS]


def reliability(runs: Iterable[RunPoint], failures: Iterable[TaskFailure] = ()) -> Reliability:
    """The statistics of ``runs`` (any order) and their failed task runs."""
    runs = list(runs)
    by_state: dict[str, int] = {}
    for r in runs:
        by_state[r.state] = by_state.get(r.state, 0) + 1
    successes, failed = by_state.get("success", 0), by_state.get("failed", 0)
    durations = [
        max(0.0, r.ended_at - r.started_at)
        for r in runs
        if r.started_at is not None and r.ended_at is not None
    ]
    waits = [max(0.0, r.started_at - r.created_at) for r in runs if r.started_at is not None]
    recoveries, open_since = _incidents(runs)
    failure_ends = sorted(
        r.ended_at for r in runs if r.state == "failed" and r.ended_at is not None
    )
    gaps = [b - a for a, b in itertools.pairwise(failure_ends)]
    by_task: dict[str, int] = {}
    by_error: dict[str, int] = {}
    for f in failures:
        task = _ELEMENT.sub("", f.task_id)
        by_task[task] = by_task.get(task, 0) + 1
        kind = error_type(f.error)
        by_error[kind] = by_error.get(kind, 0) + 1
    return Reliability(
        runs=len(runs),
        runs_by_state=by_state,
        success_rate=successes / (successes + failed) if successes + failed else None,
        duration_p50=nearest_rank(durations, 50),
        duration_p95=nearest_rank(durations, 95),
        duration_p99=nearest_rank(durations, 99),
        queue_wait_p50=nearest_rank(waits, 50),
        queue_wait_p95=nearest_rank(waits, 95),
        mttr_seconds=sum(recoveries) / len(recoveries) if recoveries else None,
        recoveries=len(recoveries),
        open_incident_since=open_since,
        mtbf_seconds=sum(gaps) / len(gaps) if gaps else None,
        failures=failed,
        failures_by_task=dict(sorted(by_task.items(), key=lambda kv: (-kv[1], kv[0]))),
        failures_by_error=dict(sorted(by_error.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def evaluate_gates(stats: Reliability, thresholds: Thresholds, now: float) -> list[GateResult]:
    """Seed 002's quality gates on ``stats`` at ``now`` (module docstring), in the
    order reliability, recovery, execution time."""
    return [
        _reliability_gate(stats, thresholds.min_success_rate),
        _recovery_gate(stats, thresholds.max_recovery_seconds, now),
        _duration_gate(stats, thresholds.max_duration_seconds),
    ]


def _reliability_gate(stats: Reliability, limit: float) -> GateResult:
    if stats.success_rate is None:
        return GateResult(
            "reliability", False, None, limit, "%", "no run succeeded or failed in the window"
        )
    percent = stats.success_rate * 100.0
    passed = percent > limit
    return GateResult(
        "reliability",
        passed,
        percent,
        limit,
        "%",
        f"success rate {percent:.1f}% {'>' if passed else '<='} {limit:g}%",
    )


def _recovery_gate(stats: Reliability, limit: float, now: float) -> GateResult:
    if stats.open_incident_since is not None and now - stats.open_incident_since >= limit:
        age = now - stats.open_incident_since
        return GateResult(
            "recovery",
            False,
            age,
            limit,
            "s",
            f"failing for {age:.1f}s with no successful run since (>= {limit:g}s)",
        )
    if stats.mttr_seconds is None:
        return GateResult("recovery", True, None, limit, "s", "no recovery to measure")
    passed = stats.mttr_seconds < limit
    return GateResult(
        "recovery",
        passed,
        stats.mttr_seconds,
        limit,
        "s",
        f"MTTR {stats.mttr_seconds:.1f}s {'<' if passed else '>='} {limit:g}s",
    )


def _duration_gate(stats: Reliability, limit: float) -> GateResult:
    if stats.duration_p95 is None:
        return GateResult("execution_time", True, None, limit, "s", "no run ended in the window")
    passed = stats.duration_p95 < limit
    return GateResult(
        "execution_time",
        passed,
        stats.duration_p95,
        limit,
        "s",
        f"p95 duration {stats.duration_p95:.1f}s {'<' if passed else '>='} {limit:g}s",
    )


def _incidents(runs: Sequence[RunPoint]) -> tuple[list[float], float | None]:
    """The closed incidents' recovery times and when the open one began (module
    docstring)."""
    decided = sorted(
        (r for r in runs if r.state in ("success", "failed") and r.ended_at is not None),
        key=lambda r: (r.ended_at or 0.0, r.run_id),
    )
    recoveries: list[float] = []
    since: float | None = None
    for r in decided:
        assert r.ended_at is not None  # filtered above
        if r.state == "failed":
            if since is None:
                since = r.ended_at
        elif since is not None:
            recoveries.append(r.ended_at - since)
            since = None
    return recoveries, since


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
