"""Task and run states, and the transitions between them, as data.

The table is DESIGN.md's "Task states" table; ``check`` raises on any move not
in it (a bug, not a user mistake). Docs and diagrams are drawn from these
dicts, so the table lives in exactly one place.

Resuming a run is not a transition: it builds a fresh engine in which every
task without a committed ``success`` starts again at ``pending``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from stageflow.errors import IllegalTransition

__all__ = [
    "FINAL_RUN_STATES",
    "FINAL_TASK_STATES",
    "RUN_TRANSITIONS",
    "TASK_TRANSITIONS",
    "RunState",
    "TaskState",
    "check_run",
    "check_task",
]


class TaskState(enum.StrEnum):
    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    SENSING = "sensing"
    QUEUED = "queued"
    RUNNING = "running"
    UP_FOR_RETRY = "up_for_retry"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


_T = TaskState
TASK_TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    # pending -> failed: its ``when:`` condition could not be evaluated (a
    # deliberate addition to DESIGN.md's table; docs/architecture.md says why).
    _T.PENDING: frozenset(
        {
            _T.QUEUED,
            _T.SKIPPED,
            _T.UPSTREAM_FAILED,
            _T.CANCELLED,
            _T.FAILED,
            _T.AWAITING_APPROVAL,
            _T.SENSING,
        }
    ),
    # pending -> awaiting_approval -> queued | failed | cancelled: a task with an
    # ``approval:`` gate waits for a decision before it is queued, so it holds no
    # worker slot or resources (a deliberate addition; docs/architecture.md).
    _T.AWAITING_APPROVAL: frozenset({_T.QUEUED, _T.FAILED, _T.CANCELLED}),
    # pending -> sensing -> success | failed | skipped | cancelled: a sensor waits
    # for its condition between short checks (pokes) that take no worker slot or
    # resources; met, it succeeds with what it found; past its timeout it fails, or
    # is skipped with ``soft_fail`` (a deliberate addition; docs/architecture.md).
    _T.SENSING: frozenset({_T.SUCCESS, _T.FAILED, _T.SKIPPED, _T.CANCELLED}),
    _T.QUEUED: frozenset({_T.RUNNING, _T.CANCELLED}),
    _T.RUNNING: frozenset({_T.SUCCESS, _T.FAILED, _T.UP_FOR_RETRY, _T.CANCELLED}),
    _T.UP_FOR_RETRY: frozenset({_T.QUEUED, _T.CANCELLED}),
    _T.SUCCESS: frozenset(),
    _T.FAILED: frozenset(),
    _T.SKIPPED: frozenset(),
    _T.UPSTREAM_FAILED: frozenset(),
    _T.CANCELLED: frozenset(),
}
FINAL_TASK_STATES = frozenset(s for s, nxt in TASK_TRANSITIONS.items() if not nxt)

_R = RunState
RUN_TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    _R.QUEUED: frozenset({_R.RUNNING, _R.CANCELLED}),
    _R.RUNNING: frozenset({_R.PAUSED, _R.SUCCESS, _R.FAILED, _R.CANCELLED}),
    _R.PAUSED: frozenset({_R.RUNNING, _R.CANCELLED}),
    _R.SUCCESS: frozenset(),
    _R.FAILED: frozenset(),
    _R.CANCELLED: frozenset(),
}
FINAL_RUN_STATES = frozenset(s for s, nxt in RUN_TRANSITIONS.items() if not nxt)


def check_task(task_id: str, old: TaskState, new: TaskState) -> None:
    """Raise ``IllegalTransition`` unless ``old -> new`` is in the task table."""
    if new not in TASK_TRANSITIONS[old]:
        raise IllegalTransition(f"task '{task_id}': illegal transition {old} -> {new}")


def check_run(run_id: str, old: RunState, new: RunState) -> None:
    """Raise ``IllegalTransition`` unless ``old -> new`` is in the run table."""
    if new not in RUN_TRANSITIONS[old]:
        raise IllegalTransition(f"run '{run_id}': illegal transition {old} -> {new}")
