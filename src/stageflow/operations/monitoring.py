"""Monitoring queries: metric history, current gauges, export, statistics, quality gates.

The monitor (``runtime.monitor``) samples into the store; these functions read it
for every interface (``stageflow metrics``, ``statistics``, ``gates``; the API's
``/api/v1/monitoring``). The statistics' and gates' arithmetic is
``engine.reliability``'s; here the store is read and arguments are checked. Every
mistake is a ``UsageError`` naming its field: a time that is neither ISO 8601 nor
relative, ``from`` after ``to``, an unknown metric (the known ones listed), an
unknown format, days out of range, an unknown pipeline (the closest named).

Times: ISO 8601 (UTC when no offset is given), ``now``, or relative to now: ``-1h``,
``-30m``, ``-2d``, ``-90s`` (``spec.times.parse_duration``'s units). A range is
inclusive at both ends. Statistics cover the runs created in the last ``days`` x 24 h
(a rolling window, not UTC days as ``stageflow stats``).

Export (seed 003's ``export_metrics``): CSV with a header (``EXPORT_COLUMNS``), one
row per sample, ``at`` as ISO 8601 UTC with microseconds and ``timestamp`` as epoch
seconds, labels as a JSON object; JSON is a list of objects with the same fields.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stageflow.errors import UsageError
from stageflow.runtime.store.base import MetricSample

if TYPE_CHECKING:
    from stageflow.engine.reliability import GateResult, Reliability, Thresholds
    from stageflow.runtime.store.base import RunRecord, Store

__all__ = [
    "EXPORT_COLUMNS",
    "EXPORT_FORMATS",
    "MAX_DAYS",
    "CurrentMetrics",
    "GateReport",
    "MetricsHistory",
    "PipelineReliability",
    "check_metric_names",
    "current_metrics",
    "export_text",
    "metrics_history",
    "parse_time",
    "pipeline_statistics",
    "quality_gates",
    "time_range",
]

#: The export's formats.
EXPORT_FORMATS = ("csv", "json")
#: The CSV header, and each JSON object's keys.
EXPORT_COLUMNS = ("name", "at", "timestamp", "host", "labels", "value")
#: The largest ``days`` of statistics and gates (ten years).
MAX_DAYS = 3660
#: The runs one statistics report reads at most (the newest).
MAX_RUNS = 100_000
#: ``current_metrics`` shows series sampled within this many intervals (at least a minute).
CURRENT_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class MetricsHistory:
    """The samples of ``names`` (every name when empty) in ``[since, until]``."""

    names: tuple[str, ...]
    since: float
    until: float
    samples: list[MetricSample]

    def as_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "from": _iso(self.since),
            "to": _iso(self.until),
            "samples": [sample_json(s) for s in self.samples],
        }


@dataclass(frozen=True, slots=True)
class CurrentMetrics:
    """The newest sample of each series: per host, and of the store."""

    at: float
    hosts: dict[str, dict[str, float]]
    store: dict[str, float]
    sampled_at: float | None  # the newest sample's time; None: nothing sampled lately
    tasks: list[MetricSample] = field(default_factory=list)  # running task processes

    def as_json(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "sampled_at": _iso(self.sampled_at) if self.sampled_at is not None else None,
            "hosts": self.hosts,
            "store": self.store,
            "tasks": [sample_json(s) for s in self.tasks],
        }


@dataclass(frozen=True, slots=True)
class PipelineReliability:
    """One pipeline's statistics over its runs created in ``[since, until]``."""

    pipeline: str
    days: int
    since: float
    until: float
    stats: Reliability

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "days": self.days,
            "from": _iso(self.since),
            "to": _iso(self.until),
            **self.stats.as_json(),
        }


@dataclass(frozen=True, slots=True)
class GateReport:
    """Seed 002's quality gates of one pipeline; ``passed`` when every gate passed."""

    pipeline: str
    days: int
    gates: list[GateResult]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "days": self.days,
            "passed": self.passed,
            "gates": [g.as_json() for g in self.gates],
        }


