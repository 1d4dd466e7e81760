"""Alert rules, the alert lifecycle and deadlines, as pure decisions.

Policy. A rule (seed 003's ``AlertRule``) watches one metric of ``METRICS`` (or a
metric a task records: ``task.<task id>.<name>``) for a subject: a pipeline, a task of
it, or the host. Each evaluation hands this module the metric's value now; the rule's
condition (``greater_than``, ``less_than``, ``equals``, ``contains`` a text, or seed
004's ``below_baseline``: value < mean - k*sigma of the last ``runs`` values) says
whether it holds. ``decide`` then says what to do with the subject's alert:

* the condition holds, no alert of the rule is open for the subject, and the last one
  opened at least ``cooldown`` seconds ago (or never): ``open`` one;
* the condition no longer holds and an alert is open or acknowledged: ``resolve`` it
  (by ``auto``);
* anything else: nothing (an open alert never opens a second one; a cleared condition
  within cooldown does not re-open).

Lifecycle: ``open`` -> ``acknowledged`` -> ``resolved`` (``TRANSITIONS``; ``open`` may go
straight to ``resolved``). A move outside the table is a bug of the caller
(``IllegalTransition``); the store applies each move as a compare-and-set on the state
it read, so of processes racing on one alert exactly one moves it.

Deadlines. ``deadline: {after_seconds: N}`` is due N seconds after the run (task)
started; ``deadline: {at: "HH:MM", timezone: Z}`` at the first such wall time at or
after the start; ``deadline: {at: ISO instant with an offset}`` at that instant.
``deadline_at`` computes it; ``late_by`` says how late a running run is. No clock,
no I/O: time is passed in.
"""

from __future__ import annotations

import enum
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from stageflow.engine.zones import zone_or_none
from stageflow.errors import IllegalTransition

if TYPE_CHECKING:
    from stageflow.spec.models import AlertRuleSpec, Pipeline

__all__ = [
    "CONDITIONS",
    "METRICS",
    "SEVERITIES",
    "TRANSITIONS",
    "AlertState",
    "Decision",
    "Metric",
    "RuleTerms",
    "baseline_breached",
    "condition_holds",
    "deadline_at",
    "deadline_problems",
    "decide",
    "failure_rate",
    "late_by",
    "metric_of",
    "move",
    "rule_problems",
    "spec_problems",
    "terms_of",
    "window_seconds",
]


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric a rule may watch: what it means, its unit, what its subject is."""

    name: str
    meaning: str
    unit: str
    subject: str  # "pipeline", "task" or "host"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "run.duration_seconds",
            "the longest running or just-ended (within the window) run of the pipeline",
            "seconds",
            "pipeline",
        ),
        Metric(
            "task.duration_seconds",
            "the longest running or just-ended (within the window) run of the task",
            "seconds",
            "task",
        ),
        Metric(
            "runs.failures",
            "failed runs of the pipeline ended within the window",
            "runs",
            "pipeline",
        ),
        Metric(
            "runs.failure_rate",
            "failed runs / ended runs of the pipeline within the window (0 with none)",
            "ratio 0..1",
            "pipeline",
        ),
        Metric(
            "queue.wait_seconds",
            "how long the oldest queued run of the pipeline (any, unscoped) has waited",
            "seconds",
            "pipeline",
        ),
        Metric("host.cpu_percent", "this host's CPU use at evaluation time", "percent", "host"),
        Metric(
            "host.memory_percent", "this host's memory use at evaluation time", "percent", "host"
        ),
        Metric(
            "task.cpu_seconds",
            "CPU seconds of the task's latest attempt within the window (usage records)",
            "seconds",
            "task",
        ),
        Metric(
            "task.peak_memory_mb",
            "peak resident memory of the task's latest attempt within the window",
            "MiB",
            "task",
        ),
        Metric(
            "validation.error_rate",
            "the error_rate a data_validation task recorded in its latest run",
            "ratio 0..1",
            "task",
        ),
        Metric(
            "drift.drifted_columns",
            "the columns a data_validation drift check found drifted in its latest run",
            "columns",
            "task",
        ),
    )
}

#: A metric a task records (``record(ctx, metrics=...)``, or an output ``{"metrics":
#: {...}}``): ``task.<task id>.<name>``, read from the task's latest ended run.
TASK_METRIC = re.compile(r"task\.([A-Za-z0-9][A-Za-z0-9_-]*)\.([A-Za-z_][\w.-]*)")

CONDITIONS = ("greater_than", "less_than", "equals", "contains", "below_baseline")
SEVERITIES = ("info", "warning", "critical")


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


#: (state, action) -> next state. Everything else is illegal.
TRANSITIONS: dict[tuple[AlertState, str], AlertState] = {
    (AlertState.OPEN, "ack"): AlertState.ACKNOWLEDGED,
    (AlertState.OPEN, "resolve"): AlertState.RESOLVED,
    (AlertState.ACKNOWLEDGED, "resolve"): AlertState.RESOLVED,
}


def move(state: AlertState, action: str) -> AlertState:
    """The state ``action`` (``ack``, ``resolve``) takes an alert to; ``IllegalTransition``
    when the table has no such move."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise IllegalTransition(f"an alert that is {state.value} cannot {action}") from None


