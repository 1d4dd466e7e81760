"""Task function for ``test_worker_chaos.py``: it leaves a ``start`` line when it
begins and an ``end`` line when its work is done, each
``EVENT run_id task_id attempt pid time`` (one ``write`` with O_APPEND: lines of
concurrent processes never mix), so the ledger shows which process ran which
attempt of which task, and when."""

from __future__ import annotations

import os
import time

from helpers_tasks import append_line

from stageflow.operators.base import TaskContext


def step(ledger: str, context: TaskContext, pause: float = 0.0) -> str:
    """Record the start, work ``pause`` seconds, record the end."""
    where = f"{context.run_id} {context.task_id} {context.attempt} {os.getpid()}"
    append_line(ledger, f"start {where} {time.time():.6f}")
    time.sleep(pause)
    append_line(ledger, f"end {where} {time.time():.6f}")
    return context.task_id
