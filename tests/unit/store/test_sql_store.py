"""The Store contract, on every backend (``store``/``backend`` fixtures: SQLite, PostgreSQL)."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from stageflow.errors import RunIdTaken, RunNotFound, StoreError
from stageflow.runtime.store import (
    AttemptRecord,
    Batch,
    EventRecord,
    OutputRef,
    PipelineRecord,
    RunRecord,
    RunUpdate,
    SqlStore,
    TaskRunRecord,
    open_store,
)

if TYPE_CHECKING:
    from conftest import Backend


def make_run(
    run_id: str = "r1", *, pipeline: str = "churn", created_at: float = 100.0
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline=pipeline,
        pipeline_version="v1",
        state="queued",
        params={"lr": 0.1, "layers": [1, 2], "name": "é", "nested": {"a": None}},
        created_at=created_at,
    )


def test_pipeline_save_is_idempotent(store: SqlStore) -> None:
    record = PipelineRecord("churn", "abc123", '{"tasks": []}', 1.5)
    store.save_pipeline(record)
    store.save_pipeline(record)
    store.save_pipeline(PipelineRecord("churn", "abc123", '{"other": 1}', 9.0))  # first one wins
    store.save_pipeline(PipelineRecord("churn", "def456", "{}", 2.0))

    assert store.get_pipeline("churn", "abc123") == record
    assert store.get_pipeline("churn", "def456").spec_json == "{}"


def test_get_pipeline_absent_raises_store_error(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="no pipeline 'churn' version 'nope' in the store at"):
        store.get_pipeline("churn", "nope")


def test_run_round_trips_every_field(store: SqlStore) -> None:
    run = RunRecord(
        run_id="r1",
        pipeline="churn",
        pipeline_version="v1",
        state="running",
        params={"lr": 0.001, "epochs": 3, "tags": ["a", "b"], "x": {"y": None}, "ok": True},
        created_at=1_700_000_000.123456,
        started_at=1_700_000_001.5,
        ended_at=1_700_000_002.25,
        owner_host="host-a",
        owner_pid=4242,
        owner_started_at=1_699_999_999.75,
        heartbeat_at=1_700_000_001.875,
        executor="process",
    )
    store.create_run(run, [])
    assert store.get_run("r1") == run
    assert store.task_runs("r1") == []


def test_create_run_inserts_pending_task_runs_in_order(store: SqlStore) -> None:
    ids = [f"task_{i:05d}" for i in range(2000)][::-1]  # creation order, not name order
    store.create_run(make_run(), ids)
    rows = store.task_runs("r1")
    assert [row.task_id for row in rows] == ids
    assert {(row.state, row.attempts, row.started_at, row.ended_at, row.error) for row in rows} == {
        ("pending", 0, None, None, None)
    }


def test_create_run_is_one_transaction(store: SqlStore) -> None:
    with pytest.raises(Exception):  # the driver's integrity error: a repeated task id
        store.create_run(make_run(), ["a", "b", "a"])
    with pytest.raises(RunNotFound):
        store.get_run("r1")
    assert store.task_runs("r1") == []


def test_create_run_twice_fails_and_keeps_the_first(store: SqlStore) -> None:
    store.create_run(make_run(), ["a"])
    with pytest.raises(Exception):
        store.create_run(make_run(), ["b"])
    assert [t.task_id for t in store.task_runs("r1")] == ["a"]


def test_commit_round_trips_every_record(store: SqlStore) -> None:
    store.create_run(make_run(), ["extract", "train"])
    payload = bytes(range(256)) * 4
    batch = Batch(
        task_runs=[
            TaskRunRecord("r1", "extract", "success", 1, 10.5, 11.25, None),
            TaskRunRecord("r1", "train", "failed", 2, 12.0, 13.0, "ValueError: boom\nline 2"),
        ],
        attempts=[
            AttemptRecord("r1", "extract", 1, "success", 10.5, 11.25, None),
            AttemptRecord("r1", "train", 1, "failed", 12.0, 12.5, "OOM"),
            AttemptRecord("r1", "train", 2, "failed", 12.75, 13.0, "ValueError: boom\nline 2"),
        ],
        events=[
            EventRecord("r1", None, "queued", "running", 10.0, 0, "started by cli"),
            EventRecord("r1", "extract", "queued", "running", 10.5, 1, None),
            EventRecord("r1", "train", "running", "failed", 13.0, 2, "ValueError: boom"),
        ],
        outputs=[
            OutputRef("r1", "extract", "inline", "pickle", len(payload), "ab" * 32, data=payload),
            OutputRef("r1", "train", "file", "joblib", 2**40, "cd" * 32, uri="file:///a/b.joblib"),
        ],
        runs=[RunUpdate("r1", state="running", started_at=10.0, heartbeat_at=10.0)],
    )
    store.commit(batch)

    assert store.task_runs("r1") == batch.task_runs
    assert store.attempts("r1") == batch.attempts
    assert store.attempts("r1", "train") == batch.attempts[1:]
    assert store.attempts("r1", "nope") == []
    assert store.events("r1") == batch.events
    outputs = store.outputs("r1")
    assert outputs == {"extract": batch.outputs[0], "train": batch.outputs[1]}
    assert isinstance(outputs["extract"].data, bytes)
    run = store.get_run("r1")
    assert (run.state, run.started_at, run.heartbeat_at, run.ended_at) == (
        "running",
        10.0,
        10.0,
        None,
    )


def test_empty_batch_is_a_no_op(store: SqlStore) -> None:
    store.commit(Batch())


def test_run_update_changes_only_the_fields_it_sets(store: SqlStore) -> None:
    store.create_run(make_run(), [])
    store.commit(Batch(runs=[RunUpdate("r1", state="running", started_at=5.0)]))
    store.commit(Batch(runs=[RunUpdate("r1", heartbeat_at=6.0)]))
    run = store.get_run("r1")
    assert (run.state, run.started_at, run.ended_at, run.heartbeat_at) == (
        "running",
        5.0,
        None,
        6.0,
    )

    store.commit(Batch(runs=[RunUpdate("r1", state="success", ended_at=7.0)]))
    run = store.get_run("r1")
    assert (run.state, run.started_at, run.ended_at, run.heartbeat_at) == ("success", 5.0, 7.0, 6.0)
    assert run.params == make_run().params
    assert run.created_at == 100.0


def test_run_update_of_an_unknown_run_raises_and_applies_nothing(store: SqlStore) -> None:
    store.create_run(make_run(), ["a"])
    batch = Batch(
        runs=[RunUpdate("r1", state="running"), RunUpdate("ghost", state="running")],
        task_runs=[TaskRunRecord("r1", "a", "queued")],
    )
    with pytest.raises(RunNotFound, match="no run 'ghost'"):
        store.commit(batch)
    assert store.get_run("r1").state == "queued"
    assert store.task_runs("r1")[0].state == "pending"


def test_task_runs_and_attempts_are_upserted(store: SqlStore) -> None:
    store.create_run(make_run(), ["a", "b"])
    store.commit(
        Batch(
            task_runs=[TaskRunRecord("r1", "a", "running", 1, 1.0)],
            attempts=[AttemptRecord("r1", "a", 1, "running", 1.0)],
        )
    )
    store.commit(
        Batch(
            task_runs=[TaskRunRecord("r1", "a", "up_for_retry", 1, 1.0, 2.0, "boom")],
            attempts=[AttemptRecord("r1", "a", 1, "failed", 1.0, 2.0, "boom")],
        )
    )
    store.commit(
        Batch(
            task_runs=[TaskRunRecord("r1", "a", "success", 2, 1.0, 4.0, None)],
            attempts=[AttemptRecord("r1", "a", 2, "success", 3.0, 4.0)],
        )
    )
    assert store.task_runs("r1") == [
        TaskRunRecord("r1", "a", "success", 2, 1.0, 4.0, None),
        TaskRunRecord("r1", "b", "pending"),
    ]
    assert store.attempts("r1") == [
        AttemptRecord("r1", "a", 1, "failed", 1.0, 2.0, "boom"),
        AttemptRecord("r1", "a", 2, "success", 3.0, 4.0),
    ]


def test_a_task_run_first_seen_in_a_commit_comes_last(store: SqlStore) -> None:
    store.create_run(make_run(), ["b", "a"])
    store.commit(
        Batch(
            task_runs=[
                TaskRunRecord("r1", "dyn_1", "queued"),
                TaskRunRecord("r1", "dyn_0", "queued"),
            ]
        )
    )
    assert [t.task_id for t in store.task_runs("r1")] == ["b", "a", "dyn_1", "dyn_0"]


def test_attempts_follow_task_creation_order(store: SqlStore) -> None:
    store.create_run(make_run(), ["z", "a"])
    store.commit(
        Batch(
            attempts=[
                AttemptRecord("r1", "a", 2, "success"),
                AttemptRecord("r1", "z", 1, "success"),
                AttemptRecord("r1", "a", 1, "failed"),
            ]
        )
    )
    assert [(a.task_id, a.attempt) for a in store.attempts("r1")] == [("z", 1), ("a", 1), ("a", 2)]


def test_events_come_back_in_commit_order(store: SqlStore) -> None:
    store.create_run(make_run("r1"), ["a"])
    store.create_run(make_run("r2"), ["a"])
    expected = []
    for i in range(30):
        # Decreasing timestamps: the order is the commit order, not the clock's.
        mine = EventRecord("r1", "a" if i % 2 else None, f"s{i}", f"s{i + 1}", 100.0 - i, i)
        other = EventRecord("r2", "a", "x", "y", float(i))
        store.commit(Batch(events=[mine, other] if i % 3 else [other, mine]))
        expected.append(mine)
    assert store.events("r1") == expected
    assert len(store.events("r2")) == 30
    assert store.events("nope") == []


def test_output_is_replaced_on_upsert(store: SqlStore) -> None:
    store.create_run(make_run(), ["a"])
    first = OutputRef("r1", "a", "inline", "json", 2, "00" * 32, data=b"{}")
    second = OutputRef("r1", "a", "file", "parquet", 10, "11" * 32, uri="s3://b/k.parquet")
    store.commit(Batch(outputs=[first]))
    store.commit(Batch(outputs=[second]))
    assert store.outputs("r1") == {"a": second}


def test_a_none_output_is_no_row_and_reads_back_for_a_succeeded_task(
    store: SqlStore, backend: Backend
) -> None:
    store.create_run(make_run(), ["a", "b", "c"])
    none = OutputRef("r1", "a", "inline", "none", 0, hashlib.sha256(b"").hexdigest(), data=b"")
    kept = OutputRef("r1", "c", "inline", "json", 1, "11" * 32, data=b"1")
    store.commit(
        Batch(
            task_runs=[TaskRunRecord("r1", t, "success", 1, 1.0, 2.0) for t in ("a", "c")],
            outputs=[none, kept],
        )
    )
    # "b" is pending: no output; "a" returned None: read back, though no row holds it.
    assert store.outputs("r1") == {"a": none, "c": kept}
    assert backend.query("SELECT task_id FROM outputs") == [("c",)]


def test_a_none_output_replaces_an_earlier_success_s_row(store: SqlStore) -> None:
    # `retry --from a`: a returned 1 the first time and None now.
    store.create_run(make_run(), ["a"])
    store.commit(
        Batch(
            task_runs=[TaskRunRecord("r1", "a", "success", 1, 1.0, 2.0)],
            outputs=[OutputRef("r1", "a", "inline", "json", 1, "11" * 32, data=b"1")],
        )
    )
    none = OutputRef("r1", "a", "inline", "none", 0, hashlib.sha256(b"").hexdigest(), data=b"")
    store.commit(
        Batch(task_runs=[TaskRunRecord("r1", "a", "success", 2, 3.0, 4.0)], outputs=[none])
    )
    assert store.outputs("r1") == {"a": none}


def test_list_runs_newest_first_with_filter_and_limit(store: SqlStore) -> None:
    store.create_run(make_run("r_old", created_at=1.0), [])
    store.create_run(make_run("r_b", pipeline="other", created_at=5.0), [])
    store.create_run(make_run("r_a", created_at=5.0), [])  # same time: run_id breaks the tie
    store.create_run(make_run("r_new", created_at=9.0), [])

    assert [r.run_id for r in store.list_runs()] == ["r_new", "r_b", "r_a", "r_old"]
    assert [r.run_id for r in store.list_runs(limit=2)] == ["r_new", "r_b"]
    assert [r.run_id for r in store.list_runs(pipeline="churn")] == ["r_new", "r_a", "r_old"]
    assert [r.run_id for r in store.list_runs(pipeline="churn", limit=1)] == ["r_new"]
    assert store.list_runs(pipeline="absent") == []
    assert store.list_runs()[0] == make_run("r_new", created_at=9.0)


def test_get_run_of_unknown_run_raises_run_not_found(store: SqlStore) -> None:
    with pytest.raises(RunNotFound) as info:
        store.get_run("nope")
    assert str(info.value) == (
        f"no run 'nope' in the store at {store.url}; see `stageflow runs list`"
    )


def test_claim_run_sets_the_owner(store: SqlStore) -> None:
    store.create_run(make_run(), [])
    epoch = store.claim_run(
        "r1",
        owner="worker-1:1234",
        expected_epoch=0,
        host="worker-1",
        pid=1234,
        started_at=50.5,
        now=60.25,
        ttl=15.0,
    )
    run = store.get_run("r1")
    assert (run.owner_host, run.owner_pid, run.owner_started_at, run.heartbeat_at) == (
        "worker-1",
        1234,
        50.5,
        60.25,
    )
    assert (epoch, run.lease_owner, run.lease_epoch, run.lease_expires_at) == (
        1,
        "worker-1:1234",
        1,
        75.25,
    )
    store.claim_run(
        "r1",
        owner="worker-2:99",
        expected_epoch=1,
        host="worker-2",
        pid=99,
        started_at=70.0,
        now=71.0,
        ttl=15.0,
    )
    assert store.get_run("r1").owner_host == "worker-2"
    assert store.get_run("r1").state == "queued"


def test_claim_run_of_unknown_run_raises_run_not_found(store: SqlStore) -> None:
    with pytest.raises(RunNotFound, match="no run 'ghost'"):
        store.claim_run(
            "ghost",
            owner="h:1",
            expected_epoch=0,
            host="h",
            pid=1,
            started_at=0.0,
            now=0.0,
            ttl=15.0,
        )


def test_a_commit_failing_midway_leaves_nothing(store: SqlStore) -> None:
    store.create_run(make_run(), ["a"])
    bad = Batch(
        runs=[RunUpdate("r1", state="running")],
        task_runs=[TaskRunRecord("r1", "a", "running", 1, 1.0)],
        attempts=[AttemptRecord("r1", "a", 1, "running", 1.0)],
        events=[EventRecord("r1", "a", "queued", "running", 1.0, 1)],
        # Written after the rows above: the CHECK on kind fails the commit midway.
        outputs=[OutputRef("r1", "a", cast(Any, "nowhere"), "json", 1, "0" * 64, data=b"1")],
    )
    with pytest.raises(Exception):  # the driver's integrity error, re-raised
        store.commit(bad)

    assert store.get_run("r1").state == "queued"
    assert store.task_runs("r1") == [TaskRunRecord("r1", "a", "pending")]
    assert store.attempts("r1") == []
    assert store.events("r1") == []
    assert store.outputs("r1") == {}
    # The connection is usable afterwards.
    store.commit(Batch(events=[EventRecord("r1", "a", "pending", "queued", 3.0)]))
    assert len(store.events("r1")) == 1


def test_rows_of_an_unknown_run_are_refused(store: SqlStore) -> None:
    with pytest.raises(Exception):  # foreign key
        store.commit(Batch(task_runs=[TaskRunRecord("ghost", "a", "queued")]))
    assert store.task_runs("ghost") == []


def test_close_is_idempotent(backend: Backend) -> None:
    store = backend.open()
    store.close()
    store.close()


def test_store_is_a_context_manager(backend: Backend) -> None:
    with backend.open() as store:
        store.create_run(make_run(), ["a"])
    with backend.open() as store:
        assert store.get_run("r1") == make_run()


def test_concurrent_openers_of_a_fresh_database_all_succeed(backend: Backend) -> None:
    errors: list[BaseException] = []
    stores: list[SqlStore] = []

    def open_one() -> None:
        try:
            stores.append(backend.open())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    assert len(stores) == 4


def test_two_sqlite_stores_on_one_file_see_each_others_commits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with (
        contextlib.closing(open_store(url, tmp_path)) as writer,
        contextlib.closing(open_store(url, tmp_path)) as reader,
    ):
        writer.create_run(make_run(), ["a"])
        assert reader.get_run("r1").state == "queued"
        writer.commit(Batch(task_runs=[TaskRunRecord("r1", "a", "success", 1, 1.0, 2.0)]))
        assert reader.task_runs("r1")[0].state == "success"
        reader.commit(Batch(runs=[RunUpdate("r1", state="success", ended_at=3.0)]))
        assert writer.get_run("r1").state == "success"
    raw = sqlite3.connect(tmp_path / "shared.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()


def test_create_run_saves_its_pipeline_version_in_the_same_transaction(store: SqlStore) -> None:
    first = PipelineRecord("churn", "v1", '{"name":"churn"}', 1.0)
    store.create_run(make_run("r1"), ["a"], pipeline=first)
    assert store.get_pipeline("churn", "v1") == first
    # The version exists already: kept as it was (idempotent, as save_pipeline).
    store.create_run(make_run("r2"), ["a"], pipeline=replace(first, created_at=2.0))
    assert store.get_pipeline("churn", "v1") == first
    # A run that cannot be created leaves no new version behind.
    with pytest.raises(RunIdTaken, match="'r1' is taken"):
        store.create_run(make_run("r1"), ["a"], pipeline=PipelineRecord("churn", "v2", "{}", 3.0))
    with pytest.raises(StoreError):
        store.get_pipeline("churn", "v2")


def test_a_batch_writes_run_records_the_last_one_winning(store: SqlStore) -> None:
    from stageflow.runtime.lineage import load_record
    from stageflow.runtime.store import RecordText

    store.create_run(make_run("r1"), ["a"])
    store.commit(Batch(records=[RecordText("r1", '{"state": "running"}', 1.0)]))
    assert load_record(store, "r1") == {"state": "running"}
    store.commit(
        Batch(
            records=[
                RecordText("r1", '{"state": "x"}', 2.0),
                RecordText("r1", '{"state": "success"}', 3.0),
            ]
        )
    )
    assert load_record(store, "r1") == {"state": "success"}
