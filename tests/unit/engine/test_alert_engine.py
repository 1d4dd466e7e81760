"""``engine.alerts``: conditions, seed 004's baseline, cooldown and auto-resolve
decisions, the lifecycle table, deadlines and the checks of a rule's terms. Pure: the
time is a number handed in."""

from __future__ import annotations

import itertools
import statistics
from datetime import UTC, datetime

import pytest

from stageflow.engine.alerts import (
    CONDITIONS,
    METRICS,
    TRANSITIONS,
    AlertState,
    Decision,
    RuleTerms,
    baseline_breached,
    condition_holds,
    deadline_at,
    deadline_problems,
    decide,
    failure_rate,
    late_by,
    metric_of,
    move,
    rule_problems,
    spec_problems,
    window_seconds,
)
from stageflow.errors import IllegalTransition
from stageflow.spec.models import Pipeline


@pytest.mark.parametrize(
    ("condition", "value", "threshold", "expected"),
    [
        pytest.param("greater_than", 5.0, 4.0, True, id="gt-above"),
        pytest.param("greater_than", 4.0, 4.0, False, id="gt-equal"),
        pytest.param("greater_than", 3.0, 4.0, False, id="gt-below"),
        pytest.param("less_than", 3.0, 4.0, True, id="lt-below"),
        pytest.param("less_than", 4.0, 4.0, False, id="lt-equal"),
        pytest.param("equals", 0.1 + 0.2, 0.3, True, id="eq-float-noise"),
        pytest.param("equals", 0.31, 0.3, False, id="eq-differs"),
        pytest.param("contains", "disk full on /data", "disk full", True, id="contains-yes"),
        pytest.param("contains", "all good", "disk full", False, id="contains-no"),
        pytest.param("contains", 1234.0, "23", True, id="contains-number-as-text"),
        pytest.param("equals", "ok", "ok", True, id="eq-text"),
        pytest.param("greater_than", "ok", 1.0, False, id="gt-text-never"),
        pytest.param("greater_than", None, 1.0, False, id="missing-never"),
        pytest.param("contains", None, "x", False, id="missing-contains-never"),
    ],
)
def test_condition_holds(
    condition: str, value: float | str | None, threshold: float | str, expected: bool
) -> None:
    assert condition_holds(condition, value, threshold) is expected


@pytest.mark.parametrize(
    ("value", "history", "k", "expected"),
    [
        # mean 10, sample stdev 2 (8, 10, 12): the line is 10 - k*2
        pytest.param(5.9, [8.0, 10.0, 12.0], 2.0, True, id="below-2-sigma"),
        pytest.param(6.0, [8.0, 10.0, 12.0], 2.0, False, id="on-the-line"),
        pytest.param(7.9, [8.0, 10.0, 12.0], 1.0, True, id="below-1-sigma"),
        pytest.param(8.0, [8.0, 10.0, 12.0], 1.0, False, id="at-1-sigma"),
        pytest.param(9.9, [8.0, 10.0, 12.0], 0.0, True, id="k0-below-mean"),
        pytest.param(9.0, [10.0, 10.0, 10.0], 3.0, True, id="no-spread-any-drop"),
        pytest.param(10.0, [10.0, 10.0, 10.0], 3.0, False, id="no-spread-same"),
        pytest.param(0.0, [10.0], 2.0, False, id="one-value-no-baseline"),
        pytest.param(0.0, [], 2.0, False, id="no-history"),
    ],
)
def test_baseline(value: float, history: list[float], k: float, expected: bool) -> None:
    assert baseline_breached(value, history, k) is expected
    assert condition_holds("below_baseline", value, None, history=history, k=k) is expected


def test_baseline_is_mean_minus_k_sample_sigma() -> None:
    history = [0.91, 0.93, 0.92, 0.95, 0.90]
    line = statistics.fmean(history) - 2.5 * statistics.stdev(history)
    assert baseline_breached(line - 1e-9, history, 2.5)
    assert not baseline_breached(line + 1e-9, history, 2.5)


@pytest.mark.parametrize(
    ("failed", "ended", "expected"),
    [
        pytest.param(0, 0, 0.0, id="none-ended"),
        pytest.param(1, 4, 0.25, id="quarter"),
        pytest.param(3, 3, 1.0, id="all"),
    ],
)
def test_failure_rate(failed: int, ended: int, expected: float) -> None:
    assert failure_rate(failed, ended) == expected


