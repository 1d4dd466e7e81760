"""Leases in the store, on every backend: compare-and-set claims, renewals, fencing.

``claim_run`` takes a run's lease only if its epoch is still the one the claimer
read, so of claimers that read the same epoch exactly one wins, and a ``Batch``
fenced with an epoch that is no longer the run's is refused whole (``LeaseLost``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from stageflow.errors import LeaseLost, RunNotFound, RunOwned
from stageflow.runtime.store import (
    AttemptRecord,
    Batch,
    EventRecord,
    Fence,
    RunRecord,
    RunUpdate,
    SqlStore,
    TaskRunRecord,
    open_store,
)
from stageflow.runtime.store.migrations import MIGRATIONS, migrate
from support.postgres import postgres_schema, require_postgres

if TYPE_CHECKING:
    from conftest import Backend


def make_run(store: SqlStore, run_id: str = "r1") -> None:
    store.create_run(RunRecord(run_id, "p", "v1", "queued", {}, 1.0), ["a", "b"])


def claim(
    store: SqlStore, owner: str, expected: int, now: float = 100.0, run_id: str = "r1"
) -> int:
    host, _, pid = owner.partition(":")
    return store.claim_run(
        run_id,
        owner=owner,
        expected_epoch=expected,
        host=host,
        pid=int(pid),
        started_at=1.0,
        now=now,
        ttl=15.0,
    )


def work(run_id: str, fence: Fence | None, task: str = "a") -> Batch:
    """A batch a run's process commits: a task run, its attempt, an event and a run change."""
    batch = Batch(
        task_runs=[TaskRunRecord(run_id, task, "running", 1, 5.0)],
        attempts=[AttemptRecord(run_id, task, 1, "running", 5.0)],
        events=[EventRecord(run_id, task, "queued", "running", 5.0, 1)],
        runs=[RunUpdate(run_id, state="running", started_at=5.0)],
    )
    if fence is not None:
        batch.fences[run_id] = fence
    return batch


def test_a_new_run_has_no_lease(store: SqlStore) -> None:
    make_run(store)
    run = store.get_run("r1")
    assert (run.lease_owner, run.lease_epoch, run.lease_expires_at, run.priority) == (
        None,
        0,
        None,
        0,
    )


def test_a_claim_sets_owner_epoch_and_expiry(store: SqlStore) -> None:
    make_run(store)
    assert claim(store, "host-a:10", 0, now=100.0) == 1
    run = store.get_run("r1")
    assert (run.lease_owner, run.lease_epoch, run.lease_expires_at) == ("host-a:10", 1, 115.0)
    assert (run.owner_host, run.owner_pid, run.heartbeat_at) == ("host-a", 10, 100.0)


def test_of_two_claimers_with_the_same_epoch_exactly_one_wins(store: SqlStore) -> None:
    make_run(store)
    assert claim(store, "host-a:10", 0) == 1
    with pytest.raises(RunOwned) as info:
        claim(store, "host-b:20", 0)
    assert "host-a:10" in str(info.value)
    assert info.value.owner == "host-a:10"
    assert store.get_run("r1").lease_owner == "host-a:10"
    # A claimer that read the new epoch takes it over.
    assert claim(store, "host-b:20", 1, now=200.0) == 2
    assert store.get_run("r1").lease_owner == "host-b:20"


def test_concurrent_claimers_on_their_own_connections_one_wins(backend: Backend) -> None:
    with backend.open() as store:
        make_run(store)
    stores = [backend.open() for _ in range(8)]
    start = threading.Barrier(len(stores))
    won: list[int] = []
    lost: list[str | None] = []

    def claimer(k: int) -> None:
        start.wait()
        try:
            won.append(claim(stores[k], f"host:{k}", 0))
        except RunOwned as exc:
            lost.append(exc.owner)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in stores:
        s.close()
    with backend.open() as store:
        winner = store.get_run("r1").lease_owner
    assert won == [1]
    assert len(lost) == len(stores) - 1
    assert set(lost) == {winner}


def test_claim_of_an_unknown_run_raises_run_not_found(store: SqlStore) -> None:
    with pytest.raises(RunNotFound, match="no run 'ghost'"):
        claim(store, "host:1", 0, run_id="ghost")


def test_renew_extends_only_the_current_epoch(store: SqlStore) -> None:
    make_run(store)
    claim(store, "host-a:10", 0, now=100.0)
    assert store.renew_lease("r1", 1, 110.0, 15.0)
    run = store.get_run("r1")
    assert (run.lease_expires_at, run.heartbeat_at) == (125.0, 110.0)
    assert not store.renew_lease("r1", 0, 120.0, 15.0)
    assert not store.renew_lease("ghost", 1, 120.0, 15.0)
    assert store.get_run("r1").lease_expires_at == 125.0


