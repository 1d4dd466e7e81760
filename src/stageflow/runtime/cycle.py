"""Who runs the run loop's step: whichever thread has something for it.

Policy (leader/follower). A run's state — the engine, the rows, the batch of
changes — is changed only inside ``step``, under one lock, by one thread at a
time. A worker that finishes an attempt hands its result to ``deliver``. If the
lock is free, that worker *leads*: it runs the step itself (records every
result waiting, re-queues what is due, dispatches what became ready) and keeps
the first job the step started, to run at once on the same thread. A chain of
tasks thus runs on one thread with no queue and no thread switch between two
tasks: the dispatch latency is the step's own cost. If another thread holds
the lock, the result waits in ``pending``; the holder looks at ``pending``
again after it lets go, so no result is ever stranded (a result is appended
before its worker tries the lock, and the holder checks after releasing it).
A worker never blocks on the lock, so workers do not queue up behind each
other for the interpreter.

The run's own thread sleeps until the earliest timer the step reported
(group commit due, retry due, attempt deadline, control poll, run deadline) or
until ``wake`` (the run finished, a step moved a timer earlier, another run
released resources), then runs a step itself. Every step returns the jobs it
started and the time the run's thread must look next; a step that fails
(a bug, or the store refusing a commit) is kept in ``error`` and re-raised on
the run's thread, and no step runs after it or after ``close``.

State: the lock, ``pending`` results, the wake-up event, ``look_at`` (when the
run's thread will look next, set by it under the lock), ``error``, ``closed``.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable

from stageflow.runtime.attempt import AttemptResult, Job

__all__ = ["Cycle", "Step"]

#: ``step(results, now) -> (jobs started, when the run's thread must look next)``.
Step = Callable[[list[AttemptResult], float], tuple[list[Job], float]]


class Cycle:
    """One run's step runner: ``deliver`` for workers, ``sleep``/``run_step`` for the
    run's thread, ``wake`` for anyone (module docstring)."""

    def __init__(
        self, step: Step, clock: Callable[[], float], submit: Callable[[Job], None]
    ) -> None:
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.closed = False
        self.look_at = math.inf  # when the run's thread looks next (it sets it, under lock)
        self._step = step
        self._clock = clock
        self._submit = submit
        self._pending: collections.deque[AttemptResult] = collections.deque()
        self._wakeup = threading.Event()

    def deliver(self, result: AttemptResult) -> Job | None:
        """A worker's finished attempt. Returns the job the worker runs next when it
        led the step, else ``None`` (the result waits for the thread that leads)."""
        self._pending.append(result)
        return self._lead(keep=True)

    def wake(self) -> None:
        """Make the run's thread look now (e.g. another run released resources)."""
        self._wakeup.set()

    def sleep(self, seconds: float) -> None:
        """The run's thread: wait up to ``seconds`` or until woken; not at all when a
        result is pending (a worker delivered it while this thread held the lock,
        e.g. to compute ``seconds``, so it is this thread's to record)."""
        if seconds > 0 and not self._pending:
            self._wakeup.wait(seconds)
        self._wakeup.clear()

    def run_step(self, now: float) -> None:
        """The run's thread: run a step now (blocking on the lock), submit its jobs,
        then record whatever workers left meanwhile."""
        with self.lock:
            if self.closed:
                return
            jobs, _ = self._step(self._take(), now)
        for job in jobs:
            self._submit(job)
        self._lead(keep=False)

    def close(self) -> None:
        """No step runs after this (results delivered later are dropped)."""
        with self.lock:
            self.closed = True

    def _take(self) -> list[AttemptResult]:
        pending = self._pending
        results = []
        while pending:
            results.append(pending.popleft())
        return results

    def _lead(self, *, keep: bool) -> Job | None:
        mine: Job | None = None
        while self._pending and not self.closed:
            if not self.lock.acquire(blocking=False):
                return mine  # the holder records it: it looks again after releasing
            try:
                if self.closed:
                    return mine
                jobs, look = self._step(self._take(), self._clock())
            except BaseException as exc:  # re-raised on the run's thread
                self.error = exc
                self.closed = True
                self._wakeup.set()
                return None
            finally:
                self.lock.release()
            if look < self.look_at:
                self._wakeup.set()  # a timer moved earlier, or the run finished
            for job in jobs:
                if keep and mine is None:
                    mine = job
                else:
                    self._submit(job)
        return mine
