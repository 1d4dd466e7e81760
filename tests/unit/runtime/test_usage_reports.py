"""runtime.usage on hand-built records: cost, the measured critical path, usage per
task, efficiency and right-sizing, the text reports and the Gantt chart."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from stageflow.errors import UsageError
from stageflow.runtime.settings import load_settings
from stageflow.runtime.store import AttemptRecord, RunRecord, TaskRunRecord
from stageflow.runtime.usage import (
    CostRow,
    PathStep,
    RunReport,
    TaskUsage,
    attempt_cost,
    attempt_hours,
    base_task_id,
    cost_by_pipeline_day,
    efficiency,
    format_gb,
    measured_critical_path,
    parse_request,
    run_cost,
    suggest_memory_gb,
    task_usage,
)
from stageflow.service.gantt import gantt
from stageflow.service.tables import render_cost, render_run_report

PRICES = {"cpu_hour": 0.05, "memory_gb_hour": 0.01, "gpu_hour": 2.5}


def req(**amounts: float) -> str:
    return json.dumps(amounts)


def att(
    task: str,
    attempt: int = 1,
    state: str = "success",
    started: float | None = None,
    ended: float | None = None,
    *,
    run_id: str = "r1",
    queued: float | None = None,
    request: str | None = None,
    cpu: float | None = None,
    peak: float | None = None,
    gpu_s: float | None = None,
    devices: str | None = None,
) -> AttemptRecord:
    return AttemptRecord(
        run_id,
        task,
        attempt,
        state,
        started,
        ended,
        None,
        queued_at=queued,
        request_json=request,
        gpu_devices=devices,
        cpu_seconds=cpu,
        peak_rss_mb=peak,
        gpu_seconds=gpu_s,
    )


def tr(
    task: str, state: str = "success", attempts: int = 1, ended: float | None = None
) -> TaskRunRecord:
    return TaskRunRecord("r1", task, state, attempts, None, ended)


def run_record(run_id: str = "r1", *, pipeline: str = "churn", created: float = 0.0) -> RunRecord:
    return RunRecord(run_id, pipeline, "v1", "success", {}, created, created, created + 100)


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- requests, hours, cost -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ("", {}),
        ("not json", {}),
        ("[1, 2]", {}),
        ("3", {}),
        ('{"cpu": 2, "memory_gb": 0.5, "gpu": 0}', {"cpu": 2.0, "memory_gb": 0.5, "gpu": 0.0}),
        ('{"cpu": true, "pool": "training", "disk_gb": 10, "x": null}', {"disk_gb": 10.0}),
        ('{"cpu": NaN, "memory_gb": Infinity, "gpu": 1}', {"gpu": 1.0}),
    ],
)
def test_parse_request(text: str | None, expected: dict[str, float]) -> None:
    assert parse_request(text) == expected


@pytest.mark.parametrize(
    ("task_id", "base"),
    [("train", "train"), ("train[3]", "train"), ("fan[0][12]", "fan"), ("a.b-c[1]", "a.b-c")],
)
def test_base_task_id(task_id: str, base: str) -> None:
    assert base_task_id(task_id) == base


def test_attempt_hours_needs_both_times_and_is_never_negative() -> None:
    assert attempt_hours(att("a", started=0.0, ended=1800.0)) == 0.5
    assert attempt_hours(att("a", started=0.0)) == 0.0
    assert attempt_hours(att("a", ended=10.0)) == 0.0
    assert attempt_hours(att("a", started=10.0, ended=5.0)) == 0.0


def test_attempt_cost_is_request_times_hours_times_price() -> None:
    a = att("a", started=100.0, ended=1900.0, request=req(cpu=2, memory_gb=4, gpu=1))
    # 0.5 h x (2 x 0.05 + 4 x 0.01 + 1 x 2.5) = 0.5 x 2.64
    assert attempt_cost(a, PRICES) == pytest.approx(1.32)
    assert attempt_cost(a, {"cpu_hour": 0.05}) == pytest.approx(0.05)
    assert attempt_cost(a, {}) == 0.0


def test_a_task_that_declared_nothing_or_did_not_finish_costs_nothing() -> None:
    assert attempt_cost(att("a", started=0.0, ended=3600.0), PRICES) == 0.0
    assert attempt_cost(att("a", started=0.0, request=req(cpu=8)), PRICES) == 0.0
    assert attempt_cost(att("a", request=req(cpu=8)), PRICES) == 0.0


def test_run_cost_sums_every_attempt_including_failed_ones() -> None:
    attempts = [
        att("a", 1, "failed", 0.0, 3600.0, request=req(cpu=1)),
        att("a", 2, "success", 3600.0, 7200.0, request=req(cpu=1)),
        att("b", 1, "success", 0.0, 1800.0, request=req(gpu=2)),
        att("c", 1, "success", 0.0, 7200.0),
    ]
    assert run_cost(attempts, PRICES) == pytest.approx(0.05 + 0.05 + 2.5)
    assert run_cost([], PRICES) == 0.0


def test_cost_by_pipeline_day_groups_by_the_utc_day_of_the_run() -> None:
    late = utc("2024-05-01T23:59:59")
    early = utc("2024-05-02T00:00:00")
    cpu2 = req(cpu=2, memory_gb=4)
    runs = [
        (run_record("r1", created=late), [att("a", started=0.0, ended=3600.0, request=cpu2)]),
        (
            run_record("r2", created=early),
            [
                att("a", run_id="r2", started=0.0, ended=1800.0, request=cpu2),
                att("b", run_id="r2", started=0.0, ended=1800.0),  # declared nothing
            ],
        ),
        (run_record("r3", created=early + 60), []),  # all cached: a run that cost nothing
        (
            run_record("o1", pipeline="other", created=late - 60),
            [att("g", run_id="o1", started=0.0, ended=360.0, request=req(gpu=1))],
        ),
    ]
    rows = cost_by_pipeline_day(runs, PRICES)
    assert rows == [
        CostRow("churn", "2024-05-01", 1, 1.0, 2.0, 4.0, 0.0, pytest.approx(0.14)),  # type: ignore[arg-type]
        CostRow("other", "2024-05-01", 1, 0.1, 0.0, 0.0, 0.1, pytest.approx(0.25)),  # type: ignore[arg-type]
        CostRow("churn", "2024-05-02", 2, 1.0, 1.0, 2.0, 0.0, pytest.approx(0.07)),  # type: ignore[arg-type]
    ]
    unpriced = cost_by_pipeline_day(runs, {})
    assert [r.cost for r in unpriced] == [0.0, 0.0, 0.0]
    assert [r.task_hours for r in unpriced] == [r.task_hours for r in rows]
    assert rows[0].as_json() == {
        "pipeline": "churn",
        "day": "2024-05-01",
        "runs": 1,
        "task_hours": 1.0,
        "cpu_hours": 2.0,
        "memory_gb_hours": 4.0,
        "gpu_hours": 0.0,
        "cost": 0.14,
    }
    assert cost_by_pipeline_day([], PRICES) == []


# -- the measured critical path ------------------------------------------------------------

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def diamond_attempts() -> list[AttemptRecord]:
    return [
        att("a", started=1.0, ended=2.0, queued=0.0),
        att("b", started=2.5, ended=5.0, queued=2.0),
        att("c", 1, "failed", 2.0, 3.0, queued=2.0),
        att("c", 2, "success", 6.0, 9.0, queued=4.0),
        att("d", started=9.5, ended=10.0, queued=9.0),
    ]


def test_the_path_walks_back_through_the_upstream_that_ended_last() -> None:
    runs = [tr("a"), tr("b"), tr("c", attempts=2), tr("d")]
    path = measured_critical_path(DIAMOND, runs, diamond_attempts())
    assert path == [
        PathStep("a", "success", 1, 2.0, 0.0, 1.0, 1.0, 1.0),
        PathStep("c", "success", 2, 9.0, 4.0, 6.0, 2.0, 3.0),  # the last attempt's times
        PathStep("d", "success", 1, 10.0, 9.0, 9.5, 0.5, 0.5),
    ]
    assert path[1].as_json(zero=0.0) == {
        "task_id": "c",
        "state": "success",
        "attempts": 2,
        "wait_s": 2.0,
        "run_s": 3.0,
        "ended_s": 9.0,
    }


def test_the_task_run_end_wins_over_the_attempts() -> None:
    # b's task run ended later than its attempt (e.g. a fallback after it): b decides.
    runs = [tr("a"), tr("b", ended=9.5), tr("c"), tr("d")]
    path = measured_critical_path(DIAMOND, runs, diamond_attempts())
    assert [s.task_id for s in path] == ["a", "b", "d"]
    assert path[1].ended_at == 9.5


def test_ties_go_to_the_first_upstream_and_to_the_last_created_end() -> None:
    attempts = [
        att("a", started=0.0, ended=1.0),
        att("b", started=1.0, ended=4.0),
        att("c", started=1.0, ended=4.0),
        att("d", started=4.0, ended=6.0),
        att("e", started=1.0, ended=6.0),  # ends with d; created after it
    ]
    up = {**DIAMOND, "e": ["a"]}
    runs = [tr(t) for t in ("a", "b", "c", "d", "e")]
    assert [s.task_id for s in measured_critical_path(up, runs, attempts)] == ["a", "e"]
    runs = [tr(t) for t in ("a", "b", "c", "e", "d")]
    assert [s.task_id for s in measured_critical_path(up, runs, attempts)] == ["a", "b", "d"]


def test_tasks_that_never_ended_are_not_on_the_path() -> None:
    attempts = [att("a", started=0.0, ended=1.0), att("b", "running", started=1.0)]
    runs = [tr("a"), tr("b", "running")]
    path = measured_critical_path({"a": [], "b": ["a"]}, runs, attempts)
    assert [s.task_id for s in path] == ["a"]
    assert measured_critical_path({"a": []}, [tr("a", "pending", 0)], []) == []
    assert measured_critical_path({}, [], []) == []


def test_a_cached_task_has_no_attempt_times() -> None:
    runs = [tr("a", attempts=0, ended=1.0), tr("b")]
    attempts = [att("b", started=1.5, ended=3.0, queued=1.0)]
    path = measured_critical_path({"a": [], "b": ["a"]}, runs, attempts)
    assert path[0] == PathStep("a", "success", 0, 1.0)
    assert path[0].as_json(zero=None)["ended_s"] is None
    assert path[1].wait_s == 0.5


def test_a_mapped_task_is_decided_by_its_last_element() -> None:
    up = {"a": [], "x": ["a"], "d": ["x"]}
    runs = [tr("a"), tr("x", ended=8.0), tr("d"), tr("x[0]"), tr("x[1]")]
    attempts = [
        att("a", started=0.0, ended=1.0),
        att("x", started=1.0, ended=8.0),
        att("x[0]", started=1.0, ended=3.0),
        att("x[1]", started=1.0, ended=8.0),
        att("d", started=8.0, ended=9.0),
    ]
    path = measured_critical_path(up, runs, attempts)
    assert [s.task_id for s in path] == ["a", "x[1]", "x", "d"]
    # Starting at an element (no downstream): element -> its task's upstream.
    path = measured_critical_path(up, runs[:2] + runs[3:], attempts[:4])
    assert [s.task_id for s in path] == ["a", "x[1]"]


def test_without_a_graph_the_path_is_the_task_that_ended_last() -> None:
    path = measured_critical_path({}, [tr("a"), tr("b")], diamond_attempts()[:2])
    assert [s.task_id for s in path] == ["b"]


def test_attempts_of_tasks_without_a_task_run_still_count() -> None:
    path = measured_critical_path({"a": [], "b": ["a"]}, [], diamond_attempts()[:2])
    assert [(s.task_id, s.state) for s in path] == [("a", "success"), ("b", "success")]


# -- usage of one run -------------------------------------------------------------------------


def test_task_usage_sums_and_maxes_over_attempts() -> None:
    attempts = [
        att("a", 1, "failed", 0.0, 10.0, request=req(cpu=1), cpu=4.0, peak=100.0),
        att(
            "a",
            2,
            "success",
            20.0,
            50.0,
            request=req(cpu=2, gpu=1),
            cpu=30.0,
            peak=80.0,
            gpu_s=30.0,
            devices="1",
        ),
        att("b", 1, "success", 0.0, 5.0),
    ]
    a, b = task_usage(attempts, PRICES)
    assert a == TaskUsage(
        "a",
        2,
        40.0,
        34.0,
        100.0,
        30.0,
        "1",
        {"cpu": 2.0, "gpu": 1.0},
        pytest.approx((10 * 0.05 + 30 * (2 * 0.05 + 2.5)) / 3600),  # type: ignore[arg-type]
    )
    assert b == TaskUsage("b", 1, 5.0, None, None, None, None, {}, 0.0)
    assert task_usage(attempts)[0].cost is None
    assert task_usage([]) == []


# -- efficiency and right-sizing ------------------------------------------------------------


def history(
    task: str, runs: int, *, memory_gb: float | None, peak_mb: float | None, cpu: float = 1
) -> list[tuple[RunRecord, list[AttemptRecord]]]:
    """``runs`` runs newest first, each one 100 s attempt of ``task``."""
    request = req(cpu=cpu, memory_gb=memory_gb) if memory_gb is not None else None
    out = []
    for i in range(runs):
        run_id = f"r{runs - i}"
        out.append(
            (
                run_record(run_id),
                [
                    att(
                        task,
                        run_id=run_id,
                        started=0.0,
                        ended=100.0,
                        request=request,
                        peak=peak_mb,
                        cpu=50.0 if peak_mb is not None else None,
                    )
                ],
            )
        )
    return out


def test_an_oversized_memory_request_gets_a_smaller_figure() -> None:
    (e,) = efficiency(history("train_rf", 10, memory_gb=8, peak_mb=1.2 * 1024))
    assert e.recommendation == (
        "train_rf asked 8 GB, peaked at 1.2 GB over its last 10 runs; 2 GB would do"
    )
    assert (e.runs, e.requested_memory_gb, e.peak_rss_mb, e.requested_cpu) == (10, 8.0, 1228.8, 1.0)
    assert e.cores_used == pytest.approx(0.5)
    assert e.as_json()["recommendation"] == e.recommendation


def test_a_peak_near_or_over_the_request_asks_for_more() -> None:
    (e,) = efficiency(history("train", 3, memory_gb=2, peak_mb=1.9 * 1024))
    assert e.recommendation == (
        "train asked 2 GB, peaked at 1.9 GB (95% of it) over its last 3 runs; raise it to 3 GB"
    )
    (e,) = efficiency(history("train", 1, memory_gb=1, peak_mb=1.5 * 1024))
    assert e.recommendation == (
        "train asked 1 GB, peaked at 1.5 GB (150% of it) over its last run; raise it to 2.5 GB"
    )


@pytest.mark.parametrize(
    ("memory_gb", "peak_mb"),
    [
        (4, 2.5 * 1024),  # 62%: fine
        (2, 1024),  # exactly half: not over 2x
        (2, 0.9 * 2 * 1024),  # exactly 90%: not over it
        (0.25, 0.1 * 1024),  # 2.5x, but 0.5 GB (the smallest step) is no smaller
        (None, 6 * 1024),  # asked nothing
        (0, 6 * 1024),  # asked 0
        (4, None),  # never measured
    ],
)
def test_no_recommendation_when_the_request_fits(
    memory_gb: float | None, peak_mb: float | None
) -> None:
    found = efficiency(history("t", 2, memory_gb=memory_gb, peak_mb=peak_mb))
    assert [e.recommendation for e in found] == [None] * len(found)


def test_the_newest_request_and_the_largest_peak_count() -> None:
    newest_first = [
        (
            run_record("r3"),
            [
                att(
                    "t",
                    run_id="r3",
                    started=0.0,
                    ended=10.0,
                    request=req(memory_gb=16),
                    peak=500.0,
                    cpu=5.0,
                )
            ],
        ),
        (
            run_record("r2"),
            [
                att(
                    "t",
                    run_id="r2",
                    started=0.0,
                    ended=10.0,
                    request=req(memory_gb=1),
                    peak=3000.0,
                    cpu=15.0,
                )
            ],
        ),
        (run_record("r1"), [att("t", run_id="r1", request=req(memory_gb=1))]),  # unmeasured
    ]
    (e,) = efficiency(newest_first)
    assert (e.requested_memory_gb, e.peak_rss_mb, e.runs) == (16.0, 3000.0, 2)
    assert e.cores_used == pytest.approx(1.0)
    assert e.recommendation == (
        "t asked 16 GB, peaked at 2.93 GB over its last 2 runs; 4.5 GB would do"
    )


def test_elements_of_a_mapped_task_count_as_the_task() -> None:
    rows = [
        att("fit[0]", started=0.0, ended=10.0, request=req(memory_gb=8), peak=512.0),
        att("fit[1]", started=0.0, ended=10.0, request=req(memory_gb=8), peak=1024.0),
        att("plain", started=0.0, ended=1.0),  # nothing declared, nothing measured
    ]
    (e,) = efficiency([(run_record(), rows)])
    assert (e.task_id, e.peak_rss_mb, e.runs) == ("fit", 1024.0, 1)
    assert e.recommendation == "fit asked 8 GB, peaked at 1 GB over its last run; 1.5 GB would do"


@pytest.mark.parametrize(
    ("peak_gb", "suggested"),
    [(0.01, 0.5), (1 / 3, 0.5), (0.34, 1.0), (1.0, 1.5), (1.2, 2.0), (2.0, 3.0), (5.5, 8.5)],
)
def test_suggest_memory_gb_is_one_and_a_half_peaks_rounded_up_to_half_a_gb(
    peak_gb: float, suggested: float
) -> None:
    assert suggest_memory_gb(peak_gb) == suggested


@pytest.mark.parametrize(
    ("gb", "text"),
    [(8.0, "8 GB"), (1.2, "1.2 GB"), (0.25, "0.25 GB"), (12.34, "12.3 GB"), (0.05, "51 MiB")],
)
def test_format_gb(gb: float, text: str) -> None:
    assert format_gb(gb) == text


# -- text reports ----------------------------------------------------------------------------


def test_render_run_report_has_every_section() -> None:
    run = run_record()
    attempts = [
        att(
            "a",
            started=1.0,
            ended=2.0,
            queued=0.5,
            request=req(cpu=2, memory_gb=8),
            cpu=1.5,
            peak=1228.8,
        ),
        att("b", started=2.0, ended=5.0, queued=2.0, request=req(gpu=1), gpu_s=3.0, devices="0"),
    ]
    report = RunReport(
        run=run,
        zero=0.0,
        path=measured_critical_path({"a": [], "b": ["a"]}, [], attempts),
        usage=task_usage(attempts, PRICES),
        cost=run_cost(attempts, PRICES),
        prices=PRICES,
        history=efficiency([(run, attempts)]),
        history_runs=1,
    )
    lines = render_run_report(report)
    text = "\n".join(lines)
    assert lines[0] == "measured critical path (the chain that decided the run's end at +5.00s):"
    assert lines[2].split() == ["a", "1", "0.50s", "1.00s", "+2.00s"]
    assert lines[3].split() == ["b", "1", "0.00s", "3.00s", "+5.00s"]
    usage = lines.index("usage per task:")
    assert lines[usage + 1].split() == [
        "task",
        "cpu",
        "s",
        "peak",
        "MiB",
        "gpu",
        "s",
        "cost",
        "requested",
    ]
    row_a, row_b = lines[usage + 2], lines[usage + 3]
    cost_a = (1 / 3600) * (2 * 0.05 + 8 * 0.01)  # 1 s of cpu 2 and 8 GB: too small for .4f
    assert row_a.split()[:5] == ["a", "1.50", "1228.8", "-", f"{cost_a:.1e}"]
    assert f"{cost_a:.1e}" == "5.0e-05"
    assert row_a.endswith("cpu 2, memory 8 GB")
    assert row_b.split()[:5] == ["b", "-", "-", "3.00", f"{3 / 3600 * 2.5:.4f}"]
    assert row_b.endswith("gpu 1, devices 0")
    assert f"cost: {report.cost:.4f} (cpu_hour=0.05, memory_gb_hour=0.01, gpu_hour=2.5)" in lines
    assert "right-sizing (from the last run of 'churn'):" in lines
    assert "  a asked 8 GB, peaked at 1.2 GB over its last run; 2 GB would do" in lines
    assert json.loads(json.dumps(report.as_json()))["cost"] == round(report.cost or 0, 6)
    assert "b asked" not in text


def test_render_run_report_leaves_out_empty_sections() -> None:
    report = RunReport(
        run_record(), None, [], task_usage([att("a", started=0.0, ended=1.0)]), None, {}, [], 0
    )
    assert render_run_report(report) == []


def test_render_cost_with_and_without_prices() -> None:
    rows = [
        CostRow("churn", "2024-05-01", 2, 1.5, 3.0, 6.0, 0.0, 0.21),
        CostRow("longer-name", "2024-05-02", 1, 0.25, 0.0, 0.0, 0.25, 0.625),
    ]
    lines = render_cost(rows, PRICES)
    assert lines[0].split() == ["pipeline", "day", "runs", "task-hours", "cost"]
    assert lines[1].split() == ["churn", "2024-05-01", "2", "1.5000", "0.2100"]
    assert lines[2].split() == ["longer-name", "2024-05-02", "1", "0.2500", "0.6250"]
    assert lines[3].split() == ["total", "3", "1.7500", "0.8350"]
    unpriced = render_cost(rows, {})
    assert unpriced[0].split() == ["pipeline", "day", "runs", "task-hours"]
    assert unpriced[3].split() == ["total", "3", "1.7500"]


# -- Gantt --------------------------------------------------------------------------------------


def gantt_attempts() -> list[AttemptRecord]:
    return [
        att("extract", started=101.0, ended=103.0, queued=100.0),
        att("train", 1, "failed", 103.5, 105.0, queued=103.0),
        att("train", 2, "success", 107.0, 110.0, queued=106.0),
        att("report", 1, "running", 110.5, None, queued=110.0),
        att("never", 1, "cancelled"),  # never queued nor started: not drawn
    ]


def test_gantt_svg_has_a_bar_per_attempt_and_a_lighter_queued_segment() -> None:
    run = RunRecord("r1", "churn", "v1", "running", {}, 100.0, 100.0)
    svg = gantt(run, ["extract", "train", "report", "never"], gantt_attempts(), "svg")
    assert isinstance(svg, str)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    tips = [t.text or "" for t in root.iter(f"{ns}title")]
    bars = [t for t in tips if ", ran " in t]
    waits = [t for t in tips if ", queued " in t]
    assert bars == [
        "extract attempt 1: success, ran 2.00s",
        "train attempt 1: failed, ran 1.50s",
        "train attempt 2: success, ran 3.00s",
        "report attempt 1: running, ran 0.00s",
    ]
    assert waits == [
        "extract attempt 1: success, queued 1.00s",
        "train attempt 1: failed, queued 0.50s",
        "train attempt 2: success, queued 1.00s",
        "report attempt 1: running, queued 0.50s",
    ]
    labels = [t.text for t in root.iter(f"{ns}text")]
    assert {"extract", "train", "report", "success", "failed", "running"} <= set(labels)
    assert "never" not in labels
    assert "0s" in labels


def test_gantt_bars_are_placed_by_time_and_coloured_by_state() -> None:
    from stageflow.graph.drawing import STATE_COLOURS

    run = RunRecord("r1", "churn", "v1", "success", {}, 0.0, 0.0, 10.0)
    attempts = [
        att("a", started=0.0, ended=5.0, queued=0.0),
        att("b", 1, "failed", 5.0, 10.0, queued=2.5),
    ]
    root = ET.fromstring(gantt(run, ["a", "b"], attempts, "svg"))
    ns = "{http://www.w3.org/2000/svg}"
    rects = {
        (r.find(f"{ns}title").text or ""): r  # type: ignore[union-attr]
        for r in root.iter(f"{ns}rect")
        if r.find(f"{ns}title") is not None
    }
    a = rects["a attempt 1: success, ran 5.00s"]
    b = rects["b attempt 1: failed, ran 5.00s"]
    wait = rects["b attempt 1: failed, queued 2.50s"]
    assert a.get("fill") == STATE_COLOURS["success"]
    assert b.get("fill") == STATE_COLOURS["failed"]
    assert wait.get("fill") not in (STATE_COLOURS["failed"], None)
    xa, wa = float(a.get("x", "")), float(a.get("width", ""))
    xb, wb = float(b.get("x", "")), float(b.get("width", ""))
    xw, ww = float(wait.get("x", "")), float(wait.get("width", ""))
    assert wa == pytest.approx(wb)  # both 5 s
    assert xb == pytest.approx(xa + wa)  # b starts where a ended
    assert xw + ww == pytest.approx(xb)  # the wait ends where b's bar starts
    assert ww == pytest.approx(wa / 2)
    assert float(b.get("y", "")) > float(a.get("y", ""))  # a row per task, in order


def test_gantt_png_is_a_png() -> None:
    pytest.importorskip("PIL")
    run = RunRecord("r1", "churn", "v1", "running", {}, 100.0, None)
    png = gantt(run, [], gantt_attempts(), "png")
    assert isinstance(png, bytes)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_gantt_of_a_run_without_attempts_is_still_a_picture() -> None:
    run = RunRecord("r1", "churn", "v1", "queued", {}, 100.0)
    root = ET.fromstring(gantt(run, ["a"], [], "svg"))
    assert root.tag.endswith("svg")


# -- prices from the environment ---------------------------------------------------------------


def test_cost_prices_from_stageflow_cost() -> None:
    assert load_settings({}).cost_prices == {}
    assert load_settings({"STAGEFLOW_COST": ""}).cost_prices == {}
    env = {"STAGEFLOW_COST": "cpu_hour=0.05, memory_gb_hour=0.01,gpu_hour=2.5,"}
    assert load_settings(env).cost_prices == PRICES


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("cpu_hour", "'cpu_hour' is not PRICE=AMOUNT"),
        ("cpu_hour=-1", "'cpu_hour=-1' is not PRICE=AMOUNT"),
        ("cpu_hour=lots", "'cpu_hour=lots' is not PRICE=AMOUNT"),
        ("cpu_hour=inf", "'cpu_hour=inf' is not PRICE=AMOUNT"),
        ("=1", "'=1' is not PRICE=AMOUNT"),
        ("cpu=0.05", "unknown price 'cpu'; the prices are cpu_hour, memory_gb_hour, gpu_hour"),
    ],
)
def test_bad_cost_prices_are_named(raw: str, message: str) -> None:
    with pytest.raises(UsageError, match="STAGEFLOW_COST") as info:
        load_settings({"STAGEFLOW_COST": raw})
    assert message in str(info.value)
    assert "cpu_hour=0.05,memory_gb_hour=0.01,gpu_hour=2.5" in str(info.value)
