"""`when:` conditions and branch tasks in the pure engine (fake clock, no sleeps).

The engine asks its caller two questions: ``condition(task_id)`` (True, False,
or an error message) when a task's trigger rule is met, and ``branch(task_id)``
(the chosen downstream ids) when a branch task succeeds.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from stageflow.engine import EnginePlan, RunState, Scheduler, TaskState, Transition
from stageflow.engine.states import TASK_TRANSITIONS
from stageflow.spec.models import RetryPolicy, TriggerRule

S = TaskState
TR = TriggerRule


def plan(
    upstream: dict[str, list[str]],
    *,
    conditional: Iterable[str] = (),
    branching: Iterable[str] = (),
    rules: dict[str, TriggerRule] | None = None,
) -> EnginePlan:
    ids = list(upstream)
    index = {t: i for i, t in enumerate(ids)}
    return EnginePlan(
        ids=ids,
        upstream=[[index[u] for u in upstream[t]] for t in ids],
        rules=[(rules or {}).get(t, TR.ALL_SUCCESS) for t in ids],
        retries=[RetryPolicy() for _ in ids],
        priorities=[0 for _ in ids],
        conditional=[t in set(conditional) for t in ids],
        branching=[t in set(branching) for t in ids],
    )


class Driver:
    """Runs tasks to completion: each popped task succeeds unless told otherwise."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.ran: list[str] = []
        self.now = 0.0

    def run(self, fail: Iterable[str] = ()) -> dict[str, TaskState]:
        failing = set(fail)
        self.check(self.sched.start(self.now))
        while not self.sched.finished:
            started = self.sched.pop_ready(10, self.now)
            assert started, f"stuck: {self.sched.states()}"
            self.check(started)
            for t in started:
                self.now += 1.0
                self.ran.append(t.task_id)
                self.check(
                    self.sched.record(
                        t.task_id, t.attempt, t.task_id not in failing, self.now, "boom"
                    )
                )
        return self.sched.states()

    def check(self, out: list[Transition]) -> None:
        for t in out:
            assert t.new in TASK_TRANSITIONS[t.old], (t.old, t.new)


@pytest.mark.parametrize(
    ("verdict", "expected_c", "expected_d", "run"),
    [
        pytest.param(True, S.SUCCESS, S.SUCCESS, "success", id="true-runs"),
        pytest.param(False, S.SKIPPED, S.SKIPPED, "success", id="false-skips-and-propagates"),
        pytest.param(
            "condition could not be evaluated: no key",
            S.FAILED,
            S.UPSTREAM_FAILED,
            "failed",
            id="error-fails",
        ),
    ],
)
def test_condition_verdicts(
    verdict: bool | str, expected_c: TaskState, expected_d: TaskState, run: str
) -> None:
    asked: list[str] = []

    def condition(task_id: str) -> bool | str:
        asked.append(task_id)
        return verdict

    sched = Scheduler(
        plan({"a": [], "c": ["a"], "d": ["c"]}, conditional=["c"]), condition=condition
    )
    driver = Driver(sched)
    states = driver.run()
    assert asked == ["c"]  # asked once, only when its trigger rule was met
    assert (states["a"], states["c"], states["d"]) == (S.SUCCESS, expected_c, expected_d)
    assert sched.run_state() == run
    assert "c" not in driver.ran or verdict is True


def test_condition_on_a_root_is_decided_at_start() -> None:
    sched = Scheduler(plan({"a": [], "b": []}, conditional=["a"]), condition=lambda t: False)
    assert Driver(sched).run() == {"a": S.SKIPPED, "b": S.SUCCESS}


def test_condition_is_not_asked_when_the_trigger_rule_already_failed() -> None:
    asked: list[str] = []
    sched = Scheduler(
        plan({"a": [], "c": ["a"]}, conditional=["c"]), condition=lambda t: asked.append(t) or True
    )
    assert Driver(sched).run(fail=["a"])["c"] is S.UPSTREAM_FAILED
    assert asked == []


def test_skipped_by_condition_lets_a_none_failed_join_run() -> None:
    upstream = {"a": [], "b": ["a"], "c": ["a"], "join": ["b", "c"]}
    sched = Scheduler(
        plan(upstream, conditional=["b"], rules={"join": TR.NONE_FAILED_MIN_ONE_SUCCESS}),
        condition=lambda t: False,
    )
    states = Driver(sched).run()
    assert states == {"a": S.SUCCESS, "b": S.SKIPPED, "c": S.SUCCESS, "join": S.SUCCESS}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        pytest.param("retrain", {"retrain": S.SUCCESS, "skip": S.SKIPPED}, id="one-id"),
        pytest.param(["retrain", "skip"], {"retrain": S.SUCCESS, "skip": S.SUCCESS}, id="both"),
        pytest.param([], {"retrain": S.SKIPPED, "skip": S.SKIPPED}, id="none"),
    ],
)
def test_branch_follows_the_chosen_downstream(
    choice: str | list[str], expected: dict[str, TaskState]
) -> None:
    upstream = {"check": [], "retrain": ["check"], "skip": ["check"], "report": ["retrain", "skip"]}
    sched = Scheduler(
        plan(upstream, branching=["check"], rules={"report": TR.NONE_FAILED_MIN_ONE_SUCCESS}),
        branch=lambda t: choice,
    )
    states = Driver(sched).run()
    assert {k: states[k] for k in expected} == expected
    # the join runs when at least one branch ran, and is skipped when none did
    assert states["report"] is (S.SUCCESS if choice else S.SKIPPED)
    assert sched.run_state() == RunState.SUCCESS


