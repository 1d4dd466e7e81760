"""Cache entries, circuit breaker states and task run notes, on every backend.

Both outlive runs, so they are checked across store instances (a second
process opens its own store) and, for circuits, under concurrent updates.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from stageflow.engine.circuit import CircuitState
from stageflow.errors import RunNotFound
from stageflow.runtime.store import Batch, OutputRef, RunRecord, RunUpdate, SqlStore
from stageflow.runtime.store import migrations as migrations_module
from stageflow.runtime.store.base import CacheEntry, TaskRunRecord
from stageflow.runtime.store.migrations import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from conftest import Backend


def inline(run_id: str, task_id: str, data: bytes = b"[1, 2]") -> OutputRef:
    return OutputRef(run_id, task_id, "inline", "json", len(data), "ab" * 32, data=data)


def file_ref(run_id: str, task_id: str) -> OutputRef:
    return OutputRef(run_id, task_id, "file", "pickle", 10, "cd" * 32, uri="/tmp/x/out")


def entry(key: str, ref: OutputRef, created: float, expires: float | None) -> CacheEntry:
    return CacheEntry(key, "pipe", ref, created, expires)


# -- cache -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param(inline("r1", "a"), id="inline"),
        pytest.param(inline("r1", "a", b""), id="inline-empty"),
        pytest.param(file_ref("r1", "a"), id="file"),
    ],
)
def test_a_cache_entry_round_trips(store: SqlStore, ref: OutputRef) -> None:
    assert store.get_cache("k1", 0.0) is None
    e = entry("k1", ref, 100.0, None)
    store.put_cache(e)
    assert store.get_cache("k1", 1e12) == e


def test_a_cache_entry_survives_reopening(backend: Backend) -> None:
    e = entry("k1", inline("r1", "a"), 100.0, 200.0)
    with backend.open() as first:
        first.put_cache(e)
    with backend.open() as second:
        assert second.get_cache("k1", 150.0) == e


def test_putting_a_key_again_replaces_its_entry(store: SqlStore) -> None:
    store.put_cache(entry("k1", inline("r1", "a"), 100.0, None))
    newer = entry("k1", file_ref("r2", "a"), 300.0, 400.0)
    store.put_cache(newer)
    assert store.get_cache("k1", 350.0) == newer


@pytest.mark.parametrize(
    ("expires", "now", "found"),
    [
        pytest.param(None, 1e12, True, id="never-expires"),
        pytest.param(200.0, 199.9, True, id="before-expiry"),
        pytest.param(200.0, 200.0, False, id="at-expiry"),
        pytest.param(200.0, 500.0, False, id="after-expiry"),
    ],
)
def test_an_expired_entry_is_not_returned(
    store: SqlStore, expires: float | None, now: float, found: bool
) -> None:
    store.put_cache(entry("k1", inline("r1", "a"), 100.0, expires))
    assert (store.get_cache("k1", now) is not None) is found


def test_delete_expired_removes_only_expired_entries(store: SqlStore, backend: Backend) -> None:
    store.put_cache(entry("old", inline("r1", "a"), 1.0, 10.0))
    store.put_cache(entry("due", inline("r1", "b"), 1.0, 50.0))
    store.put_cache(entry("fresh", inline("r1", "c"), 1.0, 500.0))
    store.put_cache(entry("forever", inline("r1", "d"), 1.0, None))
    assert store.delete_expired_cache(50.0) == 2
    keys = [row[0] for row in backend.query("SELECT cache_key FROM cache_entries ORDER BY 1")]
    assert keys == ["forever", "fresh"]
    assert store.delete_expired_cache(50.0) == 0


def test_cache_entries_in_a_batch_commit_with_it(store: SqlStore) -> None:
    store.create_run(RunRecord("r1", "p", "v", "running", {}, 1.0), ["a", "b"])
    e1 = entry("k1", inline("r1", "a"), 5.0, None)
    e2 = entry("k2", inline("r1", "b"), 5.0, 99.0)
    batch = Batch(
        task_runs=[TaskRunRecord("r1", "a", "success", 1, 1.0, 5.0)],
        outputs=[e1.output],
        cache=[e1, e2, entry("k2", inline("r1", "b"), 4.0, None)],
    )
    assert batch
    store.commit(batch)
    assert store.get_cache("k1", 6.0) == e1
    # two entries under one key in a batch: the last one wins
    assert store.get_cache("k2", 6.0) == entry("k2", inline("r1", "b"), 4.0, None)


def test_a_failed_batch_writes_no_cache_entry(store: SqlStore) -> None:
    e = entry("k1", inline("r1", "a"), 5.0, None)
    with pytest.raises(RunNotFound):
        store.commit(Batch(runs=[RunUpdate("missing", state="failed")], cache=[e]))
    assert store.get_cache("k1", 6.0) is None
    assert Batch(cache=[e])  # a batch holding only cache entries is not empty


# -- circuits --------------------------------------------------------------------------


def test_a_circuit_state_round_trips_across_stores(backend: Backend) -> None:
    opened = CircuitState("db", "open", 3, 130.0, None, 100.0)
    with backend.open() as first:
        assert first.get_circuit("db") is None
        assert first.update_circuit("db", lambda current: opened) == opened
    with backend.open() as second:
        assert second.get_circuit("db") == opened
        assert second.get_circuit("other") is None
        seen: list[CircuitState | None] = []

        def close(current: CircuitState | None) -> CircuitState:
            seen.append(current)
            return CircuitState("db", "closed", 0, None, None, 140.0)

        second.update_circuit("db", close)
        assert seen == [opened]
        assert second.get_circuit("db") == CircuitState("db", "closed", 0, None, None, 140.0)


def test_a_change_that_raises_rolls_back(store: SqlStore) -> None:
    def broken(current: CircuitState | None) -> CircuitState:
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError, match="nope"):
        store.update_circuit("db", broken)
    assert store.get_circuit("db") is None
    store.update_circuit("db", lambda c: CircuitState("db", failures=1, updated_at=1.0))
    with pytest.raises(RuntimeError, match="nope"):
        store.update_circuit("db", broken)
    assert store.get_circuit("db") == CircuitState("db", failures=1, updated_at=1.0)


@pytest.mark.parametrize("exists", [False, True], ids=["new-circuit", "existing-circuit"])
def test_concurrent_updates_never_interleave(backend: Backend, exists: bool) -> None:
    """Two stores (as two processes would) update one circuit at once: the second
    waits for the first's transaction and sees its result, so no update is lost."""
    a, b = backend.open(), backend.open()
    try:
        if exists:
            a.update_circuit("db", lambda c: CircuitState("db", updated_at=0.0))
        a_inside = threading.Event()
        b_done = threading.Event()
        b_saw: list[CircuitState | None] = []

        def slow_increment(current: CircuitState | None) -> CircuitState:
            a_inside.set()
            # Give b every chance to overtake; it must not: it is blocked on our lock.
            b_done.wait(0.3)
            return CircuitState("db", failures=(current.failures if current else 0) + 1)

        def increment(current: CircuitState | None) -> CircuitState:
            b_saw.append(current)
            return CircuitState("db", failures=(current.failures if current else 0) + 1)

        def run_b() -> None:
            a_inside.wait(10)
            b.update_circuit("db", increment)
            b_done.set()

        thread = threading.Thread(target=run_b)
        thread.start()
        a.update_circuit("db", slow_increment)
        thread.join(30)
        assert b_saw == [CircuitState("db", failures=1)]
        final = a.get_circuit("db")
        assert final is not None and final.failures == 2
    finally:
        a.close()
        b.close()


