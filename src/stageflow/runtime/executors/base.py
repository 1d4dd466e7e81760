"""Where task code executes: the ``Executor`` protocol.

An executor takes ``Job``s and hands each attempt's ``AttemptResult`` to the
``Deliver`` callback it was given, on the thread that ran (or watched) the
attempt. The callback may return the next ``Job`` for that same worker to run
at once: the run loop's leader/follower hand-off (``runtime.cycle``), which
lets a chain of tasks run on one thread with no queue in between. Executors own
a fixed pool (threads or worker processes) created once, grown on demand up to
their size and reused: nothing is spawned per task. ``cancel`` stops a running
attempt as well as the executor can (a process is killed; a thread cannot be,
so its attempt is abandoned and its late result ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from stageflow.runtime.attempt import AttemptResult, Job

__all__ = ["Deliver", "Executor"]

#: Takes a finished attempt's result; returns a job for the same worker to run next.
Deliver = Callable[[AttemptResult], Job | None]


class Executor(Protocol):
    name: str

    def submit(self, job: Job) -> None:
        """Start ``job`` as soon as a worker is free; its result goes to ``deliver``."""

    def cancel(self, key: tuple[str, str, int]) -> None:
        """Stop the attempt ``(run_id, task_id, attempt)`` if it is running."""

    def shutdown(self) -> None:
        """Stop the workers (running attempts are abandoned or killed)."""
