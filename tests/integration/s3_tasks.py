"""Task functions for the object storage tests: a chain of numbers passed from task
to task (through the artifact store), each task leaving its id in a ledger first."""

from __future__ import annotations

import time

from helpers_tasks import append_line

from stageflow.operators.base import TaskContext


def numbers(ledger: str, context: TaskContext) -> list[int]:
    """The first values: 0..199."""
    append_line(ledger, context.task_id)
    return list(range(200))


def add_one(values: list[int], ledger: str, context: TaskContext, pause: float = 0.3) -> list[int]:
    """``values`` plus one each, after a pause (so that a run can be killed midway)."""
    append_line(ledger, context.task_id)
    time.sleep(pause)
    return [v + 1 for v in values]


def total(values: list[int], ledger: str, context: TaskContext) -> int:
    append_line(ledger, context.task_id)
    return sum(values)
