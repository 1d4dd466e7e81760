"""The committer and a store that stops answering (``StoreUnreachable``): the same
batch is tried again with backoff while the lease it last confirmed holds; once the
lease has expired it gives up as on a refused commit (``LeaseLost``), committing
nothing; a commit that broke off but went through is not applied twice. A fake
clock and a fake sleep: no waiting."""

from __future__ import annotations

import threading
from typing import cast

import pytest

from stageflow.errors import LeaseLost, StoreUnreachable
from stageflow.runtime.committer import Committer, retry_delay
from stageflow.runtime.store import Batch, EventRecord, Fence, RunRecord, Store


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FlakyStore:
    """Fails ``fail`` commits as unreachable (after applying them when ``applied``),
    then commits; ``get_run`` shows the lease the last applied fence set."""

    url = "postgresql://db/x"

    def __init__(self, fail: int, *, applied: bool = False) -> None:
        self.fail = fail
        self.applied = applied
        self.committed: list[Batch] = []
        self.lease = (1, 0.0)  # (epoch, expires_at) in the run's row

    def commit(self, batch: Batch) -> None:
        if self.fail:
            self.fail -= 1
            if self.applied:
                self._apply(batch)
            raise StoreUnreachable("lost the store at postgresql://db/x: server closed")
        self._apply(batch)

    def _apply(self, batch: Batch) -> None:
        self.committed.append(batch)
        fence = batch.fences["r"]
        self.lease = (fence.epoch, fence.expires_at or 0.0)

    def get_run(self, run_id: str) -> RunRecord:
        if self.fail:
            raise StoreUnreachable("lost the store at postgresql://db/x")
        epoch, expires = self.lease
        return RunRecord(
            run_id, "p", "v", "running", {}, 0.0, lease_epoch=epoch, lease_expires_at=expires
        )


def fenced(n: int, expires_at: float) -> Batch:
    return Batch(
        events=[EventRecord("r", f"t{n}", "running", "success", float(n))],
        fences={"r": Fence(1, float(n), expires_at)},
    )


def test_retry_delay_doubles_up_to_its_cap() -> None:
    assert [retry_delay(k) for k in (1, 2, 3, 4, 5, 6, 9)] == [0.25, 0.5, 1, 2, 4, 5, 5]
    assert retry_delay(9, cap=10) == 10


def test_an_unreachable_store_is_tried_again_until_it_answers() -> None:
    clock, store = Clock(100.0), FlakyStore(fail=3)
    committer = Committer(cast(Store, store), lease_until=115.0, clock=clock, sleep=clock.sleep)

    committer.submit(fenced(1, 116.0))
    committer.submit(fenced(2, 117.0))
    committer.close()

    assert clock.slept == [0.25, 0.5, 1.0]  # backoff between the tries
    events = [e.task_id for b in store.committed for e in b.events]
    assert events == ["t1", "t2"]  # each once, in order
    assert committer.lease_until == 117.0


def test_a_commit_that_went_through_before_the_connection_broke_is_not_applied_twice() -> None:
    clock, store = Clock(100.0), FlakyStore(fail=1, applied=True)
    committer = Committer(cast(Store, store), lease_until=115.0, clock=clock, sleep=clock.sleep)

    committer.submit(fenced(1, 116.0))
    committer.close()

    assert [e.task_id for b in store.committed for e in b.events] == ["t1"]
    assert committer.lease_until == 116.0


def test_a_store_unreachable_until_the_lease_expires_gives_the_run_up() -> None:
    clock, store = Clock(100.0), FlakyStore(fail=1000)
    committer = Committer(cast(Store, store), lease_until=103.0, clock=clock, sleep=clock.sleep)
    told = threading.Event()
    committer.on_error = told.set

    committer.submit(fenced(1, 116.0))

    assert told.wait(10)  # the loop is told at once: it stops the run's attempts
    with pytest.raises(LeaseLost) as info:
        committer.check()
    message = str(info.value)
    assert "run r: the store stayed unreachable" in message
    assert "lease expired" in message and "committed nothing more" in message
    assert clock.now == pytest.approx(103.0)  # tried until the lease expired, no longer
    store.fail = 0  # even if it answers now, nothing more is committed
    with pytest.raises(LeaseLost):
        committer.submit(fenced(2, 117.0))
    with pytest.raises(LeaseLost):
        committer.close()
    assert store.committed == []
