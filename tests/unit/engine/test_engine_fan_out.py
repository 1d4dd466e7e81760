"""Dynamic fan-out (map_over) in the pure engine: children per element, the
parent's outcome, min_success_ratio, fail_fast, resume."""

from __future__ import annotations

import pytest

from stageflow.engine import EnginePlan, RunState, Scheduler, TaskState, Transition
from stageflow.engine.states import TASK_TRANSITIONS
from stageflow.spec.models import RetryPolicy, TriggerRule

S = TaskState


def plan(ratio: float | None = 1.0, retries: int = 0) -> EnginePlan:
    ids = ["load", "train", "pick"]
    return EnginePlan(
        ids=ids,
        upstream=[[], [0], [1]],
        rules=[TriggerRule.ALL_SUCCESS] * 3,
        retries=[RetryPolicy(max_retries=retries)] * 3,
        priorities=[0, 0, 0],
        mapped=[None, ratio, None],
    )


def run(
    sched: Scheduler, fail: frozenset[str] | set[str] = frozenset(), limit: int = 100
) -> list[str]:
    ran: list[str] = []
    now = 0.0

    def check(out: list[Transition]) -> None:
        for t in out:
            assert t.new in TASK_TRANSITIONS[t.old], (t.task_id, t.old, t.new)

    check(sched.start(now))
    while not sched.finished:
        started = sched.pop_ready(limit, now)
        if not started:
            now = sched.next_due() or now
            check(sched.due(now))
            continue
        check(started)
        for t in started:
            ran.append(t.task_id)
            now += 1
            check(sched.record(t.task_id, t.attempt, t.task_id not in fail, now, "boom"))
    return ran


def test_one_child_per_element_then_the_parent_and_downstream() -> None:
    sched = Scheduler(plan(), map_size=lambda t: 3)
    ran = run(sched)
    assert ran == ["load", "train[0]", "train[1]", "train[2]", "pick"]
    assert sched.state("train") is S.SUCCESS
    assert [c for c, _ in sched.children("train")] == ["train[0]", "train[1]", "train[2]"]
    assert sched.parent("train[2]") == ("train", 2)
    assert sched.parent("train") is None
    assert sched.run_state() == RunState.SUCCESS


def test_an_empty_list_succeeds_at_once() -> None:
    sched = Scheduler(plan(), map_size=lambda t: 0)
    assert run(sched) == ["load", "pick"]
    assert sched.state("train") is S.SUCCESS


def test_an_unusable_input_fails_the_mapped_task() -> None:
    sched = Scheduler(plan(), map_size=lambda t: "map_over: the output of 'load' is dict")
    run(sched)
    assert (sched.state("train"), sched.state("pick")) == (S.FAILED, S.UPSTREAM_FAILED)


@pytest.mark.parametrize(
    ("ratio", "failing", "parent", "pick"),
    [
        pytest.param(1.0, {"train[1]"}, S.FAILED, S.UPSTREAM_FAILED, id="all-required"),
        pytest.param(0.6, {"train[1]"}, S.SUCCESS, S.SUCCESS, id="ratio-met"),
        pytest.param(0.8, {"train[1]"}, S.FAILED, S.UPSTREAM_FAILED, id="ratio-missed"),
        pytest.param(0.5, set(), S.SUCCESS, S.SUCCESS, id="none-failed"),
    ],
)
def test_min_success_ratio(
    ratio: float, failing: set[str], parent: TaskState, pick: TaskState
) -> None:
    sched = Scheduler(plan(ratio), map_size=lambda t: 3)
    run(sched, fail=failing)
    assert (sched.state("train"), sched.state("pick")) == (parent, pick)
    states = dict(sched.children("train"))
    assert all(states[c] is (S.FAILED if c in failing else S.SUCCESS) for c in states)


def test_children_retry_on_their_own() -> None:
    attempts: dict[str, int] = {}
    sched = Scheduler(plan(retries=2), map_size=lambda t: 2)
    flaky = {"train[0]"}
    now = 0.0
    sched.start(now)
    while not sched.finished:
        started = sched.pop_ready(10, now)
        if not started:
            now = sched.next_due() or now
            sched.due(now)
            continue
        for t in started:
            attempts[t.task_id] = t.attempt
            ok = not (t.task_id in flaky and t.attempt < 3)
            sched.record(t.task_id, t.attempt, ok, now)
    assert attempts == {"load": 1, "train[0]": 3, "train[1]": 1, "pick": 1}
    assert sched.state("train") is S.SUCCESS


def test_fail_fast_cancels_on_a_child_failure_unless_a_ratio_tolerates_it() -> None:
    strict = Scheduler(plan(1.0), failure_strategy="fail_fast", map_size=lambda t: 3)
    run(strict, fail={"train[0]"}, limit=1)
    assert strict.state("train") is S.CANCELLED and strict.run_state() == RunState.FAILED
    tolerant = Scheduler(plan(0.5), failure_strategy="fail_fast", map_size=lambda t: 3)
    run(tolerant, fail={"train[0]"}, limit=1)
    assert tolerant.state("train") is S.SUCCESS and tolerant.state("pick") is S.SUCCESS


def test_resume_keeps_committed_children() -> None:
    sched = Scheduler(
        plan(),
        restored=["load", "train[0]", "train[2]"],
        attempts={"train[1]": 1},
        map_size=lambda t: 3,
    )
    ran = run(sched)
    assert ran == ["train[1]", "pick"]
    assert sched.attempt("train[1]") == 2


def test_ten_thousand_children() -> None:
    sched = Scheduler(plan(), map_size=lambda t: 10_000)
    ran = run(sched, limit=10_000)
    assert len(ran) == 10_002 and sched.state("pick") is S.SUCCESS
