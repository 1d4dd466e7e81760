"""Group commits on a background thread, in order.

The run loop hands each finished ``Batch`` to ``Committer.submit`` and goes on
dispatching; one thread applies the batches to the store strictly in the
order they were submitted (so the causal order of the durability rule holds)
while the loop keeps tasks moving. Batches that queued up while a commit ran
are applied together, in order, in one transaction. ``flush`` waits until everything submitted
is committed — the loop calls it before reporting a run finished. A failed
commit is re-raised on the loop's next ``submit``/``flush``/``check`` as a
``StoreError``, or as the ``LeaseLost`` it was (the run was taken over: fencing),
and ``on_error`` is called at once so that the loop can stop without waiting
for its next commit. ``lease_until``: the latest lease expiry a commit
confirmed (its fences'), which the loop trusts to start new attempts.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from stageflow.errors import LeaseLost, StoreError
from stageflow.runtime.store.base import Batch, Store

__all__ = ["Committer"]


class Committer:
    def __init__(self, store: Store, *, lease_until: float = 0.0) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[Batch | threading.Event | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self.lease_until = lease_until
        self.on_error: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._work, name="stageflow-committer", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        """Queue ``batch`` for commit (after every batch submitted before it)."""
        self._raise_if_failed()
        self._queue.put(batch)

    def flush(self) -> None:
        """Block until every submitted batch is committed; raise if one failed."""
        done = threading.Event()
        self._queue.put(done)
        done.wait()
        self._raise_if_failed()

    def check(self) -> None:
        """Raise now if a commit failed (see ``submit``)."""
        self._raise_if_failed()

    def close(self) -> None:
        """Flush, then stop the thread."""
        try:
            self.flush()
        finally:
            self._queue.put(None)
            self._thread.join()

    def _work(self) -> None:
        waiting: list[Batch | threading.Event | None] = []
        while True:
            item = waiting.pop() if waiting else self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            # Every batch already queued goes into the same transaction: when commits
            # fall behind a busy run, the backlog costs one commit, not one each.
            batch = item
            while True:
                try:
                    later = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(later, Batch):
                    waiting.append(later)
                    break
                batch.extend(later)
            try:
                if self._error is None:  # never commit past a failed batch: order would break
                    self._store.commit(batch)
                    for fence in batch.fences.values():
                        if fence.expires_at is not None and fence.expires_at > self.lease_until:
                            self.lease_until = fence.expires_at
            except BaseException as exc:  # reported to the loop, which stops the run
                self._error = exc
                if self.on_error is not None:
                    self.on_error()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            exc = self._error
            if isinstance(exc, LeaseLost):  # says whose the run is now
                raise LeaseLost(str(exc), owner=exc.owner) from None
            if isinstance(exc, StoreError):  # already says where and what to do
                raise StoreError(f"could not write the run's state: {exc}") from exc
            raise StoreError(
                f"could not write the run's state to the store at {self._store.url}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
