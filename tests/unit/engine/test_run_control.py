"""Approval gates and cancellation in the pure ``Scheduler``, with a fake clock.

A task with ``approval:`` whose trigger rule is met moves ``pending ->
awaiting_approval`` (holding no worker slot); ``decide_approval`` queues it
(approved) or fails it (rejected); ``due(now)`` fails it once its
``timeout_seconds`` have passed. Every transition returned is checked against
the state table and the scheduler's own view (``Moves``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stageflow.engine import EnginePlan, RunState, Scheduler, TaskState, Transition
from stageflow.engine.states import TASK_TRANSITIONS
from stageflow.spec.models import Approval, Pipeline, RetryPolicy, Task, TriggerRule

S = TaskState
TR = TriggerRule
NO_RETRY = RetryPolicy()


def make_plan(
    upstream: dict[str, list[str]],
    *,
    gates: dict[str, Approval] | None = None,
    rules: dict[str, TriggerRule] | None = None,
    retries: dict[str, RetryPolicy] | None = None,
    conditional: frozenset[str] = frozenset(),
) -> EnginePlan:
    ids = list(upstream)
    index = {tid: i for i, tid in enumerate(ids)}
    return EnginePlan(
        ids=ids,
        upstream=[[index[u] for u in upstream[t]] for t in ids],
        rules=[(rules or {}).get(t, TR.ALL_SUCCESS) for t in ids],
        retries=[(retries or {}).get(t, NO_RETRY) for t in ids],
        priorities=[0] * len(ids),
        conditional=[t in conditional for t in ids],
        branching=[False] * len(ids),
        approvals=[(gates or {}).get(t) for t in ids],
    )


class Moves:
    """Drives a scheduler and checks each returned transition against the table,
    the ``now`` passed in and the state the scheduler reported before."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.before = sched.states()

    def __call__(
        self, now: float, call: Callable[..., list[Transition]], *args: object
    ) -> list[tuple[str, TaskState]]:
        out = call(*args)
        current = dict(self.before)
        for t in out:
            assert t.at == now
            assert t.old is current[t.task_id], t
            assert t.new in TASK_TRANSITIONS[t.old], t
            current[t.task_id] = t.new
        assert current == self.sched.states()
        self.before = current
        self.last = out
        return [(t.task_id, t.new) for t in out]


GATE = Approval(message="Deploy to production?", timeout_seconds=60)
NO_TIMEOUT = Approval(message="Ship it?")

# stage -> deploy (gated) -> notify
LINE = {"stage": [], "deploy": ["stage"], "notify": ["deploy"]}


def line(
    gate: Approval = GATE,
    *,
    rules: dict[str, TriggerRule] | None = None,
    retries: dict[str, RetryPolicy] | None = None,
) -> tuple[Scheduler, Moves]:
    sched = Scheduler(make_plan(LINE, gates={"deploy": gate}, rules=rules, retries=retries))
    return sched, Moves(sched)


def run_stage(sched: Scheduler, moves: Moves) -> None:
    assert moves(0.0, sched.start, 0.0) == [("stage", S.QUEUED)]
    assert moves(0.0, sched.pop_ready, 4, 0.0) == [("stage", S.RUNNING)]
    assert moves(10.0, sched.record, "stage", 1, True, 10.0) == [
        ("stage", S.SUCCESS),
        ("deploy", S.AWAITING_APPROVAL),
    ]


# -- waiting -----------------------------------------------------------------------


def test_a_gated_task_waits_without_a_slot_and_with_its_timeout_due() -> None:
    sched, moves = line()
    run_stage(sched, moves)

    waiting = moves.last[-1]
    assert waiting.message == "Deploy to production?"
    assert waiting.due_at == 70.0
    assert waiting.attempt == 0
    assert sched.awaiting_approval == 1
    assert sched.running == 0
    assert not sched.has_ready
    assert moves(11.0, sched.pop_ready, 4, 11.0) == []
    assert sched.next_due() == 70.0
    assert not sched.finished
    assert sched.run_state() is RunState.RUNNING


def test_a_gated_root_waits_from_the_start_and_others_take_the_slots() -> None:
    sched = Scheduler(make_plan({"gated": [], "free": []}, gates={"gated": GATE}))
    moves = Moves(sched)

    assert moves(0.0, sched.start, 0.0) == [
        ("gated", S.AWAITING_APPROVAL),
        ("free", S.QUEUED),
    ]
    assert moves(0.0, sched.pop_ready, 1, 0.0) == [("free", S.RUNNING)]