def test_a_fenced_commit_renews_the_lease(store: SqlStore) -> None:
    make_run(store)
    claim(store, "host-a:10", 0, now=100.0)
    store.commit(work("r1", Fence(1, 105.0, 120.0)))
    run = store.get_run("r1")
    assert (run.state, run.lease_expires_at, run.heartbeat_at) == ("running", 120.0, 105.0)
    assert [t.state for t in store.task_runs("r1")] == ["running", "pending"]


def test_a_batch_fenced_with_a_stale_epoch_is_refused_and_writes_nothing(
    store: SqlStore,
) -> None:
    make_run(store)
    claim(store, "host-a:10", 0, now=100.0)
    claim(store, "host-b:20", 1, now=130.0)  # taken over
    before = (store.get_run("r1"), store.task_runs("r1"), store.attempts("r1"), store.events("r1"))

    with pytest.raises(LeaseLost) as info:
        store.commit(work("r1", Fence(1, 131.0, 146.0)))

    assert info.value.owner == "host-b:20"
    assert "run 'r1' was taken over by host-b:20 (lease epoch 2" in str(info.value)
    after = (store.get_run("r1"), store.task_runs("r1"), store.attempts("r1"), store.events("r1"))
    assert after == before
    # The new owner's commits go through.
    store.commit(work("r1", Fence(2, 132.0, 147.0), task="b"))
    assert [t.state for t in store.task_runs("r1")] == ["pending", "running"]


def test_a_fence_for_an_unknown_run_raises_run_not_found(store: SqlStore) -> None:
    with pytest.raises(RunNotFound):
        store.commit(
            Batch(
                events=[EventRecord("ghost", None, None, "running", 1.0)],
                fences={"ghost": Fence(1, 1.0, 16.0)},
            )
        )


def test_the_final_commit_clears_the_expiry(store: SqlStore) -> None:
    make_run(store)
    claim(store, "host-a:10", 0, now=100.0)
    store.commit(
        Batch(
            runs=[RunUpdate("r1", state="success", ended_at=110.0)],
            fences={"r1": Fence(1, 110.0, None)},
        )
    )
    run = store.get_run("r1")
    assert (run.state, run.lease_owner, run.lease_epoch, run.lease_expires_at) == (
        "success",
        "host-a:10",
        1,
        None,
    )


def test_group_commit_keeps_the_later_fence() -> None:
    first = work("r1", Fence(1, 10.0, 25.0))
    first.extend(Batch(fences={"r1": Fence(1, 12.0, None)}))
    assert first.fences == {"r1": Fence(1, 12.0, None)}
    assert not Batch(fences={"r1": Fence(1, 1.0, 2.0)})  # a fence alone commits nothing


def test_unfinished_runs_recorded_before_leases_get_one_from_their_heartbeat(
    backend: Backend,
) -> None:
    """Schema 6 gives an unfinished run of schema 5 the lease its last heartbeat gave."""
    with backend.raw() as conn:
        from stageflow.runtime.store.dialect import POSTGRESQL, SQLITE

        dialect = SQLITE if backend.name == "sqlite" else POSTGRESQL
        cur = conn.cursor()
        cur.execute(dialect.begin)
        cur.execute("CREATE TABLE stageflow_schema (version INTEGER NOT NULL)")
        cur.execute("INSERT INTO stageflow_schema (version) VALUES (5)")
        for step in MIGRATIONS[:5]:
            for statement in step.statements(dialect):
                cur.execute(statement)
        insert = dialect.sql(
            "INSERT INTO runs (run_id, pipeline, pipeline_version, state, params_json, "
            "created_at, owner_host, owner_pid, heartbeat_at) VALUES (?, 'p', 'v', ?, '{}', "
            "1.0, 'h', 7, 50.0)"
        )
        for run_id, state in (("old", "running"), ("done", "success")):
            cur.execute(insert, (run_id, state))
        cur.execute("COMMIT")
        assert migrate(conn, dialect, backend.url) == 5
    with backend.open() as store:
        old, done = store.get_run("old"), store.get_run("done")
    assert (old.lease_owner, old.lease_epoch, old.lease_expires_at) == ("h:7", 0, 65.0)
    assert (done.lease_owner, done.lease_expires_at) == (None, None)


# -- the queue: candidates and hand-backs -------------------------------------------------


