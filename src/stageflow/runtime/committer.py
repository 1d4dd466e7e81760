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

A lost connection (``StoreUnreachable``: the database server restarted, the network
dropped, an administrator ended the session) is not a failure yet: the same batch
is tried again with backoff (``retry_delay``; one log line per try) while the lease
it last confirmed holds, the store reopening its connection on the next try; the
loop meanwhile goes on (its running attempts are untouched; it starts none past
``lease_until``) and its later batches wait in order behind this one. A commit
whose outcome is unknown (the connection broke around ``COMMIT``) is checked before
it is tried again: a fenced batch that went through left its fence's expiry in the
run's row. Once the lease has expired the committer gives up exactly as on a
refused commit (``LeaseLost``: the loop stops its attempts and commits nothing
more; another worker, or ``stageflow resume``, takes the run over and resumes it).

The thread is borrowed, not started per run: a committer takes a parked one of
the process's committer threads (or starts one when none is parked) and hands it
back once closed, so a run's set-up does not wait for a thread to start. A thread
serves one committer at a time, from its first batch to its close, so everything
above holds per run exactly as with a thread of its own; a process keeps at most
``PARKED_MAX`` parked threads (the rest end), and a forked child starts with none.

State: the queue of batches, the first error, ``lease_until``; the process's parked
threads (``_parked``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from stageflow.engine.lease import clock_text
from stageflow.errors import LeaseLost, StoreError, StoreUnreachable
from stageflow.runtime.store.base import Batch, Store

__all__ = ["Committer", "retry_delay"]

logger = logging.getLogger(__name__)

#: The first wait before trying a lost store again; doubled per try up to the cap.
FIRST_RETRY_SECONDS = 0.25

#: At most this many committer threads wait, parked, for the process's next runs.
PARKED_MAX = 8


class _Close:
    """The queue's last item: commit what came before, then let the thread go."""


_CLOSE = _Close()


def retry_delay(tries: int, cap: float = 5.0) -> float:
    """Seconds to wait before try ``tries + 1`` after ``tries`` failed ones: 0.25 s,
    doubling, at most ``cap``."""
    return min(cap, FIRST_RETRY_SECONDS * 2.0 ** max(tries - 1, 0))


class Committer:
    def __init__(
        self,
        store: Store,
        *,
        lease_until: float = 0.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[Batch | threading.Event | _Close] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._clock, self._sleep = clock, sleep  # (a fake clock's, in tests)
        self.lease_until = lease_until
        self.on_error: Callable[[], None] | None = None
        self._released = threading.Event()  # its thread is done with it (``closed``)
        self._closing = False
        _lend_thread(self)

    @property
    def closed(self) -> bool:
        """Whether ``close`` finished: its thread commits nothing more for it."""
        return self._released.is_set()

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
        """Commit what is queued, then let the thread go; raise if a commit failed.
        Closing twice is harmless."""
        if not self._closing:
            self._closing = True
            self._queue.put(_CLOSE)
        self._released.wait()
        self._raise_if_failed()

    def _serve(self) -> None:
        """Commit the queued batches in order until the close (on a borrowed thread)."""
        waiting: list[Batch | threading.Event | _Close] = []
        while True:
            item = waiting.pop() if waiting else self._queue.get()
            if isinstance(item, _Close):
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
                    self._commit(batch)
                    for fence in batch.fences.values():
                        if fence.expires_at is not None and fence.expires_at > self.lease_until:
                            self.lease_until = fence.expires_at
            except BaseException as exc:  # reported to the loop, which stops the run
                self._error = exc
                if self.on_error is not None:
                    self.on_error()

    def _commit(self, batch: Batch) -> None:
        """Commit ``batch``, trying again while the store is unreachable and the lease
        holds (module docstring); ``LeaseLost`` once it expired."""
        tries = 0
        while True:
            try:
                self._store.commit(batch)
            except StoreUnreachable as exc:
                tries += 1
                now = self._clock()
                if now >= self.lease_until:
                    raise self._gave_up(batch, exc) from exc
                wait = min(retry_delay(tries), self.lease_until - now)
                logger.warning(
                    "%s: could not commit (try %d): %s; trying again in %.2fs, "
                    "until its lease expires at %s",
                    _runs(batch),
                    tries,
                    exc,
                    wait,
                    clock_text(self.lease_until, now),
                )
            else:
                if tries:
                    logger.warning("%s: the store answers again; committed", _runs(batch))
                return
            self._sleep(wait)
            if self._went_through(batch):
                logger.warning(
                    "%s: the store answers again; its commit had gone through", _runs(batch)
                )
                return

    def _went_through(self, batch: Batch) -> bool:
        """Whether a fenced ``batch`` whose commit broke off was committed after all:
        each fenced run's row shows its fence (epoch and the expiry it set). Unknown
        (the store still unreachable, or no fence): False, and it is tried again."""
        if not batch.fences:
            return False
        try:
            for run_id, fence in batch.fences.items():
                run = self._store.get_run(run_id)
                if run.lease_epoch != fence.epoch or run.lease_expires_at != fence.expires_at:
                    return False
        except StoreError:
            return False
        return True

    def _gave_up(self, batch: Batch, exc: StoreUnreachable) -> LeaseLost:
        now = self._clock()
        return LeaseLost(
            f"{_runs(batch)}: the store stayed unreachable ({exc}) until this process's "
            f"lease expired at {clock_text(self.lease_until, now)}: it stopped the run's "
            "attempts and committed nothing more; a live worker (or `stageflow resume`) "
            "takes the run over"
        )

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


class _Parked:
    """The process's parked committer threads: each waits on its own inbox for the
    next committer to serve."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inboxes: list[queue.SimpleQueue[Committer]] = []


_parked = _Parked()


def _lend_thread(committer: Committer) -> None:
    """Give ``committer`` a parked thread, or a new one when none is parked."""
    with _parked.lock:
        inbox = _parked.inboxes.pop() if _parked.inboxes else None
    if inbox is not None:
        inbox.put(committer)
        return
    inbox = queue.SimpleQueue()
    threading.Thread(
        target=_serve, args=(inbox, committer), name="stageflow-committer", daemon=True
    ).start()


def _serve(inbox: queue.SimpleQueue[Committer], committer: Committer) -> None:
    """A committer thread: serve ``committer`` to its close, park, serve the next."""
    parked = _parked  # a forked child's new registry is not this thread's
    while True:
        try:
            committer._serve()
        except BaseException:  # (never expected) the thread ends: it is not parked
            committer._released.set()
            raise
        # Parked before the close returns, so that the next run finds this thread.
        with parked.lock:
            park = len(parked.inboxes) < PARKED_MAX and parked is _parked
            if park:
                parked.inboxes.append(inbox)
        committer._released.set()
        if not park:
            return
        committer = inbox.get()


def _forget_parked() -> None:
    """In a forked child: the parent's parked threads do not exist there."""
    global _parked
    _parked = _Parked()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_parked)


def _runs(batch: Batch) -> str:
    """The runs a batch writes, for a log line: ``run r1`` or ``runs r1, r2``."""
    ids = sorted(batch.fences) or sorted({u.run_id for u in batch.runs})
    if len(ids) == 1:
        return f"run {ids[0]}"
    return f"runs {', '.join(ids)}" if ids else "a batch"
