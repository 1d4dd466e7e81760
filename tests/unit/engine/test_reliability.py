"""engine.reliability: success rate, percentiles, MTTR/MTBF, failures, quality gates.

Fixed inputs, no clock: every edge the docstring names (no failures, a failure never
recovered, one run, a streak of failures, cancelled and unfinished runs)."""

from __future__ import annotations

import pytest

from stageflow.engine.reliability import (
    Reliability,
    RunPoint,
    TaskFailure,
    Thresholds,
    error_type,
    evaluate_gates,
    nearest_rank,
    reliability,
)


def run(n: int, state: str, ended: float | None, started: float | None = None) -> RunPoint:
    """Run ``n`` created at ``ended - 20`` (or 0), started 5 s after creation."""
    created = (ended - 20.0) if ended is not None else 0.0
    return RunPoint(f"r{n}", state, created, created + 5.0 if started is None else started, ended)


@pytest.mark.parametrize(
    ("values", "percent", "expected"),
    [
        pytest.param([], 50, None, id="empty"),
        pytest.param([7.0], 99, 7.0, id="one"),
        pytest.param([4.0, 1.0, 3.0, 2.0], 50, 2.0, id="median-of-four-is-second"),
        pytest.param([4.0, 1.0, 3.0, 2.0], 95, 4.0, id="p95-of-four-is-largest"),
        pytest.param([float(v) for v in range(1, 101)], 95, 95.0, id="p95-of-100"),
        pytest.param([float(v) for v in range(1, 101)], 99, 99.0, id="p99-of-100"),
        pytest.param([5.0, 1.0], 0, 1.0, id="p0-is-smallest"),
    ],
)
def test_nearest_rank(values: list[float], percent: float, expected: float | None) -> None:
    assert nearest_rank(values, percent) == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param("ValueError: bad row 3\nTraceback ...", "ValueError", id="exception"),
        pytest.param("\n\n  KeyError: 'x'", "KeyError", id="blank-lines-first"),
        pytest.param(
            "sklearn.exceptions.NotFittedError: no",
            "sklearn.exceptions.NotFittedError",
            id="dotted",
        ),
        pytest.param("TimeoutError", "TimeoutError", id="bare-class"),
        pytest.param("command exited with code 3", "command exited with code 3", id="sentence"),
        pytest.param("x" * 300, "x" * 100, id="cut"),
        pytest.param(None, "unknown", id="none"),
        pytest.param("   \n", "unknown", id="blank"),
    ],
)
def test_error_type(error: str | None, expected: str) -> None:
    assert error_type(error) == expected


def test_no_runs_has_no_figures() -> None:
    stats = reliability([])

    assert stats.runs == 0
    assert stats.success_rate is None
    assert stats.duration_p50 is None and stats.queue_wait_p50 is None
    assert stats.mttr_seconds is None and stats.mtbf_seconds is None
    assert stats.open_incident_since is None
    assert stats.recoveries == 0 and stats.failures == 0


def test_one_successful_run() -> None:
    stats = reliability([RunPoint("r1", "success", 100.0, 103.0, 110.0)])

    assert stats.runs == 1
    assert stats.success_rate == 1.0
    assert (stats.duration_p50, stats.duration_p95, stats.duration_p99) == (7.0, 7.0, 7.0)
    assert (stats.queue_wait_p50, stats.queue_wait_p95) == (3.0, 3.0)
    assert stats.mttr_seconds is None and stats.mtbf_seconds is None


def test_one_failed_run_is_an_open_incident() -> None:
    stats = reliability([RunPoint("r1", "failed", 100.0, 101.0, 110.0)])

    assert stats.success_rate == 0.0
    assert stats.mttr_seconds is None  # never recovered: not averaged
    assert stats.recoveries == 0
    assert stats.open_incident_since == 110.0
    assert stats.mtbf_seconds is None  # one failure: no interval between two


def test_no_failures_no_mttr_no_mtbf() -> None:
    stats = reliability([run(i, "success", 100.0 * i) for i in range(1, 6)])

    assert stats.success_rate == 1.0
    assert stats.mttr_seconds is None and stats.mtbf_seconds is None
    assert stats.open_incident_since is None
    assert stats.failures == 0


def test_mttr_from_the_first_failure_of_a_streak_to_the_next_success() -> None:
    runs = [
        run(1, "success", 100.0),
        run(2, "failed", 200.0),
        run(3, "failed", 260.0),  # same incident: it does not restart the clock
        run(4, "success", 500.0),  # recovers: 500 - 200 = 300
        run(5, "failed", 1000.0),
        run(6, "success", 1100.0),  # recovers: 100
        run(7, "success", 1200.0),
    ]

    stats = reliability(runs)

    assert stats.recoveries == 2
    assert stats.mttr_seconds == pytest.approx(200.0)  # (300 + 100) / 2
    assert stats.open_incident_since is None
    # failures end at 200, 260, 1000: gaps 60 and 740
    assert stats.mtbf_seconds == pytest.approx(400.0)
    assert stats.failures == 3
    assert stats.success_rate == pytest.approx(4 / 7)


