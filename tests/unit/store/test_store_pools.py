"""Global pools in the store, on every backend: sizes, compare-and-set slots, expiry.

A slot is taken by ONE transaction that counts live holdings and inserts only
below the pool's size; a holding is live while its run's lease is (same epoch,
not expired, run not final), so a slot held by a dead process comes back.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from stageflow.runtime.store import Batch, Fence, RunRecord, RunUpdate, SqlStore
from stageflow.runtime.store.base import PoolHolding, PoolRecord

if TYPE_CHECKING:
    from conftest import Backend

TTL = 15.0


def leased_run(store: SqlStore, run_id: str, now: float = 100.0) -> int:
    """A run claimed at ``now`` (lease until ``now + TTL``); its epoch."""
    store.create_run(RunRecord(run_id, "p", "v1", "running", {}, 1.0), ["a", "b"])
    return store.claim_run(
        run_id,
        owner="host:1",
        expected_epoch=0,
        host="host",
        pid=1,
        started_at=1.0,
        now=now,
        ttl=TTL,
    )


def take(
    store: SqlStore, run_id: str, task: str = "a", *, epoch: int = 1, now: float = 101.0
) -> bool:
    return store.acquire_pool_slot("lic", run_id, task, 1, epoch, now)


def test_pools_are_set_seeded_listed_and_removed(store: SqlStore) -> None:
    assert store.pools() == []
    store.set_pool("lic", 1, 10.0)
    store.seed_pools({"lic": 5, "etl": 4}, 11.0)  # an existing pool keeps its size
    assert store.pools() == [PoolRecord("etl", 4, 11.0), PoolRecord("lic", 1, 10.0)]
    store.set_pool("lic", 3, 12.0)
    assert [(p.name, p.slots) for p in store.pools()] == [("etl", 4), ("lic", 3)]
    assert store.remove_pool("etl") is True
    assert store.remove_pool("etl") is False
    assert [p.name for p in store.pools()] == ["lic"]


def test_slots_are_taken_up_to_the_size_and_come_back_on_release(store: SqlStore) -> None:
    store.set_pool("lic", 2, 1.0)
    for run_id in ("r1", "r2", "r3"):
        leased_run(store, run_id)
    assert take(store, "r1") is True
    assert take(store, "r2") is True
    assert take(store, "r3") is False  # full: nothing changed
    assert store.pool_holdings(101.0) == [
        PoolHolding("lic", "r1", "a", 1, 1, 101.0),
        PoolHolding("lic", "r2", "a", 1, 1, 101.0),
    ]
    store.release_pool_slot("lic", "r1", "a")
    store.release_pool_slot("lic", "r1", "a")  # twice: harmless
    assert take(store, "r3", now=102.0) is True
    assert [h.run_id for h in store.pool_holdings(102.0, "lic")] == ["r2", "r3"]


def test_a_pool_that_does_not_exist_gives_no_slot(store: SqlStore) -> None:
    leased_run(store, "r1")
    assert take(store, "r1") is False
    store.set_pool("lic", 0, 1.0)  # a pool of no slots holds everything back
    assert take(store, "r1") is False


def test_a_slot_whose_run_lease_expired_comes_back(store: SqlStore) -> None:
    store.set_pool("lic", 1, 1.0)
    leased_run(store, "dead", now=100.0)  # its process stopped renewing at 100
    leased_run(store, "live", now=110.0)
    assert take(store, "dead", now=101.0) is True
    assert take(store, "live", now=114.0) is False  # the lease lasts until 115
    assert take(store, "live", now=115.5) is True
    assert store.pool_holdings(115.5) == [PoolHolding("lic", "live", "a", 1, 1, 115.5)]
    # The dead holding was deleted as the slot was taken: none left behind.
    assert len(store._fetchall("SELECT run_id FROM pool_slots", ())) == 1


def test_a_slot_of_a_run_taken_over_comes_back_at_once(store: SqlStore) -> None:
    store.set_pool("lic", 1, 1.0)
    leased_run(store, "r1")
    leased_run(store, "r2")
    assert take(store, "r1", epoch=1) is True
    assert take(store, "r2") is False
    # Another process takes r1 over: its epoch moves to 2, the epoch-1 holding is dead.
    store.claim_run(
        "r1", owner="other:2", expected_epoch=1, host="other", pid=2, started_at=1.0,
        now=102.0, ttl=TTL,
    )  # fmt: skip
    assert take(store, "r2", now=102.0) is True


def test_a_slot_of_a_run_that_ended_comes_back(store: SqlStore) -> None:
    store.set_pool("lic", 1, 1.0)
    leased_run(store, "r1")
    leased_run(store, "r2")
    assert take(store, "r1") is True
    batch = Batch(runs=[RunUpdate("r1", state="failed", ended_at=102.0)])
    batch.fences["r1"] = Fence(1, 102.0, 140.0)  # a final state with a lease still set
    store.commit(batch)
    assert take(store, "r2", now=103.0) is True


def test_a_new_attempt_replaces_its_task_own_holding(store: SqlStore) -> None:
    store.set_pool("lic", 1, 1.0)
    leased_run(store, "r1")
    assert take(store, "r1") is True
    # Its release was lost (the store failed): the next attempt still gets the slot.
    assert store.acquire_pool_slot("lic", "r1", "a", 2, 1, 102.0) is True
    assert store.pool_holdings(102.0) == [PoolHolding("lic", "r1", "a", 2, 1, 102.0)]


def test_removing_a_pool_removes_its_holdings(store: SqlStore) -> None:
    store.set_pool("lic", 1, 1.0)
    leased_run(store, "r1")
    assert take(store, "r1") is True
    assert store.remove_pool("lic") is True
    assert store.pool_holdings(101.0) == []
    store.set_pool("lic", 1, 2.0)
    leased_run(store, "r2")
    assert take(store, "r2") is True


def test_concurrent_acquirers_never_exceed_the_size(backend: Backend, store: SqlStore) -> None:
    """Eight connections race for one slot, twenty times: exactly one wins each round
    (on PostgreSQL the pool's row lock serialises them; without it, several of
    them counted no holding and inserted)."""
    store.set_pool("lic", 1, 1.0)
    racers = 8
    for k in range(racers):
        leased_run(store, f"r{k}")
    stores = [backend.open() for _ in range(racers)]
    try:
        for round_ in range(20):
            barrier = threading.Barrier(racers)
            won: list[int] = []
            now = 101.0 + round_ * 0.01

            def race(
                k: int, attempt: int, now: float, won: list[int], gate: threading.Barrier
            ) -> None:
                gate.wait()
                if stores[k].acquire_pool_slot("lic", f"r{k}", "a", attempt, 1, now):
                    won.append(k)

            threads = [
                threading.Thread(target=race, args=(k, round_ + 1, now, won, barrier))
                for k in range(racers)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(won) == 1, f"round {round_}: {won} all took the one slot"
            assert [h.run_id for h in store.pool_holdings(now)] == [f"r{won[0]}"]
            store.release_pool_slot("lic", f"r{won[0]}", "a")
    finally:
        for s in stores:
            s.close()