# -- task run notes, and migrating a version-1 store ---------------------------------------


def test_a_task_run_note_round_trips(store: SqlStore) -> None:
    store.create_run(RunRecord("r1", "p", "v", "running", {}, 1.0), ["a", "b", "c"])
    store.commit(
        Batch(
            task_runs=[
                TaskRunRecord("r1", "a", "success", 1, 1.0, 2.0, None, "cached"),
                TaskRunRecord("r1", "b", "success", 2, 1.0, 3.0, "fallback used: x", "fallback"),
            ]
        )
    )
    notes = {t.task_id: (t.note, t.error) for t in store.task_runs("r1")}
    assert notes == {
        "a": ("cached", None),
        "b": ("fallback", "fallback used: x"),
        "c": (None, None),
    }


def test_a_version_1_store_is_migrated_and_keeps_its_rows(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS[:1])
        patch.setattr(migrations_module, "LATEST_VERSION", 1)
        with backend.open():  # a run as the code of version 1 wrote it
            backend.query(
                "INSERT INTO runs (run_id, pipeline, pipeline_version, state, params_json, "
                "created_at) VALUES ('r1', 'p', 'v', 'success', '{}', 1.0)"
            )
            backend.query(
                "INSERT INTO task_runs (run_id, task_id, seq, state, attempts) "
                "VALUES ('r1', 'a', 0, 'pending', 0)"
            )
    assert backend.query("SELECT version FROM stageflow_schema") == [(1,)]
    assert "cache_entries" not in backend.tables()
    with backend.open() as store:
        assert [(t.task_id, t.note) for t in store.task_runs("r1")] == [("a", None)]
        store.put_cache(entry("k", inline("r1", "a"), 1.0, None))
        assert store.get_cache("k", 2.0) is not None
        assert store.get_circuit("db") is None
    assert backend.query("SELECT version FROM stageflow_schema") == [(LATEST_VERSION,)]