def test_claimable_runs_are_queued_or_expired_in_priority_then_age_order(store: SqlStore) -> None:
    runs = [
        RunRecord("old-low", "p", "v1", "queued", {}, 1.0),
        RunRecord("new-high", "p", "v1", "queued", {}, 3.0, priority=5),
        RunRecord("mid-low", "p", "v1", "queued", {}, 2.0),
        RunRecord("held", "p", "v1", "queued", {}, 0.5, lease_owner="h:1", lease_expires_at=200.0),
        RunRecord("done", "p", "v1", "success", {}, 0.1),
    ]
    for run in runs:
        store.create_run(run, ["a"])
    claim(store, "host-a:10", 0, now=100.0, run_id="mid-low")  # live until 115
    ids = [r.run_id for r in store.claimable_runs(110.0, 10)]
    assert ids == ["new-high", "old-low"]  # held and claimed ones are live; done is over
    ids = [r.run_id for r in store.claimable_runs(116.0, 10)]
    assert ids == ["new-high", "old-low", "mid-low"]  # its lease expired: a takeover
    assert [r.run_id for r in store.claimable_runs(116.0, 1)] == ["new-high"]


def test_release_lease_moves_the_epoch_on_and_expires_the_lease(store: SqlStore) -> None:
    make_run(store)
    assert claim(store, "host-a:10", 0, now=100.0) == 1
    assert not store.release_lease("r1", 0, 101.0)  # a stale epoch changes nothing
    assert store.release_lease("r1", 1, 101.0)
    run = store.get_run("r1")
    assert (run.lease_epoch, run.lease_expires_at) == (2, 101.0)
    assert [r.run_id for r in store.claimable_runs(101.0, 10)] == ["r1"]  # any worker now
    with pytest.raises(LeaseLost):  # the releasing process can commit nothing more
        store.commit(work("r1", Fence(1, 102.0, 117.0)))
    assert claim(store, "host-b:20", 2, now=102.0) == 3


# -- claim_next: pick and claim in one transaction ------------------------------------------


def claim_next(
    store: SqlStore, owner: str, now: float, exclude: tuple[str, ...] = ()
) -> tuple[str, int] | None:
    host, _, pid = owner.partition(":")
    got = store.claim_next(
        owner=owner, host=host, pid=int(pid), now=now, ttl=15.0, started_at=1.0, exclude=exclude
    )
    return None if got is None else (got[0].run_id, got[1])


def test_claim_next_takes_runs_in_priority_then_age_order(store: SqlStore) -> None:
    runs = [
        RunRecord("old-low", "p", "v1", "queued", {}, 1.0),
        RunRecord("new-high", "p", "v1", "queued", {}, 3.0, priority=5),
        RunRecord("mid-low", "p", "v1", "queued", {}, 2.0),
        RunRecord("held", "p", "v1", "queued", {}, 0.5, lease_owner="h:1", lease_expires_at=200.0),
        RunRecord("done", "p", "v1", "success", {}, 0.1),
        RunRecord("paused", "p", "v1", "paused", {}, 0.2),
    ]
    for run in runs:
        store.create_run(run, ["a"])

    taken = [claim_next(store, "host-a:10", 100.0) for _ in range(4)]

    assert taken == [("new-high", 1), ("old-low", 1), ("mid-low", 1), None]
    run = store.get_run("new-high")
    assert (run.lease_owner, run.lease_epoch, run.lease_expires_at) == ("host-a:10", 1, 115.0)
    assert (run.owner_host, run.owner_pid, run.owner_started_at, run.heartbeat_at) == (
        "host-a",
        10,
        1.0,
        100.0,
    )
    assert run.state == "queued"  # claimed, not started: the runner starts it


def test_claim_next_returns_the_run_as_it_stood_in_the_queue(store: SqlStore) -> None:
    make_run(store)
    claim(store, "host-a:10", 0, now=100.0)
    got = store.claim_next(owner="host-b:20", host="host-b", pid=20, now=120.0, ttl=15.0)
    assert got is not None
    before, epoch = got
    assert (before.lease_owner, before.lease_epoch, epoch) == ("host-a:10", 1, 2)  # taken from a
    assert store.get_run("r1").lease_owner == "host-b:20"


def test_claim_next_passes_over_excluded_runs(store: SqlStore) -> None:
    for k, run_id in enumerate(["r1", "r2", "r3"]):
        store.create_run(RunRecord(run_id, "p", "v1", "queued", {}, float(k)), ["a"])
    assert claim_next(store, "host-a:10", 100.0, exclude=("r1", "r2")) == ("r3", 1)
    assert claim_next(store, "host-a:10", 100.0, exclude=("r1", "r2")) is None
    assert claim_next(store, "host-a:10", 100.0, exclude=("r2",)) == ("r1", 1)
    assert claim_next(store, "host-a:10", 100.0) == ("r2", 1)


