"""Task and run state tables: every (state, next state) pair, legal or not.

The expected task table is written out here from DESIGN.md's "Task states"
table, independently of ``engine/states.py``, so a change to either shows up.
"""

from __future__ import annotations

import itertools

import pytest

from stageflow.engine.states import (
    FINAL_RUN_STATES,
    FINAL_TASK_STATES,
    RUN_TRANSITIONS,
    TASK_TRANSITIONS,
    RunState,
    TaskState,
    check_run,
    check_task,
)
from stageflow.errors import IllegalTransition, StageflowError

# DESIGN.md, "Task states": state -> the "next" column (empty: final), plus the
# deliberate additions documented in docs/architecture.md:
# pending -> failed (a `when:` condition that cannot be evaluated), and the new
# state awaiting_approval (an `approval:` gate, decided before the task queues),
# and sensing (a sensor waiting for its condition without a worker slot).
DESIGN_TASK_TABLE: dict[str, set[str]] = {
    "pending": {
        "queued",
        "skipped",
        "upstream_failed",
        "cancelled",
        "failed",
        "awaiting_approval",
        "sensing",
    },
    "awaiting_approval": {"queued", "failed", "cancelled"},
    "sensing": {"success", "failed", "skipped", "cancelled"},
    "queued": {"running", "cancelled"},
    "running": {"success", "failed", "up_for_retry", "cancelled"},
    "up_for_retry": {"queued", "cancelled"},
    "success": set(),
    "failed": set(),
    "skipped": set(),
    "upstream_failed": set(),
    "cancelled": set(),
}

# DESIGN.md names the run states ("queued, running, paused, success, failed or
# cancelled"); the last three are where a run ends.
DESIGN_RUN_STATES = ["queued", "running", "paused", "success", "failed", "cancelled"]
DESIGN_RUN_FINAL = {"success", "failed", "cancelled"}
# The run edges (DESIGN.md gives the states only): a queued run starts or is
# cancelled; a running run pauses or ends; a paused run resumes or is cancelled.
EXPECTED_RUN_TABLE: dict[str, set[str]] = {
    "queued": {"running", "cancelled"},
    "running": {"paused", "success", "failed", "cancelled"},
    "paused": {"running", "cancelled"},
    "success": set(),
    "failed": set(),
    "cancelled": set(),
}

TASK_PAIRS = list(itertools.product(TaskState, TaskState))
RUN_PAIRS = list(itertools.product(RunState, RunState))


def test_task_states_are_designs() -> None:
    assert [s.value for s in TaskState] == list(DESIGN_TASK_TABLE)


def test_task_table_equals_design() -> None:
    actual = {old.value: {new.value for new in nxt} for old, nxt in TASK_TRANSITIONS.items()}
    assert actual == DESIGN_TASK_TABLE


def test_final_task_states_are_those_with_no_next() -> None:
    assert {s.value for s in FINAL_TASK_STATES} == {
        s for s, nxt in DESIGN_TASK_TABLE.items() if not nxt
    }


def test_run_states_are_designs() -> None:
    assert [s.value for s in RunState] == DESIGN_RUN_STATES
    assert {s.value for s in FINAL_RUN_STATES} == DESIGN_RUN_FINAL


def test_run_table() -> None:
    actual = {old.value: {new.value for new in nxt} for old, nxt in RUN_TRANSITIONS.items()}
    assert actual == EXPECTED_RUN_TABLE


def test_state_values_are_plain_strings() -> None:
    # Stored and printed as DESIGN.md spells them.
    assert str(TaskState.UP_FOR_RETRY) == "up_for_retry"
    assert f"{TaskState.UPSTREAM_FAILED}" == "upstream_failed"
    assert str(RunState.CANCELLED) == "cancelled"


@pytest.mark.parametrize(("old", "new"), TASK_PAIRS, ids=[f"{a}->{b}" for a, b in TASK_PAIRS])
def test_every_task_pair(old: TaskState, new: TaskState) -> None:
    if new.value in DESIGN_TASK_TABLE[old.value]:
        check_task("t1", old, new)
        return
    with pytest.raises(IllegalTransition) as info:
        check_task("t1", old, new)
    assert not isinstance(info.value, StageflowError)
    message = str(info.value)
    assert "'t1'" in message
    assert f"{old} -> {new}" in message


@pytest.mark.parametrize(("old", "new"), RUN_PAIRS, ids=[f"{a}->{b}" for a, b in RUN_PAIRS])
def test_every_run_pair(old: RunState, new: RunState) -> None:
    if new.value in EXPECTED_RUN_TABLE[old.value]:
        check_run("r1", old, new)
        return
    with pytest.raises(IllegalTransition) as info:
        check_run("r1", old, new)
    assert not isinstance(info.value, StageflowError)
    message = str(info.value)
    assert "'r1'" in message
    assert f"{old} -> {new}" in message


@pytest.mark.parametrize("state", [pytest.param(s, id=s.value) for s in TaskState])
def test_no_task_state_moves_to_itself(state: TaskState) -> None:
    with pytest.raises(IllegalTransition):
        check_task("t1", state, state)


def test_illegal_transition_is_a_plain_bug_exception() -> None:
    assert issubclass(IllegalTransition, Exception)
    assert not issubclass(IllegalTransition, StageflowError)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(TaskState.SUCCESS, TaskState.RUNNING, id="final-reopened"),
        pytest.param(TaskState.PENDING, TaskState.RUNNING, id="skips-queue"),
        pytest.param(TaskState.UP_FOR_RETRY, TaskState.RUNNING, id="retry-skips-queue"),
        pytest.param(TaskState.QUEUED, TaskState.SUCCESS, id="never-ran"),
        pytest.param(TaskState.RUNNING, TaskState.QUEUED, id="back-to-queue"),
        pytest.param(TaskState.FAILED, TaskState.UP_FOR_RETRY, id="failed-is-final"),
    ],
)
def test_notable_illegal_task_moves(old: TaskState, new: TaskState) -> None:
    with pytest.raises(IllegalTransition):
        check_task("t1", old, new)
