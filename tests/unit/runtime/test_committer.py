"""Group commits on a background thread (``runtime.committer.Committer``).

A fake store records what each ``commit`` call was given; a commit can be held
on an ``Event`` so that batches pile up behind it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import cast

import pytest

from stageflow.errors import StoreError
from stageflow.runtime.committer import Committer
from stageflow.runtime.store import Batch, EventRecord, Store

WAIT = 10.0  # seconds: only ever reached when something is broken


class FakeStore:
    url = "fake://store"

    def __init__(self) -> None:
        self.commits: list[list[EventRecord]] = []  # each call's events, as it saw them
        self.hold = threading.Event()  # set: commits go through at once
        self.hold.set()
        self.entered = threading.Event()  # a commit call has started
        self.fail_with: BaseException | None = None

    def commit(self, batch: Batch) -> None:
        self.entered.set()
        assert self.hold.wait(WAIT)
        if self.fail_with is not None:  # fails once: a later commit would go through
            exc, self.fail_with = self.fail_with, None
            raise exc
        self.commits.append(list(batch.events))


def batch(n: int) -> Batch:
    return Batch(events=[EventRecord("run", f"t{n}", "running", "success", float(n))])


def names(events: list[EventRecord]) -> list[str | None]:
    return [e.task_id for e in events]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def committer(store: FakeStore) -> Iterator[Committer]:
    c = Committer(cast(Store, store))
    yield c
    store.hold.set()
    with contextlib.suppress(StoreError):  # the failure tests check close() themselves
        c.close()
    assert not c._thread.is_alive()


def test_a_batch_is_committed_and_flush_waits_for_it(
    store: FakeStore, committer: Committer
) -> None:
    committer.submit(batch(1))
    committer.flush()

    assert [names(c) for c in store.commits] == [["t1"]]


def test_batches_queued_behind_a_slow_commit_go_in_one_later_commit_in_order(
    store: FakeStore, committer: Committer
) -> None:
    store.hold.clear()
    committer.submit(batch(1))
    assert store.entered.wait(WAIT)  # the first commit is under way, and held

    for n in range(2, 6):
        committer.submit(batch(n))
    store.hold.set()
    committer.flush()

    assert [names(c) for c in store.commits] == [["t1"], ["t2", "t3", "t4", "t5"]]


def test_flush_returns_only_after_everything_submitted_is_committed(
    store: FakeStore, committer: Committer
) -> None:
    store.hold.clear()
    committer.submit(batch(1))
    assert store.entered.wait(WAIT)
    committer.submit(batch(2))
    seen_at_return: list[list[list[str | None]]] = []
    returned = threading.Event()

    def flush() -> None:
        committer.flush()
        seen_at_return.append([names(c) for c in store.commits])
        returned.set()

    flusher = threading.Thread(target=flush, daemon=True)
    flusher.start()
    assert not returned.wait(0.2)  # held with the commit
    store.hold.set()
    flusher.join(WAIT)

    assert seen_at_return == [[["t1"], ["t2"]]]


def test_a_failed_commit_is_raised_on_the_next_flush_and_nothing_after_it_commits(
    store: FakeStore, committer: Committer
) -> None:
    committer.submit(batch(1))
    committer.flush()
    boom = OSError("disk full")
    store.fail_with = boom
    store.hold.clear()
    store.entered.clear()
    committer.submit(batch(2))
    assert store.entered.wait(WAIT)  # the failing commit has started...
    committer.submit(batch(3))  # ...and has not failed yet: this one is accepted
    store.hold.set()

    with pytest.raises(StoreError, match="fake://store: OSError: disk full") as info:
        committer.flush()

    assert info.value.__cause__ is boom
    with pytest.raises(StoreError):
        committer.submit(batch(4))
    with pytest.raises(StoreError):
        committer.flush()
    assert [names(c) for c in store.commits] == [["t1"]]


def test_close_after_a_failed_commit_raises_and_still_stops_the_thread(
    store: FakeStore,
) -> None:
    committer = Committer(cast(Store, store))
    store.fail_with = RuntimeError("refused")
    committer.submit(batch(1))

    with pytest.raises(StoreError, match="RuntimeError: refused"):
        committer.close()

    assert not committer._thread.is_alive()
    assert store.commits == []


def test_a_failed_commit_is_raised_on_the_next_submit(
    store: FakeStore, committer: Committer
) -> None:
    store.fail_with = RuntimeError("refused")
    committer.submit(batch(1))
    with pytest.raises(StoreError, match="RuntimeError: refused"):
        committer.flush()

    with pytest.raises(StoreError, match="RuntimeError: refused"):
        committer.submit(batch(2))

    assert store.commits == []


def test_close_commits_what_is_left_and_stops_the_thread(store: FakeStore) -> None:
    committer = Committer(cast(Store, store))
    store.hold.clear()
    committer.submit(batch(1))
    assert store.entered.wait(WAIT)
    committer.submit(batch(2))
    store.hold.set()

    committer.close()

    assert not committer._thread.is_alive()
    assert [names(c) for c in store.commits] == [["t1"], ["t2"]]