def metric_of(name: str) -> Metric | None:
    """The metric ``name`` (a task-recorded one is made up on the spot); ``None``: unknown."""
    known = METRICS.get(name)
    if known is not None:
        return known
    found = TASK_METRIC.fullmatch(name)
    if found is None:
        return None
    return Metric(
        name, f"the metric '{found[2]}' task '{found[1]}' recorded", "as recorded", "task"
    )


@dataclass(frozen=True, slots=True)
class RuleTerms:
    """What ``rule_problems`` checks and ``condition_holds`` reads, from a spec or a form."""

    metric: str
    condition: str
    threshold: float | str | None
    severity: str = "warning"
    cooldown_seconds: float = 300.0
    k: float = 2.0
    runs: int = 10
    window_seconds: float = 3600.0


def rule_problems(terms: RuleTerms, where: str = "") -> list[tuple[str, str]]:
    """Every mistake in ``terms`` as (field, message naming the fix); empty when none."""
    p = f"{where}." if where else ""
    found: list[tuple[str, str]] = []
    if metric_of(terms.metric) is None:
        found.append(
            (
                f"{p}metric",
                f"{p}metric '{terms.metric}' is unknown; use one of "
                + ", ".join(sorted(METRICS))
                + ", or task.<task id>.<name> for a metric a task records",
            )
        )
    if terms.condition not in CONDITIONS:
        found.append(
            (
                f"{p}condition",
                f"{p}condition '{terms.condition}' is unknown; use one of {', '.join(CONDITIONS)}",
            )
        )
    elif terms.condition == "contains":
        if not isinstance(terms.threshold, str):
            found.append(
                (f"{p}threshold", f"{p}threshold: condition contains needs a text to look for")
            )
    elif terms.condition == "below_baseline":
        if terms.threshold is not None:
            found.append(
                (
                    f"{p}threshold",
                    f"{p}threshold: condition below_baseline takes no threshold; it compares "
                    "with the mean of the last `runs` values minus `k` standard deviations",
                )
            )
    elif isinstance(terms.threshold, bool) or not isinstance(terms.threshold, int | float):
        found.append(
            (
                f"{p}threshold",
                f"{p}threshold: condition {terms.condition} needs a number, not "
                f"{terms.threshold!r}",
            )
        )
    elif not math.isfinite(terms.threshold):
        found.append((f"{p}threshold", f"{p}threshold must be a finite number"))
    if terms.severity not in SEVERITIES:
        found.append(
            (
                f"{p}severity",
                f"{p}severity '{terms.severity}' is unknown; use one of {', '.join(SEVERITIES)}",
            )
        )
    if not math.isfinite(terms.cooldown_seconds) or terms.cooldown_seconds < 0:
        found.append(
            (f"{p}cooldown", f"{p}cooldown must be 0 or more seconds, not {terms.cooldown_seconds}")
        )
    if not math.isfinite(terms.k) or terms.k < 0:
        found.append((f"{p}k", f"{p}k must be 0 or more standard deviations, not {terms.k}"))
    if not 2 <= terms.runs <= 1000:
        found.append(
            (f"{p}runs", f"{p}runs must be 2 to 1000 (a baseline needs a spread), not {terms.runs}")
        )
    if not math.isfinite(terms.window_seconds) or terms.window_seconds <= 0:
        found.append((f"{p}window", f"{p}window must be more than 0 seconds (e.g. 10m)"))
    return found


