"""Task functions for ``test_leases.py``: each leaves ``task_id pid`` in a ledger when
it starts, so the ledger shows which process ran which task, and how often."""

from __future__ import annotations

import os
import time

from helpers_tasks import append_line

from stageflow.operators.base import TaskContext


def gated_step(ledger: str, gate: str, context: TaskContext, pause: float = 0.2) -> str:
    """Leave ``task_id pid`` in the ledger, wait (at most 90 s) until ``gate`` exists,
    then work ``pause`` seconds."""
    append_line(ledger, f"{context.task_id} {os.getpid()}")
    deadline = time.monotonic() + 90
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(pause)
    return context.task_id