def test_without_a_timeout_it_waits_for_ever() -> None:
    sched, moves = line(gate=NO_TIMEOUT)
    run_stage(sched, moves)

    assert moves.last[-1].due_at is None
    assert sched.next_due() is None
    assert moves(1e9, sched.due, 1e9) == []
    assert sched.state("deploy") is S.AWAITING_APPROVAL


# -- deciding ----------------------------------------------------------------------


def test_approved_it_queues_and_runs_normally() -> None:
    sched, moves = line()
    run_stage(sched, moves)

    assert moves(20.0, sched.decide_approval, "deploy", True, 20.0, "approved by alice") == [
        ("deploy", S.QUEUED)
    ]
    assert moves.last[0].message == "approved by alice"
    assert sched.awaiting_approval == 0
    assert sched.next_due() is None  # the timeout no longer applies
    assert moves(20.0, sched.pop_ready, 4, 20.0) == [("deploy", S.RUNNING)]
    assert sched.attempt("deploy") == 1
    assert moves(70.0, sched.due, 70.0) == []  # the stale timeout changes nothing
    assert moves(75.0, sched.record, "deploy", 1, True, 75.0) == [
        ("deploy", S.SUCCESS),
        ("notify", S.QUEUED),
    ]


@pytest.mark.parametrize(
    ("rule", "notify"),
    [
        pytest.param(TR.ALL_SUCCESS, S.UPSTREAM_FAILED, id="all_success"),
        pytest.param(TR.ALL_DONE, S.QUEUED, id="all_done"),
        pytest.param(TR.ONE_FAILED, S.QUEUED, id="one_failed"),
        pytest.param(TR.NONE_FAILED, S.UPSTREAM_FAILED, id="none_failed"),
    ],
)
def test_rejected_it_fails_and_downstream_follow_their_trigger_rules(
    rule: TriggerRule, notify: TaskState
) -> None:
    sched, moves = line(rules={"notify": rule})
    run_stage(sched, moves)

    assert moves(
        20.0, sched.decide_approval, "deploy", False, 20.0, "rejected by bob: not today"
    ) == [("deploy", S.FAILED), ("notify", notify)]
    assert moves.last[0].message == "rejected by bob: not today"
    assert sched.attempt("deploy") == 0  # it never ran
    assert sched.awaiting_approval == 0


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(69.999, [], id="before"),
        pytest.param(70.0, [("deploy", S.FAILED), ("notify", S.UPSTREAM_FAILED)], id="at"),
        pytest.param(500.0, [("deploy", S.FAILED), ("notify", S.UPSTREAM_FAILED)], id="after"),
    ],
)
def test_timed_out_it_fails(now: float, expected: list[tuple[str, TaskState]]) -> None:
    sched, moves = line()
    run_stage(sched, moves)

    assert moves(now, sched.due, now) == expected
    if expected:
        assert moves.last[0].message == (
            "approval timed out: no decision within 60s (approval.timeout_seconds)"
        )
        assert sched.finished
        assert sched.run_state() is RunState.FAILED
        assert sched.next_due() is None


@pytest.mark.parametrize(
    "settle",
    [
        pytest.param(lambda s: s.decide_approval("deploy", True, 20.0, "ok"), id="approved"),
        pytest.param(lambda s: s.decide_approval("deploy", False, 20.0, "no"), id="rejected"),
        pytest.param(lambda s: s.due(70.0), id="timed-out"),
        pytest.param(lambda s: s.cancel(20.0), id="cancelled"),
    ],
)
def test_a_second_decision_is_stale(settle: Callable[[Scheduler], object]) -> None:
    sched, moves = line()
    run_stage(sched, moves)
    settle(sched)
    moves.before = sched.states()

    assert moves(80.0, sched.decide_approval, "deploy", True, 80.0, "late") == []
    assert moves(80.0, sched.decide_approval, "deploy", False, 80.0, "late") == []


def test_a_decision_before_the_gate_is_reached_changes_nothing() -> None:
    sched, moves = line()
    moves(0.0, sched.start, 0.0)

    assert moves(1.0, sched.decide_approval, "deploy", True, 1.0, "early") == []
    assert sched.state("deploy") is S.PENDING


# -- with the run's other policies -------------------------------------------------


