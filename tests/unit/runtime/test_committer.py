"""Group commits on a background thread (``runtime.committer.Committer``).

A fake store records what each ``commit`` call was given; a commit can be held
on an ``Event`` so that batches pile up behind it.
"""

from __future__ import annotations

import contextlib
import os
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
    assert c.closed


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


def test_close_after_a_failed_commit_raises_and_still_lets_the_thread_go(
    store: FakeStore,
) -> None:
    committer = Committer(cast(Store, store))
    store.fail_with = RuntimeError("refused")
    committer.submit(batch(1))

    with pytest.raises(StoreError, match="RuntimeError: refused"):
        committer.close()

    assert committer.closed
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


def test_close_commits_what_is_left_and_lets_the_thread_go(store: FakeStore) -> None:
    committer = Committer(cast(Store, store))
    store.hold.clear()
    committer.submit(batch(1))
    assert store.entered.wait(WAIT)
    committer.submit(batch(2))
    store.hold.set()

    committer.close()

    assert committer.closed
    assert [names(c) for c in store.commits] == [["t1"], ["t2"]]


class ThreadStore(FakeStore):
    """Records the thread each commit ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[threading.Thread] = []

    def commit(self, batch: Batch) -> None:
        self.threads.append(threading.current_thread())
        super().commit(batch)


def test_a_closed_committers_thread_serves_the_next_committer(store: FakeStore) -> None:
    recording = ThreadStore()
    first = Committer(cast(Store, recording))
    first.submit(batch(1))
    first.close()
    before = set(threading.enumerate())
    second = Committer(cast(Store, recording))
    second.submit(batch(2))
    second.close()

    # The thread the first one let go of (or, when the parked ones were full then,
    # another parked one): no thread was started for the second.
    assert recording.threads[1] in before
    assert recording.threads[1] is not threading.current_thread()
    assert [names(c) for c in recording.commits] == [["t1"], ["t2"]]


def test_committers_open_at_once_each_have_their_own_thread_and_few_stay_parked() -> None:
    from stageflow.runtime import committer as module

    recording = ThreadStore()
    recording.hold.clear()  # every commit waits: each committer holds its thread
    opened = [Committer(cast(Store, recording)) for _ in range(module.PARKED_MAX + 3)]
    for k, c in enumerate(opened):
        c.submit(batch(k))
    recording.hold.set()
    for c in opened:
        c.close()

    assert len(set(recording.threads)) == len(opened)
    assert len(module._parked.inboxes) <= module.PARKED_MAX
    alive = [t for t in set(recording.threads) if t.is_alive()]
    assert len(alive) <= module.PARKED_MAX + 1  # the last ones to leave may be ending now


def test_close_twice_is_harmless(store: FakeStore) -> None:
    committer = Committer(cast(Store, store))
    committer.submit(batch(1))
    committer.close()
    committer.close()

    assert [names(c) for c in store.commits] == [["t1"]]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_committer_thread(store: FakeStore) -> None:
    parent = Committer(cast(Store, store))
    parent.submit(batch(1))
    parent.close()  # its thread is parked now: it does not exist in a child
    pid = os.fork()
    if pid == 0:  # the child: a committer there must commit (not wait on a thread it lacks)
        code = 1
        try:
            child_store = FakeStore()
            child = Committer(cast(Store, child_store))
            child.submit(batch(2))
            finished = threading.Thread(target=child.close, daemon=True)
            finished.start()
            finished.join(WAIT)
            code = 0 if child.closed and len(child_store.commits) == 1 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
