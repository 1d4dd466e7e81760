"""The task histograms read by time window (every backend): what ended (or started)
after a time, read through the runs that ended after it or have not ended, plus what
ended up to it, is the whole history, whatever the time; a resumed run that keeps its
old end time while it runs is still read; and on SQLite the reads of a scrape go
through indexes of recent or unfinished runs, never a scan of the history."""

from __future__ import annotations

from pathlib import Path

import pytest

from stageflow.runtime.store import AttemptRecord, Batch, RunRecord, SqlStore, open_store
from stageflow.runtime.store.base import Histogram, RunUpdate
from stageflow.runtime.store.sql_metrics import _histogram_sql, _statements

BOUNDS = (1.0, 5.0)


def make_run(run_id: str, ended_at: float | None, state: str = "success") -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline="churn",
        pipeline_version="v1",
        state=state,
        params={},
        created_at=0.0,
        started_at=1.0,
        ended_at=ended_at,
    )


def fill(store: SqlStore) -> None:
    """An old run (mapped ``train`` with elements), a newer one, an unfinished one."""
    store.create_run(make_run("old", 17.0), ["train", "train[0]", "train[1]", "score"])
    store.create_run(make_run("new", 42.0), ["score"])
    store.create_run(make_run("live", None, "running"), ["score"])
    store.commit(
        Batch(
            attempts=[
                AttemptRecord("old", "train", 1, "success", 10.0, 16.0, queued_at=9.0),  # span
                AttemptRecord("old", "train[0]", 1, "success", 10.0, 10.5, queued_at=10.0),
                AttemptRecord("old", "train[1]", 1, "success", 12.0, 16.0, queued_at=10.0),
                AttemptRecord("old", "score", 1, "success", 16.0, 17.0, queued_at=16.0),
                AttemptRecord("new", "score", 1, "failed", 30.0, 33.0, queued_at=29.0),
                AttemptRecord("new", "score", 2, "success", 35.0, 42.0, queued_at=34.0),
                AttemptRecord("live", "score", 1, "running", 50.0, None, queued_at=48.0),
            ]
        )
    )


def merged(*parts: list[Histogram]) -> list[Histogram]:
    out: dict[tuple[str, ...], Histogram] = {}
    for part in parts:
        for h in part:
            was = out.get(h.labels)
            out[h.labels] = (
                h
                if was is None
                else Histogram(
                    h.labels,
                    was.observed + h.observed,
                    was.total + h.total,
                    [a + b for a, b in zip(was.within, h.within, strict=True)],
                )
            )
    return sorted(out.values(), key=lambda h: h.labels)


@pytest.mark.parametrize("at", [0.0, 10.0, 10.5, 14.0, 16.0, 17.0, 31.0, 33.0, 40.0, 49.0, 60.0])
def test_up_to_a_time_and_after_it_is_the_whole_history(store: SqlStore, at: float) -> None:
    fill(store)
    for read in (store.attempt_durations, store.attempt_queue_waits):
        whole = sorted(read(BOUNDS), key=lambda h: h.labels)
        assert merged(read(BOUNDS, until=at), read(BOUNDS, after=at)) == whole


def test_a_window_between_two_times(store: SqlStore) -> None:
    fill(store)
    assert store.attempt_durations(BOUNDS, after=16.0, until=40.0) == [
        Histogram(("churn", "score"), 2, 4.0, [1, 2])  # old's score (ended 17), new's first
    ]
    # the mapped parent's span (ended 16) is left out of a window that holds it
    assert sorted(store.attempt_durations(BOUNDS, after=0.0, until=16.0)) == [
        Histogram(("churn", "train[0]"), 1, 0.5, [1, 1]),
        Histogram(("churn", "train[1]"), 1, 4.0, [0, 1]),
    ]
    # queue waits by start: live's attempt started at 50 (running: no duration yet)
    assert store.attempt_queue_waits(BOUNDS, after=40.0) == [Histogram(("churn",), 1, 2.0, [0, 1])]


def test_a_resumed_run_keeping_its_old_end_time_is_still_read(store: SqlStore) -> None:
    """``stageflow resume`` of a failed run sets it running and leaves its ``ended_at``
    as it was until it ends again: its new attempts are read all the same."""
    store.create_run(make_run("again", 5.0, "failed"), ["score"])
    store.commit(
        Batch(
            attempts=[
                AttemptRecord("again", "score", 1, "failed", 2.0, 5.0),
                AttemptRecord("again", "score", 2, "success", 20.0, 23.0),
            ],
            runs=[RunUpdate("again", state="running")],
        )
    )
    assert store.get_run("again").ended_at == 5.0  # (the resume leaves it)
    assert store.attempt_durations(BOUNDS, after=10.0) == [
        Histogram(("churn", "score"), 1, 3.0, [0, 1])
    ]


def test_a_scrape_reads_indexes_of_recent_and_unfinished_runs_only(tmp_path: Path) -> None:
    """SQLite's plans (PostgreSQL plans by its statistics): no statement of a scrape's
    windowed reads (nor of the unfinished runs' task states and running attempts) scans
    attempts, task runs or runs; a plain JOIN made SQLite scan the store's whole
    history at each scrape."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "home")
    assert isinstance(store, SqlStore)
    fill(store)
    statements = {
        "durations": _histogram_sql(store.dialect, "attempt_durations", len(BOUNDS), True),
        "waits": _histogram_sql(store.dialect, "attempt_queue_waits", len(BOUNDS), True),
        "requests in use": _statements(store.dialect).select_requests_in_use,
        "active tasks": store._sql.count_active_tasks,
        "oldest queued": store._sql.oldest_queued,
    }
    for what, sql in statements.items():
        params = (0.0,) * sql.count("?")
        plan = [row[-1] for row in store._fetchall(f"EXPLAIN QUERY PLAN {sql}", params)]
        scans = [step for step in plan if step.startswith("SCAN ") and " USING " not in step]
        scans += [
            step for step in plan if "runs_by_created_at" in step or "runs_by_pipeline" in step
        ]
        assert [s for s in scans if s not in ("SCAN r", "SCAN h")] == [], (what, plan)
    store.close()