def parse_time(text: str, field: str, now: float) -> float:
    """``text`` as epoch seconds: ISO 8601, ``now`` or ``-DURATION`` before ``now``
    (module docstring). ``UsageError`` naming ``field`` otherwise."""
    from stageflow.spec.times import parse_duration, parse_instant

    value = text.strip()
    if value.lower() == "now":
        return now
    if value.startswith("-"):
        try:
            return now - parse_duration(value[1:], field)
        except UsageError:
            raise UsageError(
                f"{field} {text!r} is not a relative time; give e.g. -90s, -30m, -1h or -2d",
                field=field.lstrip("-"),
            ) from None
    try:
        return parse_instant(value, field)
    except UsageError:
        raise UsageError(
            f"{field} {text!r} is not a time; give ISO 8601 (2026-03-01T12:00:00Z), "
            "now, or a time relative to now (-1h, -30m, -2d)",
            field=field.lstrip("-"),
        ) from None


def time_range(
    start: str | None,
    end: str | None,
    now: float,
    *,
    default_span: float = 3600.0,
    names: tuple[str, str] = ("--from", "--to"),
) -> tuple[float, float]:
    """``(since, until)`` from the texts (``None``: ``default_span`` before the end;
    now). ``UsageError`` naming the first of ``names`` when it is after the end."""
    until = now if end is None else parse_time(end, names[1], now)
    since = until - default_span if start is None else parse_time(start, names[0], now)
    if since > until:
        raise UsageError(
            f"{names[0]} {start} is after {names[1]} {end or 'now'}; give a {names[0]} "
            f"at or before {names[1]}",
            field=names[0].lstrip("-"),
        )
    return since, until


def check_metric_names(store: Store, names: Sequence[str], field: str = "name") -> None:
    """``UsageError`` naming ``field`` and listing the known names when one of
    ``names`` is neither sampled by the monitor nor in the store."""
    from stageflow.runtime.monitor import METRIC_NAMES

    known = sorted(set(METRIC_NAMES) | set(store.sample_names()))
    unknown = [n for n in names if n not in known]
    if unknown:
        from stageflow.spec.suggest import did_you_mean

        hint = did_you_mean(unknown[0], known)
        raise UsageError(
            f"{field} {unknown[0]!r} is not a metric"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + f"; the metrics are {', '.join(known)}",
            field=field,
        )


def check_format(fmt: str, allowed: Sequence[str], field: str = "format") -> None:
    """``UsageError`` naming ``field`` when ``fmt`` is not one of ``allowed``."""
    if fmt not in allowed:
        raise UsageError(
            f"{field} {fmt!r} is not a format; give one of {', '.join(allowed)}", field=field
        )


def metrics_history(
    store: Store, names: Sequence[str], since: float, until: float
) -> MetricsHistory:
    """The samples of ``names`` (every name when empty) in ``[since, until]``;
    ``UsageError`` for an unknown name or ``since > until``."""
    if since > until:
        raise UsageError("from is after to; give a from at or before to", field="from")
    check_metric_names(store, names)
    return MetricsHistory(tuple(names), since, until, store.metric_samples(names, since, until))


def current_metrics(store: Store, now: float, interval: float) -> CurrentMetrics:
    """The newest sample of each series sampled within ``CURRENT_INTERVALS`` x
    ``interval`` (at least a minute) before ``now``."""
    since = now - max(60.0, CURRENT_INTERVALS * interval)
    hosts: dict[str, dict[str, float]] = {}
    gauges: dict[str, float] = {}
    newest: float | None = None
    tasks: list[MetricSample] = []
    for s in store.latest_samples(since):
        newest = s.at if newest is None else max(newest, s.at)
        if "task_id" in s.labels:
            if s.at >= now - 2 * max(interval, 1.0):  # still running at its last sample
                tasks.append(s)
        elif s.host:
            hosts.setdefault(s.host, {})[s.name] = s.value
        else:
            gauges[s.name] = s.value
    return CurrentMetrics(now, hosts, gauges, newest, tasks)