def condition_holds(
    condition: str,
    value: float | str | None,
    threshold: float | str | None,
    *,
    history: Sequence[float] = (),
    k: float = 2.0,
) -> bool:
    """Whether ``value`` meets ``condition``; a missing value (``None``) never does."""
    if value is None:
        return False
    if condition == "contains":
        return str(threshold) in str(value)
    if isinstance(value, str):
        return condition == "equals" and value == str(threshold)
    if condition == "below_baseline":
        return baseline_breached(value, history, k)
    if isinstance(threshold, str) or threshold is None:
        return False
    if condition == "greater_than":
        return value > threshold
    if condition == "less_than":
        return value < threshold
    if condition == "equals":
        return math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)
    raise ValueError(f"unknown condition {condition!r}")


def baseline_breached(value: float, history: Sequence[float], k: float) -> bool:
    """Seed 004: ``value < mean(history) - k * stdev(history)`` (sample standard deviation).
    Fewer than two past values is no baseline: never breached."""
    if len(history) < 2:
        return False
    mean = statistics.fmean(history)
    sigma = statistics.stdev(history)
    return value < mean - k * sigma


def failure_rate(failed: int, ended: int) -> float:
    """Failed runs over ended runs; 0 when none ended (nothing to judge)."""
    return failed / ended if ended else 0.0


class Decision(enum.StrEnum):
    NOTHING = "nothing"
    OPEN = "open"
    RESOLVE = "resolve"


def decide(
    holds: bool,
    *,
    active: bool,
    last_opened_at: float | None,
    cooldown_seconds: float,
    now: float,
) -> Decision:
    """What to do with a rule's alert for one subject (module docstring): ``active``
    is whether an open or acknowledged one exists; ``last_opened_at`` when the last one
    (any state) opened."""
    if holds:
        if active:
            return Decision.NOTHING
        if last_opened_at is not None and now - last_opened_at < cooldown_seconds:
            return Decision.NOTHING
        return Decision.OPEN
    return Decision.RESOLVE if active else Decision.NOTHING


def deadline_problems(
    after_seconds: float | None,
    at: str | None,
    timezone: str,
    where: str,
    severity: str = "warning",
) -> list[tuple[str, str]]:
    """The mistakes of a ``deadline:`` as (field, message naming the fix)."""
    if severity not in SEVERITIES:
        return [
            (
                f"{where}.severity",
                f"{where}.severity '{severity}' is unknown; use one of {', '.join(SEVERITIES)}",
            )
        ]
    if (after_seconds is None) == (at is None):
        return [
            (
                where,
                f"{where}: give exactly one of after_seconds (e.g. 3600) or at "
                '("HH:MM" with a timezone, or an ISO instant with an offset)',
            )
        ]
    if after_seconds is not None:
        if not math.isfinite(after_seconds) or after_seconds <= 0:
            return [(f"{where}.after_seconds", f"{where}.after_seconds must be more than 0")]
        return []
    try:
        _zone(timezone)
    except ValueError:
        return [
            (
                f"{where}.timezone",
                f"{where}.timezone '{timezone}' is unknown; use an IANA name such as "
                "Europe/Paris or UTC",
            )
        ]
    assert at is not None
    if _wall_time(at) is None and _instant(at) is None:
        return [
            (
                f"{where}.at",
                f"{where}.at '{at}' is neither a time of day \"HH:MM\" nor an ISO instant with an "
                'offset ("2026-03-01T09:00:00+01:00" or ...Z)',
            )
        ]
    return []