@pytest.mark.parametrize(
    ("holds", "active", "last", "now", "expected"),
    [
        pytest.param(True, False, None, 100.0, Decision.OPEN, id="first-time-opens"),
        pytest.param(True, True, 50.0, 100.0, Decision.NOTHING, id="open-never-twice"),
        pytest.param(True, False, 50.0, 100.0, Decision.NOTHING, id="within-cooldown"),
        pytest.param(True, False, 40.0, 100.0, Decision.OPEN, id="cooldown-just-over"),
        pytest.param(True, False, 0.0, 100.0, Decision.OPEN, id="cooldown-long-over"),
        pytest.param(False, True, 50.0, 100.0, Decision.RESOLVE, id="clears-auto-resolves"),
        pytest.param(False, False, 50.0, 100.0, Decision.NOTHING, id="clear-and-nothing-open"),
        pytest.param(False, False, None, 100.0, Decision.NOTHING, id="never-alerted"),
    ],
)
def test_decide(
    holds: bool, active: bool, last: float | None, now: float, expected: Decision
) -> None:
    assert decide(holds, active=active, last_opened_at=last, cooldown_seconds=60, now=now) is (
        expected
    )


def test_a_cooldown_of_zero_reopens_at_once() -> None:
    assert decide(True, active=False, last_opened_at=100.0, cooldown_seconds=0, now=100.0) is (
        Decision.OPEN
    )


def test_a_sequence_of_evaluations_with_a_fake_clock() -> None:
    """holds, holds, clears, holds (within cooldown), holds (after): open, -, resolve, -, open."""
    active, last, got = False, None, []
    for now, holds in [(0, True), (10, True), (20, False), (30, True), (70, True)]:
        d = decide(holds, active=active, last_opened_at=last, cooldown_seconds=60, now=now)
        got.append(d)
        if d is Decision.OPEN:
            active, last = True, float(now)
        elif d is Decision.RESOLVE:
            active = False
    assert got == [
        Decision.OPEN,
        Decision.NOTHING,
        Decision.RESOLVE,
        Decision.NOTHING,
        Decision.OPEN,
    ]


@pytest.mark.parametrize(
    ("state", "action"), list(itertools.product(AlertState, ["ack", "resolve", "open"]))
)
def test_every_state_and_action(state: AlertState, action: str) -> None:
    if (state, action) in TRANSITIONS:
        assert move(state, action) is TRANSITIONS[(state, action)]
    else:
        with pytest.raises(IllegalTransition, match=state.value):
            move(state, action)


def test_the_table_is_open_ack_resolve() -> None:
    assert move(move(AlertState.OPEN, "ack"), "resolve") is AlertState.RESOLVED
    assert move(AlertState.OPEN, "resolve") is AlertState.RESOLVED


def _t(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("started", "after", "at", "tz", "expected"),
    [
        pytest.param(
            "2026-03-01T10:00:00+00:00",
            90.0,
            None,
            "UTC",
            "2026-03-01T10:01:30+00:00",
            id="after-seconds",
        ),
        pytest.param(
            "2026-03-01T10:00:00+00:00",
            None,
            "11:30",
            "UTC",
            "2026-03-01T11:30:00+00:00",
            id="later-today",
        ),
        pytest.param(
            "2026-03-01T12:00:00+00:00",
            None,
            "11:30",
            "UTC",
            "2026-03-02T11:30:00+00:00",
            id="tomorrow",
        ),
        pytest.param(
            "2026-03-01T10:00:00+00:00",
            None,
            "11:30",
            "Europe/Paris",
            "2026-03-01T10:30:00+00:00",
            id="in-a-zone",
        ),
        pytest.param(
            "2026-03-01T10:00:00+00:00",
            None,
            "2026-03-01T09:00:00+01:00",
            "UTC",
            "2026-03-01T08:00:00+00:00",
            id="iso-instant",
        ),
        pytest.param(
            "2026-03-01T10:00:00+00:00",
            None,
            "2026-03-05T00:00:00Z",
            "UTC",
            "2026-03-05T00:00:00+00:00",
            id="iso-z",
        ),
    ],
)
def test_deadline_at(
    started: str, after: float | None, at: str | None, tz: str, expected: str
) -> None:
    assert deadline_at(_t(started), after_seconds=after, at=at, timezone=tz) == _t(expected)


def test_late_by() -> None:
    assert late_by(100.0, 99.0) is None
    assert late_by(100.0, 100.0) == 0.0
    assert late_by(100.0, 103.5) == 3.5


@pytest.mark.parametrize(
    ("after", "at", "tz", "field"),
    [
        pytest.param(None, None, "UTC", "deadline", id="neither"),
        pytest.param(5.0, "10:00", "UTC", "deadline", id="both"),
        pytest.param(0.0, None, "UTC", "deadline.after_seconds", id="zero"),
        pytest.param(-3.0, None, "UTC", "deadline.after_seconds", id="negative"),
        pytest.param(None, "24:00", "UTC", "deadline.at", id="bad-hour"),
        pytest.param(None, "soon", "UTC", "deadline.at", id="words"),
        pytest.param(None, "2026-03-01T09:00:00", "UTC", "deadline.at", id="instant-no-offset"),
        pytest.param(None, "10:00", "Mars/Olympus", "deadline.timezone", id="bad-zone"),
    ],
)
def test_deadline_problems(after: float | None, at: str | None, tz: str, field: str) -> None:
    found = deadline_problems(after, at, tz, "deadline")
    assert [f for f, _ in found] == [field]
    assert "deadline" in found[0][1]


