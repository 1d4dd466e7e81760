"""Schema step 12 on every backend: the workers table (register, heartbeat, remove,
read the live ones) and what the service's metrics read from the store: resource
requests in use, task run counts, and the histograms of attempt durations, attempt
queue waits and run claim latencies (``store``/``backend`` fixtures)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from stageflow.runtime.store import (
    AttemptRecord,
    Batch,
    RunRecord,
    RunUpdate,
    SqlStore,
    TaskRunRecord,
)
from stageflow.runtime.store import migrations as migrations_module
from stageflow.runtime.store.base import Histogram, WorkerRecord
from stageflow.runtime.store.migrations import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from conftest import Backend


def make_worker(
    owner: str = "w-a",
    *,
    host: str = "node-1",
    pid: int = 4242,
    started_at: float = 100.0,
    heartbeat_at: float = 110.0,
    capacity: dict[str, float] | None = None,
    concurrency: int = 4,
) -> WorkerRecord:
    return WorkerRecord(
        owner=owner,
        host=host,
        pid=pid,
        started_at=started_at,
        heartbeat_at=heartbeat_at,
        capacity={"cpu": 8.0, "memory_gb": 32.0} if capacity is None else capacity,
        concurrency=concurrency,
    )


def make_run(
    run_id: str,
    *,
    pipeline: str = "churn",
    state: str = "running",
    created_at: float = 100.0,
    started_at: float | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline=pipeline,
        pipeline_version="v1",
        state=state,
        params={},
        created_at=created_at,
        started_at=started_at,
    )


def by_labels(series: list[Histogram]) -> list[Histogram]:
    """The store promises no order of the series: sort them by their labels."""
    return sorted(series, key=lambda h: h.labels)


# -- workers ---------------------------------------------------------------------------


def test_a_registered_worker_reads_back_with_every_field(store: SqlStore) -> None:
    worker = WorkerRecord(
        owner="worker-node-1-4242",
        host="node-1.example",
        pid=4242,
        started_at=100.25,
        heartbeat_at=130.5,
        capacity={"cpu": 16.0, "memory_gb": 62.5, "gpu": 2.0, "tpu_v5": 4.0},
        concurrency=3,
    )
    store.register_worker(worker)
    assert store.workers(0.0) == [worker]
    (read,) = store.workers(0.0)
    assert read.capacity == {"cpu": 16.0, "memory_gb": 62.5, "gpu": 2.0, "tpu_v5": 4.0}
    assert all(type(v) is float for v in read.capacity.values())
    assert (type(read.pid), type(read.concurrency)) == (int, int)


def test_an_empty_capacity_and_a_pid_beyond_32_bits_round_trip(store: SqlStore) -> None:
    worker = make_worker(capacity={}, pid=5_000_000_000, concurrency=1)
    store.register_worker(worker)
    assert store.workers(0.0) == [worker]


def test_no_workers_at_first(store: SqlStore) -> None:
    assert store.workers(0.0) == []


def test_workers_are_listed_by_owner(store: SqlStore) -> None:
    b = make_worker("w-b", host="node-2")
    c = make_worker("w-c", host="node-3")
    a = make_worker("w-a", host="node-1")
    for worker in (b, c, a):
        store.register_worker(worker)
    assert store.workers(0.0) == [a, b, c]


def test_workers_since_leaves_out_a_worker_whose_heartbeat_is_older(store: SqlStore) -> None:
    fresh = make_worker("w-fresh", heartbeat_at=200.0)
    stale = make_worker("w-stale", heartbeat_at=150.0)
    store.register_worker(fresh)
    store.register_worker(stale)
    assert store.workers(100.0) == [fresh, stale]
    assert store.workers(150.5) == [fresh]
    assert store.workers(150.0) == [fresh, stale]  # a heartbeat at ``since`` counts
    assert store.workers(200.0) == [fresh]
    assert store.workers(200.5) == []


def test_beat_worker_moves_the_heartbeat_on(store: SqlStore) -> None:
    worker = make_worker("w-a", heartbeat_at=110.0)
    other = make_worker("w-b", heartbeat_at=110.0)
    store.register_worker(worker)
    store.register_worker(other)
    assert store.workers(120.0) == []
    assert store.beat_worker("w-a", 125.0) is True
    assert store.workers(120.0) == [replace(worker, heartbeat_at=125.0)]
    # only the heartbeat changes, and only the named worker's
    assert store.workers(0.0) == [replace(worker, heartbeat_at=125.0), other]
    assert store.beat_worker("w-a", 140.5) is True
    assert store.workers(0.0) == [replace(worker, heartbeat_at=140.5), other]


def test_beat_worker_of_an_unknown_owner_is_false_and_records_nothing(store: SqlStore) -> None:
    assert store.beat_worker("nobody", 125.0) is False
    assert store.workers(0.0) == []
    worker = make_worker("w-a")
    store.register_worker(worker)
    assert store.beat_worker("nobody", 125.0) is False
    assert store.workers(0.0) == [worker]


def test_registering_the_same_owner_again_replaces_its_record(
    store: SqlStore, backend: Backend
) -> None:
    store.register_worker(make_worker("w-a"))
    again = WorkerRecord(
        owner="w-a",
        host="node-9",
        pid=777,
        started_at=500.0,
        heartbeat_at=505.0,
        capacity={"cpu": 2.0, "gpu": 1.0},
        concurrency=1,
    )
    store.register_worker(again)
    assert store.workers(0.0) == [again]
    assert backend.query("SELECT COUNT(*) FROM workers") == [(1,)]


def test_remove_worker_removes_only_that_worker(store: SqlStore, backend: Backend) -> None:
    a = make_worker("w-a")
    b = make_worker("w-b")
    store.register_worker(a)
    store.register_worker(b)
    store.remove_worker("w-a")
    assert store.workers(0.0) == [b]
    assert store.beat_worker("w-a", 200.0) is False
    store.remove_worker("nobody")  # no record: nothing happens
    store.remove_worker("w-a")  # removed already: nothing happens
    assert store.workers(0.0) == [b]
    assert backend.query("SELECT owner FROM workers") == [("w-b",)]


def test_a_removed_worker_may_register_again(store: SqlStore) -> None:
    store.register_worker(make_worker("w-a", host="node-1"))
    store.remove_worker("w-a")
    back = make_worker("w-a", host="node-2", heartbeat_at=300.0)
    store.register_worker(back)
    assert store.workers(0.0) == [back]


# -- requests in use -------------------------------------------------------------------

CPU2 = '{"cpu": 2}'
GPU1 = '{"gpu": 1, "memory_gb": 8}'
ENDED = '{"cpu": 16}'
DONE = '{"cpu": 32}'


def test_requests_in_use_are_those_of_running_attempts_of_unfinished_runs(
    store: SqlStore,
) -> None:
    store.create_run(make_run("queued", state="queued"), ["a"])
    store.create_run(make_run("running", pipeline="fraud"), ["a", "b", "c", "d"])
    for finished in ("success", "failed", "cancelled"):
        store.create_run(make_run(finished, state=finished), ["a"])
    store.commit(
        Batch(
            attempts=[
                # in use: running, not ended, of a queued or running run, with a request
                AttemptRecord("queued", "a", 1, "running", 10.0, request_json=CPU2),
                AttemptRecord("running", "a", 1, "running", 11.0, request_json=GPU1),
                # left out: ended (its request stays on the row)
                AttemptRecord("running", "b", 1, "running", 12.0, request_json=ENDED),
                # left out: no request
                AttemptRecord("running", "c", 1, "running", 13.0),
                # left out: its run finished (the row was never ended)
                AttemptRecord("success", "a", 1, "running", 14.0, request_json=DONE),
                AttemptRecord("failed", "a", 1, "running", 15.0, request_json=DONE),
                AttemptRecord("cancelled", "a", 1, "running", 16.0, request_json=DONE),
            ]
        )
    )
    store.commit(Batch(attempts=[AttemptRecord("running", "b", 1, "success", 12.0, 20.0)]))
    assert store.attempts("running", "b")[0].request_json == ENDED
    assert sorted(store.requests_in_use()) == sorted([CPU2, GPU1])


def test_a_retried_task_holds_only_its_running_attempt(store: SqlStore) -> None:
    store.create_run(make_run("r1"), ["train"])
    store.commit(
        Batch(
            attempts=[
                AttemptRecord("r1", "train", 1, "failed", 10.0, 11.0, "x", request_json=ENDED),
                AttemptRecord("r1", "train", 2, "running", 12.0, request_json=GPU1),
            ]
        )
    )
    assert store.requests_in_use() == [GPU1]


def test_requests_in_use_follow_the_run_and_the_attempt_as_they_end(store: SqlStore) -> None:
    store.create_run(make_run("r1"), ["a", "b"])
    store.commit(
        Batch(
            attempts=[
                AttemptRecord("r1", "a", 1, "running", 10.0, request_json=CPU2),
                AttemptRecord("r1", "b", 1, "running", 10.0, request_json=GPU1),
            ]
        )
    )
    assert sorted(store.requests_in_use()) == sorted([CPU2, GPU1])
    store.commit(Batch(attempts=[AttemptRecord("r1", "a", 1, "success", 10.0, 12.0)]))
    assert store.requests_in_use() == [GPU1]
    store.commit(Batch(runs=[RunUpdate("r1", state="failed", ended_at=13.0)]))
    assert store.requests_in_use() == []


def test_no_requests_in_use_in_an_empty_store(store: SqlStore) -> None:
    assert store.requests_in_use() == []


def test_a_paused_runs_running_attempt_still_holds_its_request(store: SqlStore) -> None:
    """A pause starts no new task; running ones go on, holding what they asked for."""
    store.create_run(make_run("r1", state="paused"), ["train"])
    store.commit(
        Batch(attempts=[AttemptRecord("r1", "train", 1, "running", 10.0, request_json=GPU1)])
    )
    assert store.requests_in_use() == [GPU1]


# -- task run counts -------------------------------------------------------------------


def test_task_run_counts_by_pipeline_and_state(store: SqlStore) -> None:
    store.create_run(make_run("c1"), ["a", "b", "c"])
    store.create_run(make_run("c2", state="success"), ["a", "b"])
    store.create_run(make_run("f1", pipeline="fraud"), ["x", "y"])
    store.create_run(make_run("e1", pipeline="empty"), [])  # no task runs: no row
    store.commit(
        Batch(
            task_runs=[
                TaskRunRecord("c1", "a", "success", 1, 1.0, 2.0),
                TaskRunRecord("c1", "b", "running", 1, 3.0),
                TaskRunRecord("c2", "a", "success", 1, 1.0, 2.0),
                TaskRunRecord("c2", "b", "success", 0, 3.0, 3.0, None, "cached"),
                TaskRunRecord("f1", "x", "failed", 3, 1.0, 5.0, "boom"),
            ]
        )
    )
    assert sorted(store.task_run_counts()) == [
        ("churn", "pending", 1),
        ("churn", "running", 1),
        ("churn", "success", 3),
        ("fraud", "failed", 1),
        ("fraud", "pending", 1),
    ]


def test_no_task_run_counts_in_an_empty_store(store: SqlStore) -> None:
    assert store.task_run_counts() == []


# -- attempt durations -----------------------------------------------------------------

DURATION_BOUNDS = (1.0, 5.0, 10.0)


def test_attempt_durations_by_pipeline_and_task(store: SqlStore) -> None:
    store.create_run(make_run("c1", state="success"), ["prep", "train[0]", "train[1]"])
    store.create_run(make_run("c2", created_at=200.0), ["prep", "report"])
    store.create_run(make_run("f1", pipeline="fraud"), ["prep", "score"])
    store.commit(
        Batch(
            attempts=[
                AttemptRecord("c1", "prep", 1, "failed", 10.0, 10.5, "x"),  # 0.5
                AttemptRecord("c1", "prep", 2, "success", 20.0, 21.0),  # 1.0: on a bound
                AttemptRecord("c1", "train[0]", 1, "success", 30.0, 35.0),  # 5.0: on a bound
                AttemptRecord("c1", "train[1]", 1, "failed", 40.0, 52.0, "x"),  # 12.0
                AttemptRecord("c1", "train[1]", 2, "running", 60.0),  # not ended: left out
                AttemptRecord("c2", "prep", 1, "success", 0.0, 4.0),  # 4.0
                AttemptRecord("c2", "report", 1, "running", 70.0),  # not ended: no series
                AttemptRecord("f1", "prep", 1, "success", 100.0, 107.5),  # 7.5
                AttemptRecord("f1", "score", 1, "failed", None, 9.0, "x"),  # never started
            ]
        )
    )
    assert by_labels(store.attempt_durations(DURATION_BOUNDS)) == [
        Histogram(("churn", "prep"), 3, 5.5, [2, 3, 3]),
        Histogram(("churn", "train[0]"), 1, 5.0, [0, 1, 1]),
        Histogram(("churn", "train[1]"), 1, 12.0, [0, 0, 0]),
        Histogram(("fraud", "prep"), 1, 7.5, [0, 0, 1]),
    ]


def test_attempt_durations_with_one_bound_and_with_none(store: SqlStore) -> None:
    store.create_run(make_run("c1"), ["a"])
    store.commit(
        Batch(
            attempts=[
                AttemptRecord("c1", "a", 1, "failed", 10.0, 12.0, "x"),  # 2.0
                AttemptRecord("c1", "a", 2, "success", 20.0, 20.25),  # 0.25
            ]
        )
    )
    assert store.attempt_durations((2.0,)) == [Histogram(("churn", "a"), 2, 2.25, [2])]
    assert store.attempt_durations((1.0,)) == [Histogram(("churn", "a"), 2, 2.25, [1])]
    assert store.attempt_durations(()) == [Histogram(("churn", "a"), 2, 2.25, [])]


def test_attempt_durations_see_an_attempt_once_it_ends(store: SqlStore) -> None:
    store.create_run(make_run("c1"), ["a"])
    store.commit(Batch(attempts=[AttemptRecord("c1", "a", 1, "running", 10.0, queued_at=9.0)]))
    assert store.attempt_durations(DURATION_BOUNDS) == []
    # the final row as the runner writes it: the start is kept from the running row
    store.commit(Batch(attempts=[AttemptRecord("c1", "a", 1, "success", 10.0, 13.0)]))
    assert store.attempt_durations(DURATION_BOUNDS) == [
        Histogram(("churn", "a"), 1, 3.0, [0, 1, 1])
    ]


def test_no_histograms_in_an_empty_store(store: SqlStore) -> None:
    assert store.attempt_durations(DURATION_BOUNDS) == []
    assert store.attempt_queue_waits(DURATION_BOUNDS) == []
    assert store.claim_latencies(DURATION_BOUNDS) == []


# -- attempt queue waits ---------------------------------------------------------------

WAIT_BOUNDS = (0.5, 2.0)


def test_attempt_queue_waits_by_pipeline(store: SqlStore) -> None:
    store.create_run(make_run("c1", state="success"), ["prep", "train"])
    store.create_run(make_run("c2"), ["prep", "train"])
    store.create_run(make_run("f1", pipeline="fraud"), ["prep"])
    store.commit(
        Batch(
            attempts=[
                AttemptRecord("c1", "prep", 1, "failed", 10.0, 11.0, "x", queued_at=9.5),  # 0.5
                AttemptRecord("c1", "prep", 2, "success", 20.0, 21.0, queued_at=18.0),  # 2.0
                AttemptRecord("c1", "train", 1, "success", 30.0, 40.0, queued_at=25.0),  # 5.0
                AttemptRecord("c2", "prep", 1, "success", 5.0, 6.0),  # no queued_at: left out
                # started, not ended: its wait is over, so it counts (0.25)
                AttemptRecord("c2", "train", 1, "running", 60.0, queued_at=59.75),
                AttemptRecord("f1", "prep", 1, "success", 100.0, 101.0, queued_at=99.0),  # 1.0
                # still waiting (queued, not started): left out
                AttemptRecord("f1", "prep", 2, "pending", None, queued_at=120.0),
            ]
        )
    )
    assert by_labels(store.attempt_queue_waits(WAIT_BOUNDS)) == [
        Histogram(("churn",), 4, 7.75, [2, 3]),
        Histogram(("fraud",), 1, 1.0, [0, 1]),
    ]


def test_attempt_queue_waits_leave_out_attempts_without_a_queue_time(store: SqlStore) -> None:
    store.create_run(make_run("c1"), ["a"])
    store.commit(Batch(attempts=[AttemptRecord("c1", "a", 1, "success", 10.0, 11.0)]))
    assert store.attempt_durations(WAIT_BOUNDS) == [Histogram(("churn", "a"), 1, 1.0, [0, 1])]
    assert store.attempt_queue_waits(WAIT_BOUNDS) == []


# -- claim latencies -------------------------------------------------------------------


def test_claim_latencies_by_pipeline(store: SqlStore) -> None:
    bounds = (1.0, 10.0)
    store.create_run(make_run("c1", created_at=100.0, started_at=100.5), ["a"])  # 0.5
    store.create_run(make_run("c2", state="queued", created_at=200.0), ["a"])
    store.commit(Batch(runs=[RunUpdate("c2", state="running", started_at=210.0)]))  # 10.0
    store.create_run(make_run("c3", state="queued", created_at=300.0), ["a"])  # never started
    store.create_run(
        make_run("f1", pipeline="fraud", state="success", created_at=50.0, started_at=75.0),
        ["a"],
    )  # 25.0
    store.create_run(make_run("q1", pipeline="quiet", state="queued", created_at=1.0), [])
    assert by_labels(store.claim_latencies(bounds)) == [
        Histogram(("churn",), 2, 10.5, [1, 2]),
        Histogram(("fraud",), 1, 25.0, [0, 0]),
    ]


def test_a_run_counts_in_claim_latencies_once_it_starts(store: SqlStore) -> None:
    store.create_run(make_run("c1", state="queued", created_at=100.0), ["a"])
    assert store.claim_latencies((5.0,)) == []
    store.commit(Batch(runs=[RunUpdate("c1", state="running", started_at=103.0)]))
    assert store.claim_latencies((5.0,)) == [Histogram(("churn",), 1, 3.0, [1])]


# -- the migration ---------------------------------------------------------------------


def test_a_version_11_store_is_migrated_to_12_with_an_empty_workers_table(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MIGRATIONS[11].version == 12
    with monkeypatch.context() as patch:
        patch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS[:11])
        patch.setattr(migrations_module, "LATEST_VERSION", 11)
        with backend.open() as old:
            old.create_run(make_run("r1", created_at=100.0, started_at=102.0), ["a"])
            old.commit(Batch(attempts=[AttemptRecord("r1", "a", 1, "success", 102.0, 104.0)]))
    assert backend.query("SELECT version FROM stageflow_schema") == [(11,)]
    assert "workers" not in backend.tables()
    with backend.open() as store:
        assert store.workers(0.0) == []
        assert backend.query("SELECT COUNT(*) FROM workers") == [(0,)]
        # the runs of version 11 are measured as any other
        assert store.claim_latencies((2.0,)) == [Histogram(("churn",), 1, 2.0, [1])]
        assert store.attempt_durations((2.0,)) == [Histogram(("churn", "a"), 1, 2.0, [1])]
        worker = make_worker()
        store.register_worker(worker)
        assert store.workers(0.0) == [worker]
    assert "workers" in backend.tables()
    assert backend.query("SELECT version FROM stageflow_schema") == [(LATEST_VERSION,)]


# -- lease takeovers -----------------------------------------------------------------


def test_a_claim_of_a_run_another_owner_held_counts_as_a_takeover(store: SqlStore) -> None:
    store.create_run(make_run("q1"), ["a"])  # queued, nobody's: a first claim
    store.create_run(make_run("q2", pipeline="fraud"), ["a"])
    claim = {"host": "h", "pid": 1, "started_at": 1.0, "ttl": 15.0}
    epoch = store.claim_run("q1", owner="w1", expected_epoch=0, now=10.0, **claim)
    assert store.lease_takeovers() == []
    # w1 went silent: w2 takes the run over, then w3 from w2.
    epoch = store.claim_run("q1", owner="w2", expected_epoch=epoch, now=30.0, **claim)
    store.claim_run("q1", owner="w3", expected_epoch=epoch, now=50.0, **claim)
    store.claim_run("q2", owner="w1", expected_epoch=0, now=10.0, **claim)
    assert store.lease_takeovers() == [("churn", 2)]
