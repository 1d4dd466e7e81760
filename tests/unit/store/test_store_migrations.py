"""Schema migrations, on every backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from stageflow.errors import StoreError
from stageflow.runtime.store import AttemptRecord, RunRecord
from stageflow.runtime.store.dialect import POSTGRESQL, SQLITE
from stageflow.runtime.store.migrations import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from conftest import Backend

STAGEFLOW_TABLES = [
    "alert_rules",
    "alerts",
    "api_tokens",
    "artifact_links",
    "attempts",
    "audit_log",
    "cache_entries",
    "circuits",
    "control_requests",
    "event_batches",
    "metric_samples",
    "notifications",
    "outputs",
    "pipelines",
    "pool_slots",
    "pools",
    "run_records",
    "run_retries",
    "runs",
    "schedule_objects",
    "schedule_runs",
    "schedules",
    "stageflow_schema",
    "task_runs",
    "workers",
]


def snapshot(backend: Backend) -> dict[str, Any]:
    """Everything a refused open must leave as it was: tables, version, rows."""
    return {
        "tables": backend.tables(),
        "version": backend.query("SELECT version FROM stageflow_schema"),
        "runs": backend.query("SELECT run_id, state FROM runs ORDER BY run_id"),
        "task_runs": backend.query("SELECT run_id, task_id, seq FROM task_runs ORDER BY seq"),
    }


def test_steps_are_numbered_from_one_and_have_sql_for_every_dialect() -> None:
    assert [step.version for step in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[-1].version == LATEST_VERSION
    for step in MIGRATIONS:
        assert step.statements(SQLITE)
        assert step.statements(POSTGRESQL)
        # Same steps in both, but for PostgreSQL's identity moved past copied ids (10).
        extra = 1 if step.version == 10 else 0
        assert len(step.statements(SQLITE)) + extra == len(step.statements(POSTGRESQL))


def test_a_fresh_database_is_migrated(backend: Backend) -> None:
    assert backend.name == "postgres" or backend.tables() == []
    with backend.open():
        pass
    assert [t for t in backend.tables() if not t.startswith("sqlite_")] == STAGEFLOW_TABLES
    assert backend.query("SELECT version FROM stageflow_schema") == [(LATEST_VERSION,)]


# The attempts table's columns, in order: AttemptRecord's fields (its rows are written
# and read positionally), one group per schema step that added some.
ATTEMPT_COLUMNS = [
    *("run_id", "task_id", "attempt", "state", "started_at", "ended_at", "error"),  # 1
    *("queued_at", "request_json", "gpu_devices", "cpu_seconds", "peak_rss_mb"),  # 5
    "gpu_seconds",  # 5
    *("rows_in", "rows_out"),  # 8
]


def test_the_attempts_table_has_the_record_s_columns_in_order(backend: Backend) -> None:
    with backend.open():
        pass
    if backend.name == "sqlite":
        rows = backend.query("SELECT name FROM pragma_table_info('attempts') ORDER BY cid")
    else:
        rows = backend.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = 'attempts' ORDER BY ordinal_position"
        )
    assert [r[0] for r in rows] == ATTEMPT_COLUMNS
    assert list(AttemptRecord._fields) == ATTEMPT_COLUMNS


def test_reopening_is_idempotent_and_keeps_data(backend: Backend) -> None:
    with backend.open() as store:
        store.create_run(RunRecord("r1", "p", "v", "queued", {}, 1.0), ["a", "b"])
    before = snapshot(backend)
    for _ in range(3):
        with backend.open() as store:
            assert [t.task_id for t in store.task_runs("r1")] == ["a", "b"]
    assert snapshot(backend) == before


def test_a_newer_schema_is_refused_and_left_untouched(backend: Backend) -> None:
    with backend.open() as store:
        store.create_run(RunRecord("r1", "p", "v", "queued", {}, 1.0), ["a"])
    backend.query("UPDATE stageflow_schema SET version = ?", (LATEST_VERSION + 2,))
    before = snapshot(backend)

    with pytest.raises(StoreError) as info:
        backend.open()

    assert str(info.value) == (
        f"the store at {backend.url} has schema version {LATEST_VERSION + 2} but this "
        f"stageflow knows up to {LATEST_VERSION}; upgrade stageflow (pip install -U stageflow)"
    )
    assert snapshot(backend) == before


def test_a_failed_migration_changes_nothing(backend: Backend) -> None:
    # A foreign table in the way makes step 1 fail part-way through.
    backend.query("CREATE TABLE task_runs (x INTEGER)")
    with pytest.raises(StoreError, match=r"could not migrate the store at .* to schema version"):
        backend.open()
    assert [t for t in backend.tables() if not t.startswith("sqlite_")] == ["task_runs"]


def test_the_queue_is_read_through_its_partial_index(backend: Backend) -> None:
    """Claiming reads only unfinished runs: the planner picks ``runs_in_queue``."""
    from stageflow.runtime.store.sql import _statements

    store = backend.open()
    try:
        sql = _statements(store.dialect)
        if store.dialect is SQLITE:
            plan = backend.query("EXPLAIN QUERY PLAN " + sql.claim_next_sqlite, (0.0, 0.0, "[]"))
            assert any("runs_in_queue" in str(row) for row in plan), plan
        else:
            with backend.raw() as conn:
                cur = conn.cursor()
                cur.execute("SET enable_seqscan = off")  # a tiny table: ask whether it CAN
                cur.execute(
                    "EXPLAIN " + sql.claim_next_pg.replace("FOR UPDATE SKIP LOCKED", ""),
                    (0.0, 0.0, []),
                )
                plan = [row[0] for row in cur.fetchall()]
            assert any("runs_in_queue" in line for line in plan), plan
    finally:
        store.close()


def test_events_written_before_migration_10_are_read_back_in_order(backend: Backend) -> None:
    """A store at version 9 (one row per event) keeps its events, in their order, and
    new commits go on after them (one row per run per commit since 10)."""
    from stageflow.runtime.store import Batch, EventRecord
    from stageflow.runtime.store.dialect import POSTGRESQL, SQLITE

    dialect = SQLITE if backend.name == "sqlite" else POSTGRESQL
    with backend.raw() as conn:
        cur = conn.cursor()
        for step in MIGRATIONS[:9]:
            for statement in step.statements(dialect):
                cur.execute(statement)
        cur.execute("CREATE TABLE stageflow_schema (version INTEGER NOT NULL)")
        cur.execute("INSERT INTO stageflow_schema (version) VALUES (9)")
    backend.query(
        "INSERT INTO runs (run_id, pipeline, pipeline_version, state, params_json, created_at) "
        "VALUES ('r1', 'p', 'v', 'running', '{}', 1.0)"
    )
    old = [
        ("r1", None, "queued", "running", 1700000000.25, 0, None),
        ("r1", "a", "pending", "queued", 1700000001.5, 1, None),
        ("r1", "a", "queued", "failed", 1700000002.75, 1, "it broke: 'quoted' \"twice\""),
        # 17 significant digits (SQLite's json_array alone keeps 15), and a whole number.
        ("r1", "a", "failed", "queued", 1796473705.0712345, 2, None),
        ("r1", "a", "queued", "running", 1700000000.0, 2, None),
    ]
    for row in old:
        backend.query(
            "INSERT INTO events (run_id, task_id, from_state, to_state, at, attempt, message) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            row,
        )
    with backend.open() as store:
        assert store.events("r1") == [EventRecord(*row) for row in old]
        new = EventRecord("r1", "a", "failed", "success", 1700000003.123456, 2, "ok")
        store.commit(Batch(events=[new]))
        assert store.events("r1") == [*(EventRecord(*row) for row in old), new]
    assert "events" not in backend.tables()
    assert backend.query("SELECT version FROM stageflow_schema") == [(LATEST_VERSION,)]
