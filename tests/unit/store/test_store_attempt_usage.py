"""Schema 5 on every backend: an attempt's queue time, request, devices and measured
usage; the upsert merge that keeps them; the queries that read them across runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from stageflow.runtime.store import AttemptRecord, Batch, RunRecord, SqlStore, TaskRunRecord
from stageflow.runtime.store import migrations as migrations_module
from stageflow.runtime.store.migrations import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from conftest import Backend

REQUEST = '{"cpu": 2, "memory_gb": 4, "gpu": 1}'
USAGE_COLUMNS = (
    "queued_at",
    "request_json",
    "gpu_devices",
    "cpu_seconds",
    "peak_rss_mb",
    "gpu_seconds",
)


def run(run_id: str, *, pipeline: str = "churn", created_at: float = 100.0) -> RunRecord:
    return RunRecord(run_id, pipeline, "v1", "success", {}, created_at)


def running(run_id: str = "r1", task: str = "train", attempt: int = 1) -> AttemptRecord:
    """The running row as the runner writes it: queue time, request, devices."""
    return AttemptRecord(
        run_id,
        task,
        attempt,
        "running",
        started_at=10.5,
        queued_at=9.25,
        request_json=REQUEST,
        gpu_devices="0,1",
    )


def final(run_id: str = "r1", task: str = "train", attempt: int = 1) -> AttemptRecord:
    """The final row: end, state and the measurements, nothing of the running row."""
    return AttemptRecord(
        run_id,
        task,
        attempt,
        "success",
        started_at=10.5,
        ended_at=20.75,
        cpu_seconds=15.5,
        peak_rss_mb=1228.8,
        gpu_seconds=20.5,
    )


MERGED = AttemptRecord(
    "r1",
    "train",
    1,
    "success",
    10.5,
    20.75,
    None,
    queued_at=9.25,
    request_json=REQUEST,
    gpu_devices="0,1",
    cpu_seconds=15.5,
    peak_rss_mb=1228.8,
    gpu_seconds=20.5,
)


def test_migration_5_adds_the_usage_columns(backend: Backend) -> None:
    assert LATEST_VERSION >= 5
    assert MIGRATIONS[4].version == 5
    with backend.open():
        pass
    if backend.name == "sqlite":
        rows = backend.query("SELECT name FROM pragma_table_info('attempts')")
    else:
        rows = backend.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'attempts'"
        )
    assert set(USAGE_COLUMNS) <= {r[0] for r in rows}


def test_every_usage_field_round_trips(store: SqlStore) -> None:
    store.create_run(run("r1"), ["train"])
    store.commit(Batch(attempts=[MERGED]))
    assert store.attempts("r1") == [MERGED]
    assert store.attempts("r1", "train") == [MERGED]


def test_a_later_row_without_usage_keeps_what_an_earlier_commit_set(store: SqlStore) -> None:
    store.create_run(run("r1"), ["train"])
    store.commit(Batch(attempts=[running()]))
    assert store.attempts("r1") == [running()]
    store.commit(Batch(attempts=[final()]))
    assert store.attempts("r1") == [MERGED]


def test_running_and_final_rows_in_one_batch_merge_the_same_way(store: SqlStore) -> None:
    store.create_run(run("r1"), ["train"])
    store.commit(Batch(attempts=[running(), final()]))
    assert store.attempts("r1") == [MERGED]


def test_a_later_value_replaces_an_earlier_one(store: SqlStore) -> None:
    store.create_run(run("r1"), ["train"])
    store.commit(Batch(attempts=[running()]))
    newer = AttemptRecord(
        "r1", "train", 1, "success", 11.0, 12.0, "boom", queued_at=10.0, peak_rss_mb=5.0
    )
    store.commit(Batch(attempts=[newer]))
    (row,) = store.attempts("r1")
    # state, times and error are replaced as before; set usage fields replace too.
    assert (row.state, row.started_at, row.ended_at, row.error) == ("success", 11.0, 12.0, "boom")
    assert (row.queued_at, row.peak_rss_mb) == (10.0, 5.0)
    assert (row.request_json, row.gpu_devices) == (REQUEST, "0,1")


def test_the_merge_is_per_attempt(store: SqlStore) -> None:
    store.create_run(run("r1"), ["train", "other"])
    store.commit(Batch(attempts=[running(attempt=1), running(task="other")]))
    store.commit(Batch(attempts=[final(attempt=2), final(task="other")]))
    rows = {(a.task_id, a.attempt): a for a in store.attempts("r1")}
    assert rows[("train", 1)] == running(attempt=1)
    assert rows[("train", 2)] == final(attempt=2)  # nothing borrowed from attempt 1
    assert rows[("other", 1)].request_json == REQUEST
    assert rows[("other", 1)].cpu_seconds == 15.5


def test_rows_without_usage_still_read_back_with_none(store: SqlStore) -> None:
    store.create_run(run("r1"), ["a"])
    plain = AttemptRecord("r1", "a", 1, "failed", 1.0, 2.0, "x")
    store.commit(Batch(attempts=[plain]))
    assert store.attempts("r1") == [plain]
    assert all(getattr(store.attempts("r1")[0], c) is None for c in USAGE_COLUMNS)


# -- recent_attempts / attempts_between --------------------------------------------------


def fill(store: SqlStore) -> None:
    """churn: r1 (t=100), r2 (t=200, no attempts), r3 (t=300); other: o1 (t=250)."""
    for run_id, pipeline, at in (
        ("r1", "churn", 100.0),
        ("r2", "churn", 200.0),
        ("o1", "other", 250.0),
        ("r3", "churn", 300.0),
    ):
        store.create_run(run(run_id, pipeline=pipeline, created_at=at), ["z", "a"])
    store.commit(
        Batch(
            attempts=[
                final("r1", "a"),
                final("r1", "z"),
                AttemptRecord("r3", "a", 2, "success", 5.0, 6.0, peak_rss_mb=7.0),
                AttemptRecord("r3", "a", 1, "failed", 1.0, 2.0, "x", request_json=REQUEST),
                final("o1", "a"),
            ],
            task_runs=[TaskRunRecord("r2", "z", "success", 0, 1.0, 1.0, None, "cached")],
        )
    )


def shape(groups: list[tuple[RunRecord, list[AttemptRecord]]]) -> list[tuple[str, list[str]]]:
    return [(r.run_id, [f"{a.task_id}{a.attempt}" for a in attempts]) for r, attempts in groups]


def test_recent_attempts_newest_runs_first_with_attempts_in_task_order(store: SqlStore) -> None:
    fill(store)
    groups = store.recent_attempts("churn", 10)
    assert shape(groups) == [("r3", ["a1", "a2"]), ("r2", []), ("r1", ["z1", "a1"])]
    assert groups[0][0] == run("r3", created_at=300.0)
    assert groups[0][1][0] == AttemptRecord(
        "r3", "a", 1, "failed", 1.0, 2.0, "x", request_json=REQUEST
    )
    assert groups[2][1][0] == final("r1", "z")


def test_recent_attempts_limits_runs_not_rows(store: SqlStore) -> None:
    fill(store)
    assert shape(store.recent_attempts("churn", 1)) == [("r3", ["a1", "a2"])]
    assert shape(store.recent_attempts("churn", 2)) == [("r3", ["a1", "a2"]), ("r2", [])]
    assert store.recent_attempts("absent", 10) == []


def test_attempts_between_is_a_half_open_window_oldest_first(store: SqlStore) -> None:
    fill(store)
    assert shape(store.attempts_between(0.0, 1000.0)) == [
        ("r1", ["z1", "a1"]),
        ("r2", []),
        ("o1", ["a1"]),
        ("r3", ["a1", "a2"]),
    ]
    assert shape(store.attempts_between(200.0, 300.0)) == [("r2", []), ("o1", ["a1"])]
    assert shape(store.attempts_between(200.0, 300.0, "churn")) == [("r2", [])]
    assert shape(store.attempts_between(0.0, 1000.0, "other")) == [("o1", ["a1"])]
    assert store.attempts_between(301.0, 1000.0) == []
    (_, attempts) = store.attempts_between(250.0, 251.0)[0]
    assert attempts == [final("o1", "a")]


def test_a_version_4_store_is_migrated_and_keeps_its_attempts(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS[:4])
        patch.setattr(migrations_module, "LATEST_VERSION", 4)
        with backend.open():
            # The code of version 4 wrote the runs' first 14 columns and the
            # attempts' first seven.
            backend.query(
                "INSERT INTO runs (run_id, pipeline, pipeline_version, state, params_json, "
                "created_at) VALUES ('r1', 'churn', 'v1', 'success', '{}', 100.0)"
            )
            backend.query(
                "INSERT INTO task_runs (run_id, task_id, seq, state, attempts) "
                "VALUES ('r1', 'a', 0, 'pending', 0)"
            )
            backend.query(
                "INSERT INTO attempts (run_id, task_id, attempt, state, started_at, ended_at, "
                "error) VALUES ('r1', 'a', 1, 'success', 1.0, 2.0, NULL)"
            )
    assert backend.query("SELECT version FROM stageflow_schema") == [(4,)]
    with backend.open() as store:
        assert store.attempts("r1") == [AttemptRecord("r1", "a", 1, "success", 1.0, 2.0)]
        store.commit(Batch(attempts=[AttemptRecord("r1", "a", 1, "success", cpu_seconds=3.0)]))
        assert store.attempts("r1")[0].cpu_seconds == 3.0
    assert backend.query("SELECT version FROM stageflow_schema") == [(LATEST_VERSION,)]
