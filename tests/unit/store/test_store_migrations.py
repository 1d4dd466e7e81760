"""Schema migrations, on every backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from stageflow.errors import StoreError
from stageflow.runtime.store import RunRecord
from stageflow.runtime.store.dialect import POSTGRESQL, SQLITE
from stageflow.runtime.store.migrations import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from conftest import Backend

STAGEFLOW_TABLES = [
    "artifact_links",
    "attempts",
    "cache_entries",
    "circuits",
    "control_requests",
    "events",
    "outputs",
    "pipelines",
    "run_records",
    "runs",
    "stageflow_schema",
    "task_runs",
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
        assert len(step.statements(SQLITE)) == len(step.statements(POSTGRESQL))


def test_a_fresh_database_is_migrated(backend: Backend) -> None:
    assert backend.name == "postgres" or backend.tables() == []
    with backend.open():
        pass
    assert [t for t in backend.tables() if not t.startswith("sqlite_")] == STAGEFLOW_TABLES
    assert backend.query("SELECT version FROM stageflow_schema") == [(LATEST_VERSION,)]


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