def deadline_at(
    started_at: float, *, after_seconds: float | None, at: str | None, timezone: str = "UTC"
) -> float:
    """When a deadline armed at ``started_at`` is due (module docstring); the terms are
    the checked ones (``deadline_problems``), else ``ValueError``."""
    if after_seconds is not None:
        return started_at + after_seconds
    if at is None:
        raise ValueError("a deadline needs after_seconds or at")
    wall = _wall_time(at)
    if wall is None:
        instant = _instant(at)
        if instant is None:
            raise ValueError(f"bad deadline time {at!r}")
        return instant
    zone = _zone(timezone)
    start = datetime.fromtimestamp(started_at, zone)
    due = start.replace(hour=wall[0], minute=wall[1], second=0, microsecond=0)
    if due.timestamp() < started_at:
        due = (start + timedelta(days=1)).replace(
            hour=wall[0], minute=wall[1], second=0, microsecond=0
        )
    return due.timestamp()


def late_by(due: float, now: float) -> float | None:
    """Seconds past ``due`` at ``now``; ``None`` while it is not due yet."""
    return now - due if now >= due else None


def spec_problems(pipeline: Pipeline) -> list[tuple[str, str]]:
    """Every mistake of a pipeline's ``alerts:`` and ``deadline:`` entries (its own and
    each task's): (field path, message)."""
    found: list[tuple[str, str]] = []
    if pipeline.deadline is not None:
        d = pipeline.deadline
        found += deadline_problems(d.after_seconds, d.at, d.timezone, "deadline", d.severity)
    for task in pipeline.tasks:
        if task.deadline is not None:
            d = task.deadline
            found += deadline_problems(
                d.after_seconds, d.at, d.timezone, f"tasks[{task.id}].deadline", d.severity
            )
    ids = {t.id for t in pipeline.tasks}
    seen: set[str] = set()
    for k, rule in enumerate(pipeline.alerts):
        where = f"alerts[{k}]"
        found += rule_problems(terms_of(rule), where)
        if rule.task is not None and rule.task not in ids:
            found.append(
                (f"{where}.task", f"{where}.task '{rule.task}' is not a task of this pipeline")
            )
        if rule.id in seen:
            found.append((f"{where}.id", f"{where}.id '{rule.id}' is used twice; rename one"))
        seen.add(rule.id)
    return found


def terms_of(rule: AlertRuleSpec) -> RuleTerms:
    """A spec's rule as ``RuleTerms``; a window that does not parse is ``nan`` (a problem)."""
    return RuleTerms(
        metric=rule.metric,
        condition=rule.condition,
        threshold=rule.threshold,
        severity=rule.severity,
        cooldown_seconds=float(rule.cooldown),
        k=float(rule.k),
        runs=rule.runs,
        window_seconds=window_seconds(rule.window),
    )


def window_seconds(window: float | str) -> float:
    """``window`` (seconds, or ``90s``/``10m``/``2h``/``1d``) in seconds; ``nan`` when it
    does not parse (``rule_problems`` names it)."""
    from stageflow.errors import UsageError
    from stageflow.spec.times import parse_duration

    try:
        return parse_duration(window, "window")
    except UsageError:
        return math.nan


_HHMM = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def _wall_time(text: str) -> tuple[int, int] | None:
    found = _HHMM.fullmatch(text.strip())
    return None if found is None else (int(found[1]), int(found[2]))


def _instant(text: str) -> float | None:
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    if moment.tzinfo is None:  # an instant must say its offset: refuse a guess
        return None
    return moment.timestamp()


def _zone(name: str) -> tzinfo:
    zone = zone_or_none(name)
    if zone is None:
        raise ValueError(f"unknown time zone {name!r}")
    return zone