def test_fail_fast_rejection_cancels_the_rest_including_other_gates() -> None:
    upstream = {"a": [], "b": [], "slow": [], "after": ["a"]}
    gates = {"a": GATE, "b": NO_TIMEOUT}
    sched = Scheduler(make_plan(upstream, gates=gates), failure_strategy="fail_fast")
    moves = Moves(sched)
    moves(0.0, sched.start, 0.0)
    moves(0.0, sched.pop_ready, 4, 0.0)
    assert sched.awaiting_approval == 2

    assert moves(5.0, sched.decide_approval, "a", False, 5.0, "rejected by bob") == [
        ("a", S.FAILED),
        ("b", S.CANCELLED),
        ("slow", S.CANCELLED),
        ("after", S.CANCELLED),
    ]
    assert moves.last[1].message == "cancelled: task 'a' failed (fail_fast)"
    assert sched.awaiting_approval == 0
    assert sched.running == 0
    assert sched.run_state() is RunState.FAILED


def test_cancel_while_awaiting_approval() -> None:
    sched, moves = line()
    run_stage(sched, moves)

    assert moves(20.0, sched.cancel, 20.0, "cancelled by carol") == [
        ("deploy", S.CANCELLED),
        ("notify", S.CANCELLED),
    ]
    assert sched.awaiting_approval == 0
    assert sched.next_due() is None
    assert sched.run_state() is RunState.CANCELLED


def test_an_approved_task_is_not_asked_again_when_it_retries() -> None:
    sched, moves = line(retries={"deploy": RetryPolicy(max_retries=1, delay_seconds=5)})
    run_stage(sched, moves)
    moves(20.0, sched.decide_approval, "deploy", True, 20.0, "ok")
    moves(20.0, sched.pop_ready, 4, 20.0)

    assert moves(30.0, sched.record, "deploy", 1, False, 30.0, "boom") == [
        ("deploy", S.UP_FOR_RETRY)
    ]
    assert sched.next_due() == 35.0  # the retry's, not the old approval timeout
    assert moves(35.0, sched.due, 35.0) == [("deploy", S.QUEUED)]
    assert moves(35.0, sched.pop_ready, 4, 35.0) == [("deploy", S.RUNNING)]
    assert sched.attempt("deploy") == 2


def test_the_earliest_of_a_retry_and_an_approval_timeout_is_due_first() -> None:
    upstream = {"gated": [], "flaky": []}
    sched = Scheduler(
        make_plan(
            upstream,
            gates={"gated": GATE},
            retries={"flaky": RetryPolicy(max_retries=1, delay_seconds=100)},
        )
    )
    moves = Moves(sched)
    moves(0.0, sched.start, 0.0)
    moves(0.0, sched.pop_ready, 4, 0.0)
    moves(1.0, sched.record, "flaky", 1, False, 1.0, "boom")

    assert sched.next_due() == 60.0  # the approval times out before the retry (101)
    assert moves(60.0, sched.due, 60.0) == [("gated", S.FAILED)]
    assert sched.next_due() == 101.0


def test_resume_asks_again_unless_the_gated_task_succeeded() -> None:
    plan = make_plan(LINE, gates={"deploy": GATE})
    asked = Scheduler(plan, restored=["stage"], attempts={"stage": 1})
    done = Scheduler(plan, restored=["stage", "deploy"], attempts={"stage": 1, "deploy": 1})

    # Restored successes are set without a transition; only the others move.
    assert [(t.task_id, t.old, t.new) for t in asked.start(0.0)] == [
        ("deploy", S.PENDING, S.AWAITING_APPROVAL)
    ]
    assert [(t.task_id, t.old, t.new) for t in done.start(0.0)] == [("notify", S.PENDING, S.QUEUED)]
    assert asked.awaiting_approval == 1
    assert done.awaiting_approval == 0


def test_a_false_condition_skips_the_task_without_asking_for_approval() -> None:
    sched = Scheduler(
        make_plan(LINE, gates={"deploy": GATE}, conditional=frozenset({"deploy"})),
        condition=lambda task_id: False,
    )
    moves = Moves(sched)
    moves(0.0, sched.start, 0.0)
    moves(0.0, sched.pop_ready, 4, 0.0)

    assert moves(1.0, sched.record, "stage", 1, True, 1.0) == [
        ("stage", S.SUCCESS),
        ("deploy", S.SKIPPED),
        ("notify", S.SKIPPED),
    ]
    assert sched.awaiting_approval == 0


def test_the_plan_takes_each_tasks_approval_from_the_spec() -> None:
    gate = Approval(message="go?", timeout_seconds=5, approvers=["alice"])
    pipeline = Pipeline(
        "p",
        tasks=[Task("a", call="m:f"), Task("b", call="m:f", upstream=["a"], approval=gate)],
    )

    assert EnginePlan.from_pipeline(pipeline).approvals == [None, gate]