def test_a_failure_never_recovered_is_open_and_not_averaged() -> None:
    runs = [run(1, "failed", 100.0), run(2, "success", 160.0), run(3, "failed", 900.0)]

    stats = reliability(runs)

    assert stats.mttr_seconds == pytest.approx(60.0)
    assert stats.recoveries == 1
    assert stats.open_incident_since == 900.0


def test_order_of_input_does_not_matter_end_times_do() -> None:
    runs = [run(3, "success", 500.0), run(1, "failed", 100.0), run(2, "failed", 300.0)]

    assert reliability(runs).mttr_seconds == pytest.approx(400.0)


def test_cancelled_and_unfinished_runs_decide_nothing() -> None:
    runs = [
        run(1, "failed", 100.0),
        run(2, "cancelled", 150.0),  # not a recovery
        RunPoint("r3", "running", 160.0, 161.0, None),
        RunPoint("r4", "queued", 170.0, None, None),
        run(5, "success", 400.0),
    ]

    stats = reliability(runs)

    assert stats.runs == 5
    assert stats.runs_by_state == {
        "failed": 1,
        "cancelled": 1,
        "running": 1,
        "queued": 1,
        "success": 1,
    }
    assert stats.success_rate == 0.5
    assert stats.mttr_seconds == pytest.approx(300.0)
    # durations: runs that started and ended (failed, cancelled, success: 15 s each)
    assert stats.duration_p50 == 15.0
    # queue waits: every started run (4 of them: 5 s each except r3's 1 s)
    assert stats.queue_wait_p50 == 5.0
    assert stats.queue_wait_p95 == 5.0


def test_failures_by_task_and_error_type_elements_under_their_task() -> None:
    failures = [
        TaskFailure("train[0]", "ValueError: nan in column"),
        TaskFailure("train[3]", "ValueError: nan in column b"),
        TaskFailure("train", "MemoryError"),
        TaskFailure("load", "command exited with code 3"),
    ]

    stats = reliability([], failures)

    assert stats.failures_by_task == {"train": 3, "load": 1}
    assert stats.failures_by_error == {
        "ValueError": 2,
        "MemoryError": 1,
        "command exited with code 3": 1,
    }
    assert list(stats.failures_by_task) == ["train", "load"]  # most first


def stats_of(**changes: object) -> Reliability:
    base = reliability([run(1, "success", 100.0)])
    fields = {f: getattr(base, f) for f in Reliability.__dataclass_fields__}
    fields.update(changes)
    return Reliability(**fields)  # type: ignore[arg-type]  # built from its own fields


@pytest.mark.parametrize(
    ("changes", "now", "expected"),
    [
        pytest.param({}, 1000.0, (True, True, True), id="all-pass"),
        pytest.param({"success_rate": 0.95}, 1000.0, (False, True, True), id="95-is-not-above"),
        pytest.param({"success_rate": 0.951}, 1000.0, (True, True, True), id="just-above"),
        pytest.param({"success_rate": None}, 1000.0, (False, True, True), id="no-evidence"),
        pytest.param({"mttr_seconds": 1800.0}, 1000.0, (True, False, True), id="mttr-at-limit"),
        pytest.param({"mttr_seconds": 1799.0}, 1000.0, (True, True, True), id="mttr-below"),
        pytest.param({"open_incident_since": 0.0}, 1800.0, (True, False, True), id="open-too-long"),
        pytest.param({"open_incident_since": 0.0}, 1799.0, (True, True, True), id="open-young"),
        pytest.param({"duration_p95": 14400.0}, 1000.0, (True, True, False), id="p95-at-4h"),
        pytest.param({"duration_p95": None}, 1000.0, (True, True, True), id="no-duration"),
    ],
)
def test_gates(changes: dict[str, object], now: float, expected: tuple[bool, ...]) -> None:
    results = evaluate_gates(stats_of(**changes), Thresholds(), now)

    assert [g.gate for g in results] == ["reliability", "recovery", "execution_time"]
    assert tuple(g.passed for g in results) == expected
    assert [g.threshold for g in results] == [95.0, 1800.0, 14400.0]


def test_gate_figures_and_overridden_thresholds() -> None:
    stats = stats_of(success_rate=0.8, mttr_seconds=120.0, duration_p95=30.0)

    results = evaluate_gates(stats, Thresholds(75.0, 60.0, 20.0), now=1000.0)

    assert [(g.passed, g.figure) for g in results] == [
        (True, pytest.approx(80.0)),
        (False, 120.0),
        (False, 30.0),
    ]
    assert "MTTR 120.0s >= 60s" in results[1].reason
