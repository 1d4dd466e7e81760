"""The committer and leases: a refused commit (``LeaseLost``) is re-raised as itself,
tells the loop at once and stops all later commits; committed fences move
``lease_until``, the expiry the loop trusts to start attempts."""

from __future__ import annotations

import threading
from typing import cast

import pytest

from stageflow.errors import LeaseLost
from stageflow.runtime.committer import Committer
from stageflow.runtime.store import Batch, EventRecord, Fence, Store


class FencedStore:
    """Commits batches until it is told the run was taken over."""

    url = "fake://store"

    def __init__(self) -> None:
        self.committed: list[Batch] = []
        self.taken_by: str | None = None

    def commit(self, batch: Batch) -> None:
        if self.taken_by is not None:
            raise LeaseLost(f"run 'r' was taken over by {self.taken_by}", owner=self.taken_by)
        self.committed.append(batch)


def fenced(n: int, expires_at: float | None) -> Batch:
    return Batch(
        events=[EventRecord("r", f"t{n}", "running", "success", float(n))],
        fences={"r": Fence(1, float(n), expires_at)},
    )


def test_committed_fences_move_lease_until() -> None:
    store = FencedStore()
    committer = Committer(cast(Store, store), lease_until=15.0)
    committer.submit(fenced(1, 16.0))
    committer.flush()
    assert committer.lease_until == 16.0
    committer.submit(fenced(2, None))  # the final commit clears the lease: nothing to trust
    committer.close()
    assert committer.lease_until == 16.0
    assert len(store.committed) == 2


def test_a_refused_commit_is_lease_lost_and_stops_every_later_commit() -> None:
    store = FencedStore()
    committer = Committer(cast(Store, store), lease_until=15.0)
    told = threading.Event()
    committer.on_error = told.set
    store.taken_by = "w2:9"

    committer.submit(fenced(1, 16.0))
    assert told.wait(10)  # the loop is woken without waiting for its next commit
    with pytest.raises(LeaseLost) as info:
        committer.check()
    assert info.value.owner == "w2:9"
    assert "taken over by w2:9" in str(info.value)
    store.taken_by = None  # even if the store would take it now, nothing more is committed
    with pytest.raises(LeaseLost):
        committer.submit(fenced(2, 17.0))
    with pytest.raises(LeaseLost):
        committer.close()
    assert store.committed == []
    assert committer.lease_until == 15.0
