"""Where task code executes: the ``Executor`` protocol and the pools behind it.

An ``ExecutorPool`` is created once per process (``runtime.host.Host``) and shared
by every run of that process: a fixed set of threads or worker processes, grown
on demand and reused, never a pool per run and nothing spawned per task. A run
``attach``es to a pool and gets its own ``Executor`` view: it submits ``Job``s and
is told of each attempt's end through the ``Deliver`` callback it attached with,
on the thread that ran (or watched) the attempt. The callback may return the next
``Job`` for that same worker to run at once: the run loop's leader/follower
hand-off (``runtime.cycle``), which lets a chain of tasks run on one thread with no
queue in between. ``cancel`` stops a running attempt as well as the pool can (a
process is killed; a thread cannot be, so its attempt is abandoned and its late
result ignored); ``shutdown`` of a view ends that run's use of the pool (its
attempts still going are stopped), ``shutdown`` of the pool ends the pool.

A pool grows to the sum of the parallelism of the runs attached at once (a chain
needs one thread whatever it asked for: threads start only when a job would
wait), so the threads and processes of a process are bounded by its concurrent
runs' configured parallelism, and a run never waits for a thread another run
holds. The run loop asks only ``shares_memory`` (inputs passed as objects rather
than as stored references): it never branches on which executor it has, so a
remote executor (Ray) implements the same three calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from stageflow.runtime.attempt import AttemptResult, Job

__all__ = ["Deliver", "Executor", "ExecutorPool", "RunView"]

#: Takes a finished attempt's result; returns a job for the same worker to run next.
Deliver = Callable[[AttemptResult], Job | None]


class Executor(Protocol):
    """One run's use of a pool."""

    name: str
    shares_memory: bool  # attempts run in this process: inputs and outputs pass as objects

    def submit(self, job: Job) -> None:
        """Start ``job`` as soon as a worker is free; its result goes to ``deliver``."""

    def cancel(self, key: tuple[str, str, int]) -> None:
        """Stop the attempt ``(run_id, task_id, attempt)`` if it is running."""

    def shutdown(self) -> None:
        """This run is done with the pool: its attempts still going are stopped."""


class ExecutorPool(Protocol):
    """A process's threads or worker processes, shared by its runs."""

    name: str
    shares_memory: bool

    @property
    def workers(self) -> int:
        """Threads (or worker-process slots) the pool holds now."""

    def attach(self, run_id: str, deliver: Deliver, parallel: int) -> Executor:
        """A view for run ``run_id``: up to ``parallel`` of its attempts at once."""

    def submit(self, job: Job) -> None: ...

    def cancel(self, key: tuple[str, str, int]) -> None: ...

    def detach(self, run_id: str) -> None:
        """The run is done: forget its route, stop its attempts still going."""

    def shutdown(self) -> None:
        """Stop every worker (running attempts are abandoned or killed)."""


class RunView:
    """The ``Executor`` a run gets from ``ExecutorPool.attach``."""

    __slots__ = ("_pool", "cancel", "name", "run_id", "shares_memory", "submit")

    def __init__(self, pool: ExecutorPool, run_id: str) -> None:
        self._pool = pool
        self.run_id = run_id
        self.name = pool.name
        self.shares_memory = pool.shares_memory
        self.submit = pool.submit  # no wrapper on the hot path
        self.cancel = pool.cancel

    def shutdown(self) -> None:
        self._pool.detach(self.run_id)
