"""``/metrics``'s task histograms across scrapes (a real SQLite store, a fake clock):
the first scrape reads the history once; later ones add what settled since and read
afresh only what is newer, and every scrape shows what a full read of the store shows;
an attempt is never counted twice as it settles; a run deleted from the store stays
counted by the process that counted it (a counter never goes down)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stageflow.runtime.store import AttemptRecord, Batch, RunRecord, SqlStore, open_store
from stageflow.service.api.metrics import SETTLE_SECONDS, ApiMetrics

DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Reads:
    """The real store, recording the windows its task histograms were read with."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.windows: list[tuple[float | None, float | None]] = []

    def attempt_durations(self, bounds: Any, **window: float | None) -> Any:
        self.windows.append((window.get("after"), window.get("until")))
        return self._store.attempt_durations(bounds, **window)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "home")
    assert isinstance(opened, SqlStore)
    try:
        yield opened
    finally:
        opened.close()


def add_run(store: SqlStore, run_id: str, ended_at: float, tasks: int = 3) -> None:
    store.create_run(
        RunRecord(run_id, "churn", "v1", "success", {}, ended_at - 60.0, ended_at - 60.0, ended_at),
        [f"t{i}" for i in range(tasks)],
    )
    store.commit(
        Batch(
            attempts=[
                AttemptRecord(run_id, f"t{i}", 1, "success", ended_at - 2.0 - i, ended_at - i)
                for i in range(tasks)
            ]
        )
    )


def durations(metrics: ApiMetrics) -> tuple[float, float]:
    """(count, sum) of churn's task durations, all tasks together."""
    count = total = 0.0
    for family in text_string_to_metric_families(metrics.text().decode()):
        for sample in family.samples:
            if sample.labels.get("pipeline") != "churn":
                continue
            if sample.name == "stageflow_task_duration_seconds_count":
                count += sample.value
            elif sample.name == "stageflow_task_duration_seconds_sum":
                total += sample.value
    return count, total


def full_read(store: SqlStore) -> tuple[float, float]:
    found = store.attempt_durations((1.0,))
    return float(sum(h.observed for h in found)), sum(h.total for h in found)


def test_scrapes_settle_what_is_old_and_read_only_what_is_new(store: SqlStore) -> None:
    clock = Clock(10 * DAY)
    reads = Reads(store)
    metrics = ApiMetrics(reads, lease_seconds=15.0, clock=clock)  # type: ignore[arg-type]  # the real store, wrapped to record its reads
    add_run(store, "old", clock.now - DAY)
    assert durations(metrics) == full_read(store) == (3.0, 6.0)
    assert reads.windows == [(None, clock.now - SETTLE_SECONDS), (clock.now - SETTLE_SECONDS, None)]

    add_run(store, "new", clock.now - 10.0)  # not settled yet: read afresh
    assert durations(metrics) == full_read(store) == (6.0, 12.0)

    horizon = clock.now - SETTLE_SECONDS
    clock.now += 2 * SETTLE_SECONDS  # "new" settles: added once, not twice
    reads.windows.clear()
    assert durations(metrics) == full_read(store) == (6.0, 12.0)
    settled = clock.now - SETTLE_SECONDS
    assert reads.windows == [(horizon, settled), (settled, None)]  # no read of the history

    add_run(store, "newer", clock.now - 1.0)
    clock.now += 1.0  # a horizon that moved less than any attempt: nothing twice either
    assert durations(metrics) == full_read(store) == (9.0, 18.0)


def test_a_deleted_run_stays_counted_by_the_process_that_counted_it(store: SqlStore) -> None:
    clock = Clock(10 * DAY)
    add_run(store, "old", clock.now - DAY)
    add_run(store, "kept", clock.now - DAY)
    counting = ApiMetrics(store, lease_seconds=15.0, clock=clock)
    assert durations(counting) == (6.0, 12.0)
    store._fetchall("DELETE FROM runs WHERE run_id = ? RETURNING run_id", ("old",))
    clock.now += 60.0
    assert durations(counting) == (6.0, 12.0)  # a counter never goes down
    assert durations(ApiMetrics(store, lease_seconds=15.0, clock=clock)) == (3.0, 6.0)


def test_the_settling_time_outlasts_a_long_lease(store: SqlStore) -> None:
    """With a 10-minute lease a batch may be committed up to 10 minutes late: what
    ended 6 minutes ago is not settled yet (4 leases: 40 minutes)."""
    clock = Clock(10 * DAY)
    reads = Reads(store)
    metrics = ApiMetrics(reads, lease_seconds=600.0, clock=clock)  # type: ignore[arg-type]  # the real store, wrapped to record its reads
    durations(metrics)
    assert reads.windows[0] == (None, clock.now - 2400.0)
