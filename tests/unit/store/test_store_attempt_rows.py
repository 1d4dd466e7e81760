"""Schema 8 on every backend: an attempt's table rows in and out, kept by the upsert
merge like its usage, and a version 7 store upgraded with its attempts intact."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from stageflow.runtime.store import AttemptRecord, Batch, RunRecord, SqlStore
from stageflow.runtime.store import migrations as migrations_module
from stageflow.runtime.store.migrations import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from conftest import Backend


def _run(store: SqlStore) -> None:
    store.create_run(RunRecord("r1", "tables", "v1", "running", {}, 100.0), ["clean", "plain"])


def test_rows_round_trip_and_a_later_row_without_them_keeps_them(store: SqlStore) -> None:
    _run(store)
    final = AttemptRecord("r1", "clean", 1, "success", 1.0, 2.0, rows_in=10, rows_out=6)
    store.commit(Batch(attempts=[final, AttemptRecord("r1", "plain", 1, "success", 1.0, 2.0)]))
    assert store.attempts("r1", "clean") == [final]
    assert store.attempts("r1", "plain")[0][-2:] == (None, None)  # no table: no rows
    # a row written later without rows (e.g. a cancel's) keeps them
    store.commit(Batch(attempts=[AttemptRecord("r1", "clean", 1, "success", 1.0, 3.0)]))
    assert (store.attempts("r1")[0].rows_in, store.attempts("r1")[0].rows_out) == (10, 6)
    (_, attempts), *_ = store.recent_attempts("tables", 1)
    assert [(a.task_id, a.rows_in, a.rows_out) for a in attempts] == [
        ("clean", 10, 6),
        ("plain", None, None),
    ]


def test_rows_too_large_for_32_bits_are_kept(store: SqlStore) -> None:
    _run(store)
    big = AttemptRecord("r1", "clean", 1, "success", rows_in=5_000_000_000, rows_out=3)
    store.commit(Batch(attempts=[big]))
    assert store.attempts("r1") == [big]


def test_a_version_7_store_is_migrated_and_keeps_its_attempts(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MIGRATIONS[7].version == 8
    with monkeypatch.context() as patch:
        patch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS[:7])
        patch.setattr(migrations_module, "LATEST_VERSION", 7)
        with backend.open():
            # the code of version 7 wrote the attempts' first 13 columns
            backend.query(
                "INSERT INTO runs (run_id, pipeline, pipeline_version, state, params_json, "
                "created_at) VALUES ('r1', 'tables', 'v1', 'success', '{}', 100.0)"
            )
            backend.query(
                "INSERT INTO task_runs (run_id, task_id, seq, state, attempts) "
                "VALUES ('r1', 'clean', 0, 'success', 1)"
            )
            backend.query(
                "INSERT INTO attempts (run_id, task_id, attempt, state, started_at, ended_at, "
                "error, queued_at) VALUES ('r1', 'clean', 1, 'success', 1.0, 2.0, NULL, 0.5)"
            )
    assert backend.query("SELECT version FROM stageflow_schema") == [(7,)]
    with backend.open() as store:
        (old,) = store.attempts("r1")
        assert (old.queued_at, old.rows_in, old.rows_out) == (0.5, None, None)
        store.commit(Batch(attempts=[old._replace(rows_in=4, rows_out=2)]))
        assert store.attempts("r1")[0].rows_out == 2
    assert backend.query("SELECT version FROM stageflow_schema") == [(LATEST_VERSION,)]