def test_branch_choosing_a_task_that_is_not_downstream_fails_the_branch_task() -> None:
    sched = Scheduler(
        plan({"check": [], "a": ["check"]}, branching=["check"]), branch=lambda t: ["nope"]
    )
    driver = Driver(sched)
    states = driver.run()
    assert states == {"check": S.FAILED, "a": S.UPSTREAM_FAILED}
    failed = [e for e in sched.states().items() if e[1] is S.FAILED]
    assert failed == [("check", S.FAILED)]
    assert sched.run_state() == RunState.FAILED


def test_validation_then_success_or_cleanup_pattern() -> None:
    """Seed 001: Data Validation -> [success: Model Training, failure: Data Cleanup]."""
    upstream = {"validate": [], "train": ["validate"], "cleanup": ["validate"]}
    rules = {"cleanup": TR.ALL_FAILED}
    ok = Driver(Scheduler(plan(upstream, rules=rules))).run()
    assert (ok["train"], ok["cleanup"]) == (S.SUCCESS, S.SKIPPED)
    bad = Driver(Scheduler(plan(upstream, rules=rules))).run(fail=["validate"])
    assert (bad["train"], bad["cleanup"]) == (S.UPSTREAM_FAILED, S.SUCCESS)


# -- skipping downstream, and making the same decision again on resume ------------------


class Skipper(Driver):
    """A driver whose tasks in ``skipping`` succeed and skip their direct downstream."""

    def __init__(self, sched: Scheduler, skipping: dict[str, str]) -> None:
        super().__init__(sched)
        self.skipping = skipping

    def run(self, fail: Iterable[str] = ()) -> dict[str, TaskState]:
        self.check(self.sched.start(self.now))
        while not self.sched.finished:
            started = self.sched.pop_ready(10, self.now)
            assert started, f"stuck: {self.sched.states()}"
            for t in started:
                self.now += 1.0
                self.ran.append(t.task_id)
                why = self.skipping.get(t.task_id)
                self.check(
                    self.sched.record(t.task_id, t.attempt, True, self.now, skip_downstream=why)
                )
        return self.sched.states()


def test_a_success_may_skip_its_direct_downstream_the_rest_follow_their_rules() -> None:
    upstream = {
        "check": [],
        "retrain": ["check"],
        "score": ["check"],
        "after_retrain": ["retrain"],
        "report": ["retrain", "score"],
        "other": [],
    }
    rules = {"report": TR.NONE_FAILED}
    sched = Scheduler(plan(upstream, rules=rules))
    driver = Skipper(sched, {"check": "drift in 2 columns"})
    states = driver.run()
    assert states == {
        "check": S.SUCCESS,
        "retrain": S.SKIPPED,
        "score": S.SKIPPED,
        "after_retrain": S.SKIPPED,  # all_success after a skipped task
        "report": S.SUCCESS,  # none_failed: skipped upstream are fine
        "other": S.SUCCESS,
    }
    assert sorted(driver.ran) == ["check", "other", "report"]
    assert sched.run_state() == RunState.SUCCESS


def test_the_skip_says_which_task_skipped_and_why() -> None:
    sched = Scheduler(plan({"check": [], "a": ["check"]}))
    sched.start(0.0)
    (t,) = sched.pop_ready(1, 0.0)
    out = sched.record("check", t.attempt, True, 1.0, skip_downstream="3 rows failed")
    skipped = [x for x in out if x.task_id == "a"]
    assert [(x.new, x.message) for x in skipped] == [
        (S.SKIPPED, "skipped: task 'check' skips its downstream (3 rows failed)")
    ]


def test_a_failure_ignores_skip_downstream() -> None:
    sched = Scheduler(plan({"check": [], "a": ["check"]}))
    sched.start(0.0)
    (t,) = sched.pop_ready(1, 0.0)
    sched.record("check", t.attempt, False, 1.0, "boom", skip_downstream="ignored")
    assert sched.states()["a"] is S.UPSTREAM_FAILED


@pytest.mark.parametrize("restored_too", [False, True], ids=["downstream-pending", "restored"])
def test_a_restored_branch_task_skips_its_unchosen_downstream_again(restored_too: bool) -> None:
    """Resume: the branch task's success was committed, its choice is asked again, so
    the branch it did not choose is skipped, not run."""
    upstream = {"pick": [], "left": ["pick"], "right": ["pick"], "join": ["left", "right"]}
    restored = ["pick", "left"] if restored_too else ["pick"]
    sched = Scheduler(
        plan(upstream, branching=["pick"], rules={"join": TR.NONE_FAILED_MIN_ONE_SUCCESS}),
        branch=lambda t: "left",
        restored=restored,
        attempts=dict.fromkeys(restored, 1),
    )
    driver = Driver(sched)
    states = driver.run()
    assert states == {"pick": S.SUCCESS, "left": S.SUCCESS, "right": S.SKIPPED, "join": S.SUCCESS}
    assert "right" not in driver.ran and "pick" not in driver.ran
    assert ("left" in driver.ran) is not restored_too


def test_a_restored_task_that_skipped_its_downstream_skips_it_again() -> None:
    upstream = {"check": [], "retrain": ["check"], "deploy": ["retrain"]}
    asked: list[str] = []

    def skipped(task_id: str) -> str | None:
        asked.append(task_id)
        return "drift" if task_id == "check" else None

    sched = Scheduler(
        plan(upstream), restored=["check"], attempts={"check": 1}, skipped_downstream=skipped
    )
    driver = Driver(sched)
    assert driver.run() == {"check": S.SUCCESS, "retrain": S.SKIPPED, "deploy": S.SKIPPED}
    assert driver.ran == []
    assert asked == ["check"]  # asked of restored tasks only
