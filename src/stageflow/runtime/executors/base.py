"""Where task code executes: the ``Executor`` protocol.

An executor takes ``Job``s and reports each attempt's ``AttemptResult`` on the
completion queue it was given. It owns a fixed pool (threads or worker
processes) created once and reused: nothing is spawned per task. ``cancel``
stops a running attempt as well as the executor can (a process is killed; a
thread cannot be, so its attempt is abandoned and its late result ignored).
"""

from __future__ import annotations

import queue
from typing import Protocol

from stageflow.runtime.attempt import AttemptResult, Job

__all__ = ["Completions", "Executor"]

#: Finished attempts; ``None`` is a wake-up (another run released resources).
Completions = queue.SimpleQueue[AttemptResult | None]


class Executor(Protocol):
    name: str

    def submit(self, job: Job) -> None:
        """Start ``job`` as soon as a worker is free; its result goes to the queue."""

    def cancel(self, key: tuple[str, str, int]) -> None:
        """Stop the attempt ``(run_id, task_id, attempt)`` if it is running."""

    def shutdown(self) -> None:
        """Stop the workers (running attempts are abandoned or killed)."""
