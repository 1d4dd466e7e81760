"""Schema step 14 on every backend: the notification delivery log. A key is recorded
once however often it is recorded; a due delivery is claimed by exactly one of any
number of claimers (compare-and-set); a try's end is fenced by its attempt number; a
claim that ran out (its claimer died) is due again (``store``/``backend`` fixtures)."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from stageflow.runtime.store import SqlStore
from stageflow.runtime.store.base import NotificationRecord

if TYPE_CHECKING:
    from conftest import Backend


def row(
    key: str = "on_failure:r1:1.0",
    index: int = 0,
    *,
    run_id: str | None = "r1",
    owner: str | None = None,
    at: float = 100.0,
) -> NotificationRecord:
    return NotificationRecord(
        id=0,
        key=key,
        channel_index=index,
        created_at=at,
        kind="on_failure",
        pipeline="churn",
        run_id=run_id,
        task="train",
        owner=owner,
        channel_kind="webhook",
        target="https://hooks.example.com",
        channel={"webhook": "${secret:HOOK}"},
        message={"kind": "on_failure", "subject": "s", "text": "t"},
        next_try_at=at,
    )


def test_a_key_is_recorded_once(store: SqlStore) -> None:
    first = store.add_notifications([row(index=0), row(index=1)])
    assert len(first) == 2
    assert store.add_notifications([row(index=0), row(index=1)]) == []
    assert store.add_notifications([row(index=2)]) != []  # another channel of the key
    found = store.notifications()
    assert sorted(n.channel_index for n in found) == [0, 1, 2]
    assert found[0].channel == {"webhook": "${secret:HOOK}"}  # the reference, as given


def test_only_due_deliveries_are_claimed(store: SqlStore) -> None:
    [nid] = store.add_notifications([row(at=100.0)])
    assert store.due_notifications(99.0) == []
    assert store.claim_notification(nid, 99.0, 160.0) is None  # not due yet
    assert store.due_notifications(100.0) == [nid]
    claimed = store.claim_notification(nid, 100.0, 160.0)
    assert claimed is not None and (claimed.state, claimed.attempts) == ("sending", 1)
    assert store.claim_notification(nid, 101.0, 161.0) is None  # claimed already
    assert store.due_notifications(120.0) == []
    # Its claimer died: once the claim runs out, it is due again, and a try more.
    assert store.due_notifications(160.0) == [nid]
    again = store.claim_notification(nid, 160.0, 220.0)
    assert again is not None and again.attempts == 2


def test_a_try_ends_fenced_by_its_attempt(store: SqlStore) -> None:
    [nid] = store.add_notifications([row()])
    store.claim_notification(nid, 100.0, 160.0)
    store.claim_notification(nid, 160.0, 220.0)  # taken over: attempt 2
    assert not store.finish_notification(
        nid, 1, state="delivered", error=None, next_try_at=None, now=170.0
    )
    assert store.finish_notification(
        nid, 2, state="pending", error="cannot reach x", next_try_at=175.0, now=170.0
    )
    [n] = store.notifications()
    assert (n.state, n.attempts, n.last_error, n.next_try_at) == (
        "pending",
        2,
        "cannot reach x",
        175.0,
    )
    assert store.claim_notification(nid, 176.0, 236.0) is not None
    assert store.finish_notification(
        nid, 3, state="delivered", error=None, next_try_at=None, now=177.0
    )
    [n] = store.notifications(state="delivered")
    assert (n.delivered_at, n.claimed_until) == (177.0, None)
    assert store.due_notifications(10_000.0) == []


def test_one_of_many_claimers_wins(backend: Backend) -> None:
    stores = [backend.open() for _ in range(4)]
    try:
        ids = stores[0].add_notifications([row(index=i) for i in range(20)])
        wins: list[tuple[int, int]] = []
        lock = threading.Lock()
        barrier = threading.Barrier(len(stores))

        def claim(n: int, store: SqlStore) -> None:
            barrier.wait()
            for nid in ids:
                if store.claim_notification(nid, 100.0, 160.0) is not None:
                    with lock:
                        wins.append((nid, n))

        threads = [threading.Thread(target=claim, args=(n, s)) for n, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(nid for nid, _ in wins) == sorted(ids)  # each exactly once
    finally:
        for s in stores:
            s.close()


def test_filters_and_owners(store: SqlStore) -> None:
    store.add_notifications([row("k1", run_id="r1", owner=None)])
    store.add_notifications([row("k2", run_id="r2", owner="team-a")])
    [nid] = store.add_notifications([replace(row("k3", run_id="r2", owner="team-b"))])
    store.claim_notification(nid, 100.0, 160.0)
    store.finish_notification(nid, 1, state="failed", error="x", next_try_at=None, now=101.0)
    assert [n.key for n in store.notifications()] == ["k3", "k2", "k1"]  # newest first
    assert [n.key for n in store.notifications(run_id="r2")] == ["k3", "k2"]
    assert [n.key for n in store.notifications(state="failed")] == ["k3"]
    assert [n.key for n in store.notifications(owner="team-a", any_owner=False)] == ["k2"]
    assert [n.key for n in store.notifications(owner=None, any_owner=False)] == ["k1"]
    assert [n.key for n in store.notifications(limit=1)] == ["k3"]
