"""The pure ``Scheduler``, driven by hand with a fake clock (plain floats, no sleeps).

Every list of transitions it returns goes through ``moves``, which checks each
one against the state table, its timestamp against the ``now`` passed in, and
its ``old`` state against what the scheduler said before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from stageflow.engine import EnginePlan, RunState, Scheduler, TaskState, Transition
from stageflow.engine.states import FINAL_TASK_STATES, TASK_TRANSITIONS
from stageflow.spec.models import Pipeline, RetryPolicy, Task, TaskDefaults, TriggerRule

S = TaskState
R = RunState
TR = TriggerRule
NO_RETRY = RetryPolicy()


def make_plan(
    upstream: dict[str, list[str]],
    *,
    rules: dict[str, TriggerRule] | None = None,
    retries: dict[str, RetryPolicy] | None = None,
    priorities: dict[str, int] | None = None,
) -> EnginePlan:
    ids = list(upstream)
    index = {tid: i for i, tid in enumerate(ids)}
    return EnginePlan(
        ids=ids,
        upstream=[[index[u] for u in upstream[t]] for t in ids],
        rules=[(rules or {}).get(t, TR.ALL_SUCCESS) for t in ids],
        retries=[(retries or {}).get(t, NO_RETRY) for t in ids],
        priorities=[(priorities or {}).get(t, 0) for t in ids],
    )


def sched_of(
    upstream: dict[str, list[str]],
    *,
    failure_strategy: str = "continue",
    restored: Iterable[str] = (),
    attempts: dict[str, int] | None = None,
    rules: dict[str, TriggerRule] | None = None,
    retries: dict[str, RetryPolicy] | None = None,
    priorities: dict[str, int] | None = None,
) -> Scheduler:
    plan = make_plan(upstream, rules=rules, retries=retries, priorities=priorities)
    return Scheduler(plan, failure_strategy=failure_strategy, restored=restored, attempts=attempts)


def moves(
    sched: Scheduler, before: dict[str, TaskState], out: list[Transition], now: float
) -> list[tuple[str, TaskState]]:
    """Check ``out`` against the table and ``before``; return ``(task, new)`` pairs."""
    current = dict(before)
    for t in out:
        assert t.at == now
        assert t.old is current[t.task_id], t
        assert t.new in TASK_TRANSITIONS[t.old], t
        assert t.attempt == sched.attempt(t.task_id)
        current[t.task_id] = t.new
    assert current == sched.states()
    return [(t.task_id, t.new) for t in out]


class Driver:
    """Calls the scheduler and checks every returned transition (see ``moves``)."""

    def __init__(self, sched: Scheduler, restored: Iterable[str] = ()) -> None:
        self.sched = sched
        self.restored = set(restored)
        self.started = False

    def _do(
        self, now: float, call: Callable[..., list[Transition]], *args: object
    ) -> list[tuple[str, TaskState]]:
        before = self.sched.states()
        if not self.started:
            # Resume is not a transition: restored tasks are success from the outset.
            before.update(dict.fromkeys(self.restored, S.SUCCESS))
            self.started = True
        out = call(*args)
        self.last = out
        return moves(self.sched, before, out, now)

    def start(self, now: float = 0.0) -> list[tuple[str, TaskState]]:
        return self._do(now, self.sched.start, now)

    def pop(self, limit: int = 1000, now: float = 0.0) -> list[str]:
        pairs = self._do(now, self.sched.pop_ready, limit, now)
        assert all(new is S.RUNNING for _, new in pairs)
        return [tid for tid, _ in pairs]

    def ok(
        self, tid: str, now: float = 0.0, attempt: int | None = None
    ) -> list[tuple[str, TaskState]]:
        a = self.sched.attempt(tid) if attempt is None else attempt
        return self._do(now, self.sched.record, tid, a, True, now)

    def fail(self, tid: str, now: float = 0.0, error: str = "boom") -> list[tuple[str, TaskState]]:
        a = self.sched.attempt(tid)
        return self._do(now, self.sched.record, tid, a, False, now, error)

    def due(self, now: float) -> list[tuple[str, TaskState]]:
        return self._do(now, self.sched.due, now)

    def cancel(self, now: float = 0.0) -> list[tuple[str, TaskState]]:
        return self._do(now, self.sched.cancel, now)

    def run_all(self, now: float = 0.0, fail: Iterable[str] = ()) -> list[str]:
        """Run every ready task to the end in pop order; return the order started."""
        failing = set(fail)
        order: list[str] = []
        while not self.sched.finished:
            started = self.pop(now=now)
            assert started, self.sched.states()
            for tid in started:
                order.append(tid)
                if tid in failing:
                    self.fail(tid, now)
                else:
                    self.ok(tid, now)
        return order


def drive(
    upstream: dict[str, list[str]],
    *,
    failure_strategy: str = "continue",
    restored: Iterable[str] = (),
    attempts: dict[str, int] | None = None,
    rules: dict[str, TriggerRule] | None = None,
    retries: dict[str, RetryPolicy] | None = None,
    priorities: dict[str, int] | None = None,
) -> Driver:
    restored = list(restored)
    sched = sched_of(
        upstream,
        failure_strategy=failure_strategy,
        restored=restored,
        attempts=attempts,
        rules=rules,
        retries=retries,
        priorities=priorities,
    )
    return Driver(sched, restored)


# -- shapes ------------------------------------------------------------------------


def test_empty_plan_is_finished_and_successful() -> None:
    d = drive({})
    assert d.start() == []
    assert d.sched.finished
    assert d.sched.run_state() is R.SUCCESS
    assert d.pop() == []


def test_chain() -> None:
    d = drive({"a": [], "b": ["a"], "c": ["b"]})
    assert d.sched.run_state() is R.RUNNING
    assert d.start(1.0) == [("a", S.QUEUED)]
    assert d.sched.states() == {"a": S.QUEUED, "b": S.PENDING, "c": S.PENDING}
    assert d.pop(now=2.0) == ["a"]
    assert d.sched.attempt("a") == 1
    assert d.sched.running == 1
    assert not d.sched.has_ready
    assert d.ok("a", 3.0) == [("a", S.SUCCESS), ("b", S.QUEUED)]
    assert d.sched.running == 0
    assert d.pop(now=4.0) == ["b"]
    assert d.ok("b", 5.0) == [("b", S.SUCCESS), ("c", S.QUEUED)]
    assert d.pop(now=6.0) == ["c"]
    assert not d.sched.finished
    assert d.ok("c", 7.0) == [("c", S.SUCCESS)]
    assert d.sched.finished
    assert d.sched.run_state() is R.SUCCESS
    assert {t: d.sched.attempt(t) for t in "abc"} == {"a": 1, "b": 1, "c": 1}


def test_diamond_joins_only_when_both_sides_succeed() -> None:
    d = drive({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    d.start()
    d.pop()
    assert d.ok("a") == [("a", S.SUCCESS), ("b", S.QUEUED), ("c", S.QUEUED)]
    assert d.pop() == ["b", "c"]
    assert d.ok("c") == [("c", S.SUCCESS)]
    assert d.sched.state("d") is S.PENDING
    assert d.ok("b") == [("b", S.SUCCESS), ("d", S.QUEUED)]
    assert d.pop() == ["d"]
    d.ok("d")
    assert d.sched.run_state() is R.SUCCESS


def test_fan_out_fan_in() -> None:
    n = 20
    mids = [f"m{i}" for i in range(n)]
    upstream: dict[str, list[str]] = {"root": [], **{m: ["root"] for m in mids}, "sink": mids}
    d = drive(upstream)
    d.start()
    d.pop()
    out = d.ok("root")
    assert out == [("root", S.SUCCESS)] + [(m, S.QUEUED) for m in mids]
    assert d.pop() == mids
    assert d.sched.running == n
    for m in reversed(mids[1:]):
        assert d.ok(m) == [(m, S.SUCCESS)]
    assert d.sched.state("sink") is S.PENDING
    assert d.ok(mids[0]) == [(mids[0], S.SUCCESS), ("sink", S.QUEUED)]
    assert d.run_all() == ["sink"]
    assert d.sched.run_state() is R.SUCCESS


def test_run_all_follows_a_topological_order() -> None:
    upstream = {"a": [], "b": ["a"], "c": ["a"], "d": ["b"], "e": ["c", "d"], "f": []}
    d = drive(upstream)
    d.start()
    order = d.run_all()
    assert sorted(order) == sorted(upstream)
    pos = {t: i for i, t in enumerate(order)}
    for t, ups in upstream.items():
        assert all(pos[u] < pos[t] for u in ups)


# -- priority and limits --------------------------------------------------------------


def test_pop_ready_highest_priority_first() -> None:
    d = drive(
        {"low": [], "high": [], "mid": [], "neg": []},
        priorities={"low": 0, "high": 100, "mid": 10, "neg": -10},
    )
    d.start()
    assert d.pop() == ["high", "mid", "low", "neg"]


def test_pop_ready_ties_by_order_they_became_ready() -> None:
    upstream = {"a": [], "b": [], "after_b": ["b"], "after_a": ["a"], "c": []}
    d = drive(upstream)
    d.start()
    assert d.pop(limit=2) == ["a", "b"]
    d.ok("b")
    d.ok("a")
    # c was ready at start; after_b became ready before after_a.
    assert d.pop() == ["c", "after_b", "after_a"]


def test_later_higher_priority_overtakes_earlier_ready() -> None:
    d = drive({"a": [], "x": [], "y": [], "urgent": ["a"]}, priorities={"urgent": 5})
    d.start()
    assert d.pop(limit=1) == ["a"]
    d.ok("a")
    assert d.pop() == ["urgent", "x", "y"]


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        pytest.param([0], [[]], id="zero"),
        pytest.param([-1], [[]], id="negative"),
        pytest.param([1, 1], [["t0"], ["t1"]], id="one-by-one"),
        pytest.param([2, 10, 1], [["t0", "t1"], ["t2", "t3", "t4"], []], id="rest"),
        pytest.param([5], [["t0", "t1", "t2", "t3", "t4"]], id="exact"),
    ],
)
def test_pop_ready_respects_limit(limits: list[int], expected: list[list[str]]) -> None:
    d = drive({f"t{i}": [] for i in range(5)})
    d.start()
    got = [d.pop(limit=n) for n in limits]
    assert got == expected
    popped = sum(len(g) for g in expected)
    assert d.sched.running == popped
    assert d.sched.has_ready is (popped < 5)


# -- retries ------------------------------------------------------------------------


def test_retry_fixed_delay_then_fail() -> None:
    retry = RetryPolicy(max_retries=2, delay_seconds=5.0)
    d = drive({"a": [], "b": ["a"]}, retries={"a": retry})
    d.start(0.0)
    assert d.sched.next_due() is None
    assert d.pop(now=1.0) == ["a"]
    assert d.sched.attempt("a") == 1

    assert d.fail("a", 10.0, "first") == [("a", S.UP_FOR_RETRY)]
    (t,) = d.last
    assert t.due_at == 15.0
    assert t.message == "first"
    assert t.attempt == 1
    assert d.sched.running == 0
    assert d.sched.next_due() == 15.0
    assert not d.sched.has_ready
    assert d.sched.state("b") is S.PENDING
    assert d.due(14.999) == []
    assert d.sched.state("a") is S.UP_FOR_RETRY
    assert d.due(15.0) == [("a", S.QUEUED)]
    assert d.sched.next_due() is None
    assert d.pop(now=16.0) == ["a"]
    assert d.sched.attempt("a") == 2

    assert d.fail("a", 20.0) == [("a", S.UP_FOR_RETRY)]
    assert d.last[0].due_at == 25.0
    assert d.due(30.0) == [("a", S.QUEUED)]  # late is fine
    assert d.pop(now=30.0) == ["a"]
    assert d.sched.attempt("a") == 3

    assert d.fail("a", 31.0, "third") == [("a", S.FAILED), ("b", S.UPSTREAM_FAILED)]
    assert d.last[0].message == "third"
    assert d.last[0].due_at is None
    assert d.sched.finished
    assert d.sched.run_state() is R.FAILED
    assert d.sched.attempt("a") == 3


def test_retry_exponential_due_times() -> None:
    retry = RetryPolicy(
        max_retries=4, delay_seconds=2.0, backoff="exponential", max_delay_seconds=5.0
    )
    d = drive({"a": []}, retries={"a": retry})
    d.start()
    now = 100.0
    dues = []
    for _ in range(4):
        d.pop(now=now)
        d.fail("a", now)
        due_at = d.last[0].due_at
        assert due_at is not None
        dues.append(due_at - now)
        assert d.sched.next_due() == due_at
        now = due_at
        d.due(now)
    assert dues == [2.0, 4.0, 5.0, 5.0]
    d.pop(now=now)
    assert d.sched.attempt("a") == 5
    assert d.ok("a", now) == [("a", S.SUCCESS)]
    assert d.sched.run_state() is R.SUCCESS


def test_retry_then_success_runs_downstream() -> None:
    d = drive({"a": [], "b": ["a"]}, retries={"a": RetryPolicy(max_retries=1)})
    d.start()
    d.pop()
    d.fail("a")
    assert d.last[0].due_at == 0.0
    assert d.due(0.0) == [("a", S.QUEUED)]
    d.pop()
    assert d.ok("a") == [("a", S.SUCCESS), ("b", S.QUEUED)]
    assert d.run_all() == ["b"]
    assert d.sched.run_state() is R.SUCCESS


def test_next_due_is_the_earliest_and_due_requeues_in_due_order() -> None:
    retries = {
        "slow": RetryPolicy(max_retries=1, delay_seconds=30.0),
        "fast": RetryPolicy(max_retries=1, delay_seconds=10.0),
    }
    d = drive({"slow": [], "fast": []}, retries=retries)
    d.start()
    d.pop()
    d.fail("slow", 0.0)
    d.fail("fast", 5.0)
    assert d.sched.next_due() == 15.0
    assert d.due(15.0) == [("fast", S.QUEUED)]
    assert d.sched.next_due() == 30.0
    assert d.due(100.0) == [("slow", S.QUEUED)]
    assert d.sched.next_due() is None


# -- failures --------------------------------------------------------------------------


def test_downstream_of_failure_is_upstream_failed_at_once() -> None:
    upstream = {"a": [], "b": ["a"], "c": ["b"], "d": ["c", "x"], "x": [], "y": ["x"]}
    d = drive(upstream)
    d.start()
    assert d.pop() == ["a", "x"]
    out = d.fail("a", 1.0)
    assert out[0] == ("a", S.FAILED)
    assert sorted(out[1:]) == [
        ("b", S.UPSTREAM_FAILED),
        ("c", S.UPSTREAM_FAILED),
        ("d", S.UPSTREAM_FAILED),
    ]
    assert d.sched.state("x") is S.RUNNING
    assert not d.sched.finished
    assert d.sched.run_state() is R.RUNNING
    assert d.ok("x", 2.0) == [("x", S.SUCCESS), ("y", S.QUEUED)]
    assert d.run_all() == ["y"]
    assert d.sched.states() == {
        "a": S.FAILED,
        "b": S.UPSTREAM_FAILED,
        "c": S.UPSTREAM_FAILED,
        "d": S.UPSTREAM_FAILED,
        "x": S.SUCCESS,
        "y": S.SUCCESS,
    }
    assert d.sched.run_state() is R.FAILED


def test_fail_fast_cancels_every_open_task() -> None:
    upstream = {"a": [], "b": [], "c": [], "d": ["a"], "e": ["b"], "r": []}
    d = drive(
        upstream,
        failure_strategy="fail_fast",
        retries={"r": RetryPolicy(max_retries=3, delay_seconds=60.0)},
    )
    d.start()
    assert d.pop(limit=2) == ["a", "b"]  # c stays queued
    d.pop(limit=1)  # c running
    d.pop(limit=1)  # r running
    d.fail("r", 0.0)  # retries left: up_for_retry, nothing cancelled
    assert d.sched.state("r") is S.UP_FOR_RETRY
    assert d.ok("b") == [("b", S.SUCCESS), ("e", S.QUEUED)]
    # now: a, c running; e queued; d pending; r up_for_retry
    out = d.fail("a", 3.0)
    assert out[0] == ("a", S.FAILED)
    assert sorted(out[1:]) == [
        ("c", S.CANCELLED),
        ("d", S.CANCELLED),
        ("e", S.CANCELLED),
        ("r", S.CANCELLED),
    ]
    assert all(t.message and "fail_fast" in t.message for t in d.last[1:])
    assert d.sched.running == 0
    assert d.sched.finished
    assert d.pop() == []
    assert d.sched.next_due() is None
    assert d.sched.run_state() is R.FAILED
    assert d.sched.state("b") is S.SUCCESS


def test_fail_fast_with_retries_left_does_not_cancel() -> None:
    d = drive(
        {"a": [], "b": []},
        failure_strategy="fail_fast",
        retries={"a": RetryPolicy(max_retries=1)},
    )
    d.start()
    d.pop()
    assert d.fail("a") == [("a", S.UP_FOR_RETRY)]
    assert d.sched.state("b") is S.RUNNING
    d.due(0.0)
    d.pop()
    assert d.fail("a") == [("a", S.FAILED), ("b", S.CANCELLED)]
    assert d.sched.run_state() is R.FAILED


def test_continue_lets_independent_branches_finish() -> None:
    upstream = {"a": [], "a2": ["a"], "b": [], "b2": ["b"], "b3": ["b2"]}
    d = drive(upstream)
    d.start()
    order = d.run_all(fail={"a"})
    assert order == ["b", "a", "b2", "b3"]  # b heads the longer chain: it goes first
    assert d.sched.states() == {
        "a": S.FAILED,
        "a2": S.UPSTREAM_FAILED,
        "b": S.SUCCESS,
        "b2": S.SUCCESS,
        "b3": S.SUCCESS,
    }
    assert d.sched.run_state() is R.FAILED


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        pytest.param(TR.ALL_SUCCESS, S.UPSTREAM_FAILED, id="all_success"),
        pytest.param(TR.ALL_DONE, S.QUEUED, id="all_done"),
        pytest.param(TR.ONE_SUCCESS, S.QUEUED, id="one_success"),
        pytest.param(TR.NONE_FAILED, S.UPSTREAM_FAILED, id="none_failed"),
        pytest.param(TR.ONE_FAILED, S.QUEUED, id="one_failed"),
        pytest.param(TR.ALL_FAILED, S.SKIPPED, id="all_failed"),
    ],
)
def test_trigger_rule_of_join_after_one_failure(rule: TriggerRule, expected: TaskState) -> None:
    d = drive({"ok": [], "bad": [], "join": ["ok", "bad"]}, rules={"join": rule})
    d.start()
    d.pop()
    d.ok("ok")
    d.fail("bad")
    assert d.sched.state("join") is expected


def test_cancelled_upstream_counts_as_upstream_failed_for_all_done() -> None:
    # all_done runs after a failure, but a cancelled run cancels it outright.
    d = drive({"a": [], "b": ["a"]}, rules={"b": TR.ALL_DONE})
    d.start()
    d.pop()
    assert d.cancel(1.0) == [("a", S.CANCELLED), ("b", S.CANCELLED)]


def test_skipped_task_propagates_and_run_still_succeeds() -> None:
    rules = {"only_on_failure": TR.ALL_FAILED, "after": TR.ALL_SUCCESS}
    d = drive({"a": [], "only_on_failure": ["a"], "after": ["only_on_failure"]}, rules=rules)
    d.start()
    d.pop()
    assert d.ok("a") == [
        ("a", S.SUCCESS),
        ("only_on_failure", S.SKIPPED),
        ("after", S.SKIPPED),
    ]
    assert d.sched.finished
    assert d.sched.run_state() is R.SUCCESS


# -- cancel -----------------------------------------------------------------------------


def test_cancel_mid_run() -> None:
    upstream = {"a": [], "b": ["a"], "c": [], "d": [], "e": []}
    d = drive(upstream, retries={"e": RetryPolicy(max_retries=2, delay_seconds=9.0)})
    d.start()
    assert d.pop(limit=2) == ["a", "c"]
    d.pop(limit=1)  # d
    d.pop(limit=1)  # e
    d.ok("c")
    d.fail("e")
    assert d.sched.next_due() == 9.0
    d.sched.due(0.0)  # nothing due yet
    out = d.cancel(5.0)
    assert sorted(out) == [
        ("a", S.CANCELLED),
        ("b", S.CANCELLED),
        ("d", S.CANCELLED),
        ("e", S.CANCELLED),
    ]
    assert all(t.message == "cancelled by request" for t in d.last)
    assert d.sched.finished
    assert d.sched.running == 0
    assert d.sched.next_due() is None
    assert d.due(100.0) == []
    assert d.pop() == []
    assert d.sched.run_state() is R.CANCELLED
    assert d.sched.state("c") is S.SUCCESS


def test_cancel_with_custom_message_and_queued_tasks() -> None:
    d = drive({"a": [], "b": []})
    d.start()
    out = d.sched.cancel(2.0, "stop")
    assert [(t.task_id, t.old, t.new, t.message, t.at) for t in out] == [
        ("a", S.QUEUED, S.CANCELLED, "stop", 2.0),
        ("b", S.QUEUED, S.CANCELLED, "stop", 2.0),
    ]
    assert d.sched.run_state() is R.CANCELLED


def test_cancel_after_a_failure_reports_failed() -> None:
    d = drive({"a": [], "b": []})
    d.start()
    d.pop()
    d.fail("a")
    d.cancel()
    assert d.sched.run_state() is R.FAILED


def test_cancel_of_a_finished_run_changes_nothing() -> None:
    d = drive({"a": []})
    d.start()
    d.run_all()
    assert d.sched.run_state() is R.SUCCESS
    assert d.cancel() == []
    # A finished run's state is final (success -> cancelled is not a run transition).
    assert d.sched.run_state() is R.SUCCESS


# -- stale and late reports -------------------------------------------------------------


def _stale_setup() -> Driver:
    upstream = {"run1": [], "retry": [], "done": [], "queued": [], "pend": ["queued"], "x": []}
    d = drive(
        upstream,
        retries={"retry": RetryPolicy(max_retries=3, delay_seconds=10.0)},
        priorities={"run1": 1, "retry": 1, "done": 1},  # before 'queued' (higher rank)
    )
    d.start()
    d.pop(limit=3)  # run1, retry, done
    d.fail("retry")
    d.ok("done")
    return d


@pytest.mark.parametrize(
    ("tid", "attempt", "ok"),
    [
        pytest.param("run1", 2, True, id="future-attempt"),
        pytest.param("run1", 0, False, id="older-attempt"),
        pytest.param("retry", 1, True, id="up-for-retry-same-attempt"),
        pytest.param("retry", 2, False, id="up-for-retry-next-attempt"),
        pytest.param("done", 1, False, id="already-success"),
        pytest.param("queued", 1, True, id="queued-not-started"),
        pytest.param("queued", 0, True, id="queued-attempt-zero"),
        pytest.param("pend", 1, False, id="pending"),
    ],
)
def test_stale_record_changes_nothing(tid: str, attempt: int, ok: bool) -> None:
    d = _stale_setup()
    before = d.sched.states()
    attempts = {t: d.sched.attempt(t) for t in before}
    running, due = d.sched.running, d.sched.next_due()
    assert d.sched.record(tid, attempt, ok, 50.0, "late") == []
    assert d.sched.states() == before
    assert {t: d.sched.attempt(t) for t in before} == attempts
    assert (d.sched.running, d.sched.next_due()) == (running, due)


def test_record_after_cancel_is_ignored() -> None:
    d = drive({"a": [], "b": ["a"]})
    d.start()
    d.pop()
    d.cancel()
    assert d.sched.record("a", 1, True, 1.0) == []
    assert d.sched.record("a", 1, False, 1.0) == []
    assert d.sched.state("a") is S.CANCELLED
    assert d.sched.state("b") is S.CANCELLED
    assert d.sched.running == 0


def test_record_after_fail_fast_is_ignored() -> None:
    d = drive({"a": [], "b": [], "c": ["b"]}, failure_strategy="fail_fast")
    d.start()
    d.pop()
    d.fail("a")
    assert d.sched.record("b", 1, True, 1.0) == []
    assert d.sched.state("b") is S.CANCELLED
    assert d.sched.state("c") is S.CANCELLED


def test_second_report_of_same_attempt_is_ignored() -> None:
    d = drive({"a": [], "b": ["a"]})
    d.start()
    d.pop()
    d.ok("a")
    before = d.sched.states()
    assert d.sched.record("a", 1, True, 1.0) == []
    assert d.sched.record("a", 1, False, 1.0) == []
    assert d.sched.states() == before


# -- resume ---------------------------------------------------------------------------


def test_restored_tasks_are_not_run_again() -> None:
    upstream = {"a": [], "b": ["a"], "c": ["b"], "x": []}
    d = drive(upstream, restored=["a"])
    assert d.sched.state("a") is S.PENDING  # decided at start
    out = d.start(7.0)
    assert sorted(out) == [("b", S.QUEUED), ("x", S.QUEUED)]
    assert d.sched.state("a") is S.SUCCESS
    order = d.run_all()
    assert sorted(order) == ["b", "c", "x"]
    assert d.sched.attempt("a") == 0
    assert d.sched.run_state() is R.SUCCESS


def test_restored_partial_diamond_waits_for_the_other_side() -> None:
    upstream = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    d = drive(upstream, restored=["a", "b"])
    assert d.start() == [("c", S.QUEUED)]
    assert d.pop() == ["c"]
    assert d.ok("c") == [("c", S.SUCCESS), ("d", S.QUEUED)]
    assert d.run_all() == ["d"]


def test_everything_restored_is_finished_at_start() -> None:
    upstream = {"a": [], "b": ["a"]}
    d = drive(upstream, restored=["a", "b"])
    assert d.start() == []
    assert d.sched.finished
    assert d.sched.run_state() is R.SUCCESS
    assert d.pop() == []


def test_attempts_continue_numbering() -> None:
    d = drive(
        {"a": [], "b": []},
        attempts={"a": 2, "b": 0},
        retries={"a": RetryPolicy(max_retries=5)},
    )
    assert d.sched.attempt("a") == 2
    d.start()
    assert d.last[0].attempt == 2  # queued carries the attempts made so far
    d.pop()
    assert d.sched.attempt("a") == 3
    assert d.sched.attempt("b") == 1
    d.fail("a")
    assert d.last[0].attempt == 3
    d.due(0.0)
    d.pop()
    assert d.sched.attempt("a") == 4
    assert d.sched.record("a", 3, True, 0.0) == []  # the old number is stale now
    assert d.ok("a") == [("a", S.SUCCESS)]


def test_resumed_task_gets_its_whole_retry_budget_again() -> None:
    # "a" used 3 attempts before the resume; max_retries=1 allows 2 more here.
    d = drive({"a": []}, attempts={"a": 3}, retries={"a": RetryPolicy(max_retries=1)})
    d.start()
    d.pop()
    assert d.sched.attempt("a") == 4
    d.fail("a")
    assert d.last[0].new is S.UP_FOR_RETRY
    d.due(0.0)
    d.pop()
    assert d.sched.attempt("a") == 5
    d.fail("a")
    assert d.last[0].new is S.FAILED


# -- run state ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fail", "cancel_after", "expected"),
    [
        pytest.param(set(), False, R.SUCCESS, id="all-success"),
        pytest.param({"a"}, False, R.FAILED, id="root-failed"),
        pytest.param({"leaf"}, False, R.FAILED, id="leaf-failed"),
        pytest.param({"a", "x"}, False, R.FAILED, id="two-failed"),
        pytest.param(set(), True, R.CANCELLED, id="cancelled"),
        pytest.param({"x"}, True, R.FAILED, id="failed-then-cancelled"),
    ],
)
def test_run_state_for_outcome_mixes(
    fail: set[str], cancel_after: bool, expected: RunState
) -> None:
    upstream = {"a": [], "leaf": ["a"], "x": [], "cleanup": ["leaf", "x"]}
    d = drive(upstream, rules={"cleanup": TR.ALL_DONE})
    d.start()
    if cancel_after:
        for tid in d.pop(limit=2):  # a, x
            (d.fail if tid in fail else d.ok)(tid)
        assert d.sched.run_state() is R.RUNNING
        d.cancel()
    else:
        d.run_all(fail=fail)
    assert d.sched.finished
    assert d.sched.run_state() is expected


def test_run_state_is_running_until_every_task_is_final() -> None:
    d = drive({"a": [], "b": []}, retries={"a": RetryPolicy(max_retries=1)})
    assert d.sched.run_state() is R.RUNNING
    d.start()
    d.pop()
    d.ok("b")
    d.fail("a")
    assert d.sched.run_state() is R.RUNNING  # a is up_for_retry
    d.due(0.0)
    assert d.sched.run_state() is R.RUNNING
    d.pop()
    d.ok("a")
    assert d.sched.run_state() is R.SUCCESS


def test_start_twice_raises() -> None:
    d = drive({"a": []})
    d.start()
    with pytest.raises(RuntimeError, match="twice"):
        d.sched.start(1.0)


# -- from a Pipeline ------------------------------------------------------------------------


def _noop(*args: object) -> None:
    return None


def test_engine_plan_from_pipeline_resolves_policies() -> None:
    fast = RetryPolicy(max_retries=2, delay_seconds=1.0)
    default_retry = RetryPolicy(max_retries=1)
    pipeline = Pipeline(
        "p",
        defaults=TaskDefaults(retry=default_retry, priority=3, trigger_rule=TR.ALL_DONE),
        tasks=[
            Task("a", _noop),
            Task("b", _noop, upstream=["a"], retry=fast, priority=9, trigger_rule="one_success"),
            Task("c", _noop, upstream=["b"], after=["a"]),
        ],
    )
    plan = EnginePlan.from_pipeline(pipeline)
    assert plan.ids == ["a", "b", "c"]
    assert plan.upstream == [[], [0], [1, 0]]
    assert plan.rules == [TR.ALL_DONE, TR.ONE_SUCCESS, TR.ALL_DONE]
    assert plan.retries == [default_retry, fast, default_retry]
    assert plan.priorities == [3, 9, 3]


# -- scale: no recursion, each completion O(out-degree) -------------------------------------

N = 100_000


def test_100k_chain_runs_and_fails_without_recursion() -> None:
    upstream = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(N)}
    sched = Scheduler(make_plan(upstream))
    sched.start(0.0)
    for i in range(N // 2):
        (t,) = sched.pop_ready(10, float(i))
        assert t.task_id == f"t{i}"
        sched.record(t.task_id, 1, True, float(i))
    (t,) = sched.pop_ready(10, 1.0)
    out = sched.record(t.task_id, 1, False, 1.0)
    # the failure reaches the end of the chain in one call
    assert len(out) == N - N // 2
    assert out[-1].task_id == f"t{N - 1}"
    assert out[-1].new is S.UPSTREAM_FAILED
    assert sched.finished
    assert sched.run_state() is R.FAILED


def test_100k_fan_out_fan_in() -> None:
    mids = [f"m{i}" for i in range(N)]
    upstream: dict[str, list[str]] = {"root": [], **{m: ["root"] for m in mids}, "sink": mids}
    sched = Scheduler(make_plan(upstream))
    sched.start(0.0)
    (root,) = sched.pop_ready(N, 0.0)
    assert len(sched.record("root", 1, True, 0.0)) == N + 1
    started = sched.pop_ready(N + 10, 1.0)
    assert len(started) == N
    assert sched.running == N
    for t in started[:-1]:
        assert len(sched.record(t.task_id, 1, True, 2.0)) == 1
    last = sched.record(started[-1].task_id, 1, True, 2.0)
    assert [(t.task_id, t.new) for t in last] == [
        (started[-1].task_id, S.SUCCESS),
        ("sink", S.QUEUED),
    ]
    (sink,) = sched.pop_ready(1, 3.0)
    assert sink.task_id == "sink"
    sched.record("sink", 1, True, 3.0)
    assert sched.finished
    assert sched.run_state() is R.SUCCESS
    assert root.task_id == "root"


def test_100k_fan_out_fail_fast_cancels_all() -> None:
    mids = [f"m{i}" for i in range(N)]
    upstream: dict[str, list[str]] = {"root": [], **{m: ["root"] for m in mids}, "sink": mids}
    sched = Scheduler(make_plan(upstream), failure_strategy="fail_fast")
    sched.start(0.0)
    sched.pop_ready(1, 0.0)
    sched.record("root", 1, True, 0.0)
    sched.pop_ready(N, 1.0)
    out = sched.record("m0", 1, False, 2.0)
    assert len(out) == N + 1  # m0 failed, N - 1 running cancelled, sink cancelled
    assert sched.running == 0
    assert sched.finished
    assert sched.run_state() is R.FAILED
    assert all(s in FINAL_TASK_STATES for s in sched.states().values())