def export_text(samples: Sequence[MetricSample], fmt: str) -> str:
    """``samples`` as CSV or JSON (module docstring); ``UsageError`` naming ``format``
    for another format."""
    check_format(fmt, EXPORT_FORMATS)
    rows = [sample_json(s) for s in samples]
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "labels": json.dumps(row["labels"], sort_keys=True)})
    return out.getvalue()


def sample_json(s: MetricSample) -> dict[str, Any]:
    """One sample as the export and the API give it."""
    return {
        "name": s.name,
        "at": _iso(s.at),
        "timestamp": s.at,
        "host": s.host,
        "labels": dict(s.labels),
        "value": s.value,
    }


def pipeline_statistics(
    store: Store,
    pipeline: str | None,
    *,
    days: int,
    now: float,
    visible: Callable[[str], bool] | None = None,
) -> list[PipelineReliability]:
    """The statistics (``engine.reliability``) of ``pipeline``, or of every stored
    pipeline (``visible`` ones only, when given), over the runs created in the last
    ``days`` x 24 h. ``UsageError`` for days out of range or an unknown pipeline."""
    check_days(days)
    if pipeline is not None:
        check_pipeline(store, pipeline)
        names = [pipeline]
    else:
        names = [n for n in store.pipeline_names() if visible is None or visible(n)]
    since = now - days * 86400.0
    return [
        PipelineReliability(name, days, since, now, _reliability(store, name, since, now))
        for name in names
    ]


def quality_gates(
    store: Store, pipeline: str, *, days: int, now: float, thresholds: Thresholds
) -> GateReport:
    """Seed 002's gates on ``pipeline``'s last ``days`` x 24 h (``engine.reliability``);
    ``UsageError`` for days out of range or an unknown pipeline."""
    from stageflow.engine.reliability import evaluate_gates

    (report,) = pipeline_statistics(store, pipeline, days=days, now=now)
    return GateReport(pipeline, days, evaluate_gates(report.stats, thresholds, now))


def check_days(days: int, field: str = "days") -> None:
    """``UsageError`` naming ``field`` when ``days`` is not 1 to ``MAX_DAYS``."""
    if not 1 <= days <= MAX_DAYS:
        raise UsageError(f"{field} is {days}; give 1 to {MAX_DAYS}", field=field)


def check_pipeline(store: Store, pipeline: str, field: str = "pipeline") -> None:
    """``UsageError`` naming the closest stored pipeline when ``pipeline`` is not one."""
    names = store.pipeline_names()
    if pipeline in names:
        return
    from stageflow.spec.suggest import did_you_mean

    hint = did_you_mean(pipeline, names)
    raise UsageError(
        f"{field} '{pipeline}' is not in the store at {store.url}; "
        + (
            f"did you mean '{hint}'?"
            if hint
            else "`stageflow pipelines list` shows the stored pipelines"
        ),
        pipeline=pipeline,
        field=field,
    )


def _reliability(store: Store, pipeline: str, since: float, until: float) -> Reliability:
    from stageflow.engine.reliability import RunPoint, TaskFailure, reliability

    runs: list[RunRecord] = []
    before: tuple[float, str] | None = None
    while len(runs) < MAX_RUNS:
        page = store.query_runs(
            pipeline=pipeline, since=since, before=before, limit=min(10_000, MAX_RUNS - len(runs))
        )
        runs.extend(r for r in page if r.created_at <= until)
        if len(page) < 10_000 or not page:
            break
        before = (page[-1].created_at, page[-1].run_id)
    points = [RunPoint(r.run_id, r.state, r.created_at, r.started_at, r.ended_at) for r in runs]
    failures = [
        TaskFailure(row.task_id, row.error)
        for row in store.task_run_stats(pipeline, since)
        if row.state == "failed"
    ]
    return reliability(points, failures)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")