def test_a_claimed_run_that_never_started_returns_to_the_queue_when_its_lease_expires(
    store: SqlStore,
) -> None:
    make_run(store)
    assert claim_next(store, "host-a:10", 100.0) == ("r1", 1)  # its worker dies here

    assert claim_next(store, "host-b:20", 114.9) is None  # a's lease is live until 115
    assert claim_next(store, "host-b:20", 115.0) == ("r1", 2)  # expired: back in the queue

    run = store.get_run("r1")
    assert (run.state, run.lease_owner, run.lease_epoch) == ("queued", "host-b:20", 2)
    with pytest.raises(LeaseLost):  # the first claimer can commit nothing
        store.commit(work("r1", Fence(1, 116.0, 131.0)))


def test_claim_next_takes_over_a_running_run_whose_lease_expired(store: SqlStore) -> None:
    make_run(store)
    claim(store, "host-a:10", 0, now=100.0)
    store.commit(work("r1", Fence(1, 101.0, 116.0)))  # running, lease until 116
    assert claim_next(store, "host-b:20", 110.0) is None
    assert claim_next(store, "host-b:20", 117.0) == ("r1", 2)
    store.commit(
        Batch(
            runs=[RunUpdate("r1", state="success", ended_at=120.0)],
            fences={"r1": Fence(2, 120.0, None)},
        )
    )
    assert claim_next(store, "host-c:30", 1000.0) is None  # ended: never claimable again


def test_concurrent_claim_next_claims_each_run_exactly_once(backend: Backend) -> None:
    runs, claimers = 40, 6
    with backend.open() as store:
        for k in range(runs):
            store.create_run(RunRecord(f"r{k:02d}", "p", "v1", "queued", {}, float(k)), ["a"])
    stores = [backend.open() for _ in range(claimers)]
    start = threading.Barrier(claimers)
    won: dict[int, list[tuple[str, int]]] = {k: [] for k in range(claimers)}

    def claimer(k: int) -> None:
        start.wait()
        while (got := claim_next(stores[k], f"host:{k}", 100.0)) is not None:
            won[k].append(got)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()

    claimed = [run_id for k in won for run_id, _ in won[k]]
    assert sorted(claimed) == [f"r{k:02d}" for k in range(runs)]  # each once, none missed
    assert {epoch for k in won for _, epoch in won[k]} == {1}
    with backend.open() as store:
        for k, got in won.items():
            for run_id, _ in got:
                assert store.get_run(run_id).lease_owner == f"host:{k}"
            # Each claimer took its runs in queue order.
            assert [r for r, _ in got] == sorted(r for r, _ in got)


@pytest.mark.postgres
def test_claim_next_on_postgresql_skips_a_run_locked_by_another_transaction(
    tmp_path: Path,
) -> None:
    """A run whose row another transaction holds (a claimer, or its owner committing)
    is passed over at once (SKIP LOCKED), not waited for."""
    import psycopg

    require_postgres()
    with postgres_schema() as url:
        with open_store(url, tmp_path) as store:
            assert isinstance(store, SqlStore)
            for k, run_id in enumerate(["r1", "r2"]):
                store.create_run(RunRecord(run_id, "p", "v1", "queued", {}, float(k)), ["a"])
        got: list[tuple[str, int] | None] = []
        with psycopg.connect(url, autocommit=True) as conn, open_store(url, tmp_path) as store:
            assert isinstance(store, SqlStore)
            conn.execute("BEGIN")
            conn.execute("SELECT run_id FROM runs WHERE run_id = 'r1' FOR UPDATE")
            claimer = threading.Thread(target=lambda: got.append(claim_next(store, "h:1", 100.0)))
            claimer.start()
            claimer.join(10)
            done = not claimer.is_alive()
            conn.execute("ROLLBACK")
            claimer.join(10)
    assert done, "claim_next waited for the locked run"
    assert got == [("r2", 1)]


def test_an_idle_claim_next_on_sqlite_does_not_take_the_write_lock(tmp_path: Path) -> None:
    """A worker polls 20 times a second: with nothing claimable, ``claim_next`` reads
    and returns, while another connection holds the write lock, instead of waiting
    for it (the busy timeout) with ``BEGIN IMMEDIATE``."""
    import sqlite3
    import time

    from stageflow.runtime.store.dialect import SQLITE_BUSY_TIMEOUT_MS

    path = tmp_path / "store.db"
    with open_store(f"sqlite:///{path}", tmp_path) as store:
        assert isinstance(store, SqlStore)
        make_run(store, "held")
        assert claim_next(store, "host-a:10", 100.0) == ("held", 1)  # leased until 115
        writer = sqlite3.connect(path, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            start = time.monotonic()
            got = claim_next(store, "host-b:20", 110.0)
            took = time.monotonic() - start
            writer.execute("ROLLBACK")
        finally:
            writer.close()
    assert got is None
    assert took < SQLITE_BUSY_TIMEOUT_MS / 1000 / 20, f"claim_next waited {took:.2f}s"
