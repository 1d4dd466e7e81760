"""``runtime.stats``: per-task statistics from store rows, table-driven."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from stageflow.runtime.stats import (
    PipelineStats,
    TaskStats,
    first_line,
    nearest_rank,
    task_stats,
)
from stageflow.runtime.store import TaskRunStat
from stageflow.service.tables import render_stats


def row(
    task_id: str,
    state: str = "success",
    *,
    run_id: str = "r1",
    seconds: float | None = 1.0,
    attempts: int = 1,
    ended_at: float | None = 50.0,
    error: str | None = None,
    note: str | None = None,
    created_at: float = 0.0,
) -> TaskRunStat:
    started = None if seconds is None else 10.0
    ended = None if seconds is None else 10.0 + seconds
    return TaskRunStat(
        run_id, "success", created_at, task_id, state, attempts, started, ended, ended_at,
        error, note,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("values", "percent", "expected"),
    [
        pytest.param([], 50, None, id="empty"),
        pytest.param([7.0], 50, 7.0, id="one-p50"),
        pytest.param([7.0], 95, 7.0, id="one-p95"),
        pytest.param([4.0, 1.0, 3.0, 2.0], 50, 2.0, id="even-p50-lower-middle"),
        pytest.param([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0, id="odd-p50-middle"),
        pytest.param([float(i) for i in range(1, 21)], 95, 19.0, id="twenty-p95"),
        pytest.param([float(i) for i in range(1, 101)], 95, 95.0, id="hundred-p95"),
        pytest.param([1.0, 2.0, 3.0], 100, 3.0, id="p100-max"),
        pytest.param([1.0, 2.0, 3.0], 0, 1.0, id="p0-min"),
    ],
)
def test_nearest_rank(values: list[float], percent: float, expected: float | None) -> None:
    assert nearest_rank(values, percent) == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param("boom", "boom", id="one-line"),
        pytest.param("\n  ValueError: bad  \ntrace", "ValueError: bad", id="first-non-blank"),
    ],
)
def test_first_line(error: str | None, expected: str | None) -> None:
    assert first_line(error) == expected


def stats(
    tid: str,
    runs: int,
    ok: int,
    failed: int,
    other: int = 0,
    rate: float | None = 1.0,
    p50: float | None = 1.0,
    p95: float | None = 1.0,
    last: tuple[float, str, str | None] | None = None,
) -> TaskStats:
    at, run, error = last if last else (None, None, None)
    return TaskStats(tid, runs, ok, failed, other, rate, p50, p95, at, run, error)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param([], [], id="no-rows"),
        pytest.param([row("a")], [stats("a", 1, 1, 0)], id="one-success"),
        pytest.param(
            [row("a", seconds=s, run_id=f"r{s}") for s in (3.0, 1.0, 2.0, 10.0)],
            [stats("a", 4, 4, 0, p50=2.0, p95=10.0)],
            id="durations-nearest-rank",
        ),
        pytest.param(
            [
                row("a", run_id="r1"),
                row("a", "failed", run_id="r2", ended_at=80.0, error="old\nmore"),
                row("a", "failed", run_id="r3", ended_at=90.0, error="new\nmore"),
                row("a", "failed", run_id="r4", ended_at=None, error="no end", created_at=5.0),
            ],
            [stats("a", 4, 1, 3, rate=0.25, last=(90.0, "r3", "new"))],
            id="last-failure-ended-last",
        ),
        pytest.param(
            [row("a", note="cached", attempts=0, seconds=None), row("a", note="fallback")],
            [stats("a", 2, 2, 0, p50=None, p95=None)],
            id="cache-hit-and-fallback-not-timed",
        ),
        pytest.param(
            [
                row("a", note="skipped downstream", seconds=3.0),  # it ran, then skipped
                row("a", note="cached, skipped downstream", attempts=0, seconds=None),
            ],
            [stats("a", 2, 2, 0, p50=3.0, p95=3.0)],
            id="a-skipping-success-is-timed-its-cache-hit-not",
        ),
        pytest.param(
            [row("a", "skipped"), row("a", "upstream_failed"), row("a", "cancelled")],
            [stats("a", 3, 0, 0, other=3, rate=None, p50=None, p95=None)],
            id="other-final-states-no-rate",
        ),
        pytest.param(
            [row("a", s) for s in ("pending", "queued", "running", "up_for_retry")],
            [],
            id="unfinished-not-counted",
        ),
        pytest.param(
            [
                row("train", seconds=None, attempts=0),  # the mapped parent: not counted
                row("train[0]", seconds=2.0),
                row("train[1]", "failed", error="oom", ended_at=70.0),
                row("train[10]", seconds=4.0),
                row("train", run_id="r2", seconds=None, attempts=0),  # no elements here
            ],
            [stats("train", 4, 3, 1, rate=0.75, p50=2.0, p95=4.0, last=(70.0, "r1", "oom"))],
            id="elements-count-under-their-task",
        ),
        pytest.param(
            [row("a[0][1]"), row("a[0]", seconds=None), row("a", seconds=None)],
            [stats("a", 1, 1, 0)],
            id="nested-elements",
        ),
        pytest.param(
            [row("b"), row("a"), row("b", run_id="r2")],
            [stats("b", 2, 2, 0), stats("a", 1, 1, 0)],
            id="tasks-in-order-first-met",
        ),
    ],
)
def test_task_stats(rows: Sequence[TaskRunStat], expected: list[TaskStats]) -> None:
    assert task_stats(rows) == expected


def test_render_stats_aligns_columns_and_totals_runs() -> None:
    report = PipelineStats(
        pipeline="churn",
        days=30,
        since=0.0,
        until=86_400.0,
        runs_by_state={"success": 2, "failed": 1},
        tasks=[
            stats("extract", 3, 3, 0, p50=0.5, p95=1.25),
            stats("train_model", 3, 2, 1, rate=2 / 3, last=(60.0, "r3", "boom")),
        ],
    )

    assert render_stats(report) == [
        "task         runs  ok  failed  other  success    p50    p95  last failure",
        "extract         3   3       0      0   100.0%  0.50s  1.25s  -",
        "train_model     3   2       1      0    66.7%  1.00s  1.00s  1970-01-01 00:01:00 boom",
        "runs: 3 (1 failed, 2 success)",
    ]