def test_a_deadline_severity_is_checked() -> None:
    found = deadline_problems(5.0, None, "UTC", "deadline", "urgent")
    assert [f for f, _ in found] == ["deadline.severity"]


@pytest.mark.parametrize(
    ("after", "at", "tz"),
    [(60.0, None, "UTC"), (None, "09:05", "Europe/Paris"), (None, "2026-03-01T09:00:00Z", "UTC")],
)
def test_good_deadlines(after: float | None, at: str | None, tz: str) -> None:
    assert deadline_problems(after, at, tz, "deadline") == []


def test_every_metric_has_a_meaning_and_a_unit() -> None:
    for name, metric in METRICS.items():
        assert metric.name == name and metric.meaning and metric.unit
        assert metric.subject in ("pipeline", "task", "host")
    recorded = metric_of("task.evaluate.accuracy")
    assert recorded is not None and recorded.subject == "task"
    assert metric_of("accuracy") is None
    assert metric_of("task.evaluate") is None


GOOD = RuleTerms("runs.failure_rate", "greater_than", 0.5)


@pytest.mark.parametrize(
    ("terms", "field", "words"),
    [
        pytest.param(
            RuleTerms("cpu", "greater_than", 1.0), "metric", "host.cpu_percent", id="unknown-metric"
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "above", 1.0),
            "condition",
            "greater_than",
            id="bad-condition",
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "greater_than", "high"),
            "threshold",
            "needs a number",
            id="text-for-number",
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "greater_than", None),
            "threshold",
            "needs a number",
            id="no-threshold",
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "greater_than", True),
            "threshold",
            "needs a number",
            id="bool",
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "greater_than", float("nan")),
            "threshold",
            "finite",
            id="nan",
        ),
        pytest.param(
            RuleTerms("task.t.status", "contains", 3.0),
            "threshold",
            "needs a text",
            id="contains-number",
        ),
        pytest.param(
            RuleTerms("run.duration_seconds", "below_baseline", 3.0),
            "threshold",
            "takes no threshold",
            id="baseline-threshold",
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "greater_than", 1.0, severity="high"),
            "severity",
            "critical",
            id="severity",
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "greater_than", 1.0, cooldown_seconds=-1),
            "cooldown",
            "0 or more",
            id="negative-cooldown",
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "greater_than", 1.0, k=-1),
            "k",
            "0 or more",
            id="negative-k",
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "greater_than", 1.0, runs=1),
            "runs",
            "2 to 1000",
            id="runs-one",
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "greater_than", 1.0, runs=10**20),
            "runs",
            "2 to 1000",
            id="runs-huge",
        ),
        pytest.param(
            RuleTerms("host.cpu_percent", "greater_than", 1.0, window_seconds=float("nan")),
            "window",
            "10m",
            id="window",
        ),
    ],
)
def test_rule_problems(terms: RuleTerms, field: str, words: str) -> None:
    found = rule_problems(terms)
    assert [f for f, _ in found] == [field]
    assert words in found[0][1]


def test_a_good_rule_and_all_problems_at_once() -> None:
    assert rule_problems(GOOD) == []
    assert rule_problems(RuleTerms("run.duration_seconds", "below_baseline", None)) == []
    assert rule_problems(RuleTerms("task.t.log", "contains", "OOM")) == []
    bad = RuleTerms("nope", "above", None, severity="x", cooldown_seconds=-1)
    assert {f for f, _ in rule_problems(bad, "alerts[0]")} == {
        "alerts[0].metric",
        "alerts[0].condition",
        "alerts[0].severity",
        "alerts[0].cooldown",
    }
    assert set(CONDITIONS) >= {"greater_than", "less_than", "equals", "contains"}


@pytest.mark.parametrize(
    ("window", "seconds"), [(600, 600.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0)]
)
def test_window_seconds(window: float | str, seconds: float) -> None:
    assert window_seconds(window) == seconds


def test_a_window_that_does_not_parse_is_a_problem() -> None:
    assert window_seconds("soon") != window_seconds("soon")  # nan


def test_spec_problems_name_the_entry() -> None:
    pipeline = Pipeline.model_validate(
        {
            "name": "p",
            "deadline": {"at": "25:00"},
            "alerts": [
                {"id": "a", "metric": "runs.failures", "threshold": 3},
                {
                    "id": "a",
                    "metric": "task.x.acc",
                    "condition": "less_than",
                    "threshold": 1,
                    "task": "missing",
                },
            ],
            "tasks": [
                {
                    "id": "t",
                    "operator": "bash",
                    "parameters": {"command": "true"},
                    "deadline": {"after_seconds": -1},
                }
            ],
        }
    )
    fields = [f for f, _ in spec_problems(pipeline)]
    assert fields == [
        "deadline.at",
        "tasks[t].deadline.after_seconds",
        "alerts[1].task",
        "alerts[1].id",
    ]
    when = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    assert deadline_at(when, after_seconds=1.0, at=None) == when + 1
