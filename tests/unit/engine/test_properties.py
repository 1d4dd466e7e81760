"""Property tests: random DAGs driven to the end by a simulated executor.

A fake executor starts ready tasks in random batches, finishes random running
ones (a task fails its first ``fails`` attempts, then succeeds), advances a
fake clock to ``next_due`` when nothing runs, and now and then reports a stale
attempt or cancels the run. A mirror of every task's state is kept from the
returned transitions alone and checked against the scheduler after each call.

Checked: every transition is legal, timed ``now`` and starts from the state
the mirror holds; ``pop_ready`` hands out the highest priority first, ties by
the order tasks became ready; no task is queued or started before its trigger
rule allows it; no task runs twice at once; at most ``max_retries + 1``
attempts; retries are due exactly ``retry_delay`` later and never re-queued
early; with ``continue`` the outcome of every task matches a reference
evaluation in index (topological) order; without failures every task runs
exactly once in a topological order; the run state agrees with the tasks'.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from stageflow.engine import EnginePlan, RunState, Scheduler, TaskState, Transition
from stageflow.engine.retry import retry_delay
from stageflow.engine.states import FINAL_TASK_STATES, check_task
from stageflow.spec.models import RetryPolicy, TriggerRule

S = TaskState
TR = TriggerRule
RULES = [TR.ALL_SUCCESS, TR.ALL_DONE, TR.ONE_SUCCESS, TR.NONE_FAILED]
WAITS_FOR_ALL = {TR.ALL_SUCCESS, TR.ALL_DONE, TR.NONE_FAILED}


@dataclass(frozen=True)
class Case:
    upstream: list[list[int]]
    rules: list[TriggerRule]
    priorities: list[int]
    retries: list[RetryPolicy]
    fails: list[int]  # attempts that fail before one succeeds
    failure_strategy: str
    cancel_at_step: int | None

    @property
    def n(self) -> int:
        return len(self.upstream)

    def plan(self) -> EnginePlan:
        return EnginePlan(
            ids=[f"t{i}" for i in range(self.n)],
            upstream=self.upstream,
            rules=self.rules,
            retries=self.retries,
            priorities=self.priorities,
        )


@st.composite
def cases(
    draw: st.DrawFn, *, failures: bool | None = None, rule_choices: list[TriggerRule] = RULES
) -> Case:
    n = draw(st.integers(1, 60))
    upstream: list[list[int]] = []
    if draw(st.booleans()):
        # layered: edges only from a lower layer to a higher one
        layer = sorted(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)))
        for j in range(n):
            earlier = [i for i in range(j) if layer[i] < layer[j]]
            ups = (
                draw(st.lists(st.sampled_from(earlier), max_size=4, unique=True)) if earlier else []
            )
            upstream.append(sorted(ups))
    else:
        # random edges i -> j with i < j
        for j in range(n):
            ups = draw(st.lists(st.integers(0, j - 1), max_size=4, unique=True)) if j else []
            upstream.append(ups)
    rules = draw(st.lists(st.sampled_from(rule_choices), min_size=n, max_size=n))
    priorities = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    retries = draw(
        st.lists(
            st.builds(
                RetryPolicy,
                max_retries=st.integers(0, 2),
                delay_seconds=st.sampled_from([0.0, 1.0, 2.5]),
                backoff=st.sampled_from(["fixed", "exponential"]),
                max_delay_seconds=st.sampled_from([2.0, 3600.0]),
            ),
            min_size=n,
            max_size=n,
        )
    )
    if failures is None:
        failures = draw(st.booleans())
    if failures:
        fails = draw(st.lists(st.one_of(st.just(0), st.integers(0, 3)), min_size=n, max_size=n))
    else:
        fails = [0] * n
    strategy = draw(st.sampled_from(["continue", "fail_fast"]))
    cancel_at = draw(st.one_of(st.none(), st.integers(0, 3 * n))) if failures else None
    return Case(upstream, rules, priorities, retries, fails, strategy, cancel_at)


class Sim:
    """Drives one ``Case`` and keeps a mirror of task states from transitions alone."""

    def __init__(self, case: Case, rnd: random.Random) -> None:
        self.case = case
        self.rnd = rnd
        self.sched = Scheduler(case.plan(), failure_strategy=case.failure_strategy)
        self.ids = case.plan().ids
        self.index = {tid: i for i, tid in enumerate(self.ids)}
        self.state = dict.fromkeys(self.ids, S.PENDING)
        self.attempts = dict.fromkeys(self.ids, 0)
        self.running: set[str] = set()
        self.queued: dict[str, int] = {}  # task -> order it became ready
        self.sequence = 0
        self.due_at: dict[str, float] = {}
        self.starts: list[str] = []
        self.event = 0
        self.succeeded_at: dict[str, int] = {}
        self.started_at: dict[str, list[int]] = {tid: [] for tid in self.ids}
        self.failed_seen = False
        self.started_after_failure = False
        self.cancelled = False
        self.clock = 0.0
        # Reference upward ranks (1 s per task): the number of tasks on the longest
        # path from a task to the end of the DAG, by memoised recursion.
        downstream: list[list[int]] = [[] for _ in self.ids]
        for i, ups in enumerate(case.upstream):
            for u in ups:
                downstream[u].append(i)
        memo: dict[int, int] = {}

        def longest(i: int) -> int:
            if i not in memo:
                memo[i] = 1 + max((longest(d) for d in downstream[i]), default=0)
            return memo[i]

        self.rank = [longest(i) for i in range(len(self.ids))]

    # -- checks on every transition -----------------------------------------------

    def rule_allows(self, i: int) -> bool:
        ups = [self.state[self.ids[u]] for u in self.case.upstream[i]]
        if not ups:
            return True
        rule = self.case.rules[i]
        if rule is TR.ALL_SUCCESS:
            return all(s is S.SUCCESS for s in ups)
        if rule is TR.NONE_FAILED:
            return all(s in (S.SUCCESS, S.SKIPPED) for s in ups)
        if rule is TR.ALL_DONE:
            return all(s in FINAL_TASK_STATES for s in ups)
        assert rule is TR.ONE_SUCCESS
        return any(s is S.SUCCESS for s in ups)

    def apply(self, out: list[Transition]) -> None:
        now = self.clock
        for t in out:
            tid = t.task_id
            i = self.index[tid]
            self.event += 1
            assert t.at == now
            assert t.old is self.state[tid], (t, self.state[tid])
            check_task(tid, t.old, t.new)
            if t.new is S.RUNNING:
                assert tid not in self.running
                self.attempts[tid] += 1
                assert self.rule_allows(i), (t, self.case)
                self.running.add(tid)
                self.starts.append(tid)
                self.started_at[tid].append(self.event)
                if self.failed_seen and self.case.failure_strategy == "fail_fast":
                    self.started_after_failure = True
            assert t.attempt == self.attempts[tid]
            if t.old is S.RUNNING:
                self.running.remove(tid)
            if t.new is S.UP_FOR_RETRY:
                expected = now + retry_delay(self.case.retries[i], t.attempt)
                assert t.due_at == expected
                self.due_at[tid] = expected
            else:
                assert t.due_at is None
            if t.old is S.UP_FOR_RETRY:
                due_at = self.due_at.pop(tid)
                if t.new is S.QUEUED:
                    assert due_at <= now
            if t.old is S.PENDING and t.new is S.QUEUED:
                assert self.rule_allows(i)
            if t.new is S.QUEUED:
                self.sequence += 1
                self.queued[tid] = self.sequence
            if t.old is S.QUEUED:
                del self.queued[tid]
            if t.new is S.SUCCESS:
                self.succeeded_at[tid] = self.event
            if t.new is S.FAILED:
                self.failed_seen = True
            self.state[tid] = t.new
        assert self.state == self.sched.states()
        assert self.sched.running == len(self.running)
        assert self.sched.finished is all(s in FINAL_TASK_STATES for s in self.state.values())

    # -- the simulated executor ---------------------------------------------------------

    def start(self) -> None:
        self.apply(self.sched.start(self.clock))

    def pop(self) -> None:
        limit = self.rnd.randint(1, 4)
        prio = self.case.priorities
        expected = sorted(
            self.queued,
            key=lambda t: (-prio[self.index[t]], -self.rank[self.index[t]], self.queued[t]),
        )
        out = self.sched.pop_ready(limit, self.clock)
        assert [t.task_id for t in out] == expected[:limit]
        self.apply(out)

    def finish_one(self) -> None:
        tid = self.rnd.choice(sorted(self.running))
        self.clock += self.rnd.choice([0.0, 0.25, 1.0])
        attempt = self.sched.attempt(tid)
        if self.rnd.random() < 0.1:
            self.stale_report()
        ok = attempt > self.case.fails[self.index[tid]]
        self.apply(self.sched.record(tid, attempt, ok, self.clock, None if ok else "boom"))

    def stale_report(self) -> None:
        tid = self.rnd.choice(self.ids)
        attempt = self.attempts[tid]
        if self.state[tid] is S.RUNNING:
            attempt += self.rnd.choice([-1, 1])
        before = self.sched.states()
        assert self.sched.record(tid, attempt, self.rnd.random() < 0.5, self.clock) == []
        assert self.sched.states() == before

    def wait_for_retry(self) -> None:
        due = self.sched.next_due()
        assert due is not None, f"stuck: nothing running, ready or due: {self.state}"
        assert due == min(self.due_at.values())
        if due > self.clock:
            assert self.sched.due(self.clock) == []
            self.clock = due
        self.apply(self.sched.due(self.clock))

    def run(self) -> None:
        self.start()
        steps = 0
        while not self.sched.finished:
            steps += 1
            assert steps < 20_000
            if steps == self.case.cancel_at_step:
                out = self.sched.cancel(self.clock)
                assert all(t.new is S.CANCELLED for t in out)
                self.cancelled = True
                self.apply(out)
                break
            if self.sched.has_ready and (not self.running or self.rnd.random() < 0.5):
                self.pop()
            elif self.running:
                self.finish_one()
            else:
                self.wait_for_retry()


def expected_outcomes(case: Case) -> list[TaskState]:
    """Each task's final state under ``continue``, evaluated in index order."""
    out: list[TaskState] = []
    for i in range(case.n):
        ups = [out[u] for u in case.upstream[i]]
        failedish = any(s in (S.FAILED, S.UPSTREAM_FAILED) for s in ups)
        rule = case.rules[i]
        if not ups or rule is TR.ALL_DONE:
            run = True
        elif rule is TR.ALL_SUCCESS:
            if failedish:
                out.append(S.UPSTREAM_FAILED)
                continue
            if any(s is S.SKIPPED for s in ups):
                out.append(S.SKIPPED)
                continue
            run = True
        elif rule is TR.NONE_FAILED:
            run = not failedish
        else:
            run = any(s is S.SUCCESS for s in ups)
            if not run and all(s is S.SKIPPED for s in ups):
                out.append(S.SKIPPED)
                continue
        if not run:
            out.append(S.UPSTREAM_FAILED)
        elif case.fails[i] <= case.retries[i].max_retries:
            out.append(S.SUCCESS)
        else:
            out.append(S.FAILED)
    return out


def run_state_of(states: dict[str, TaskState]) -> RunState:
    values = set(states.values())
    if values & {S.FAILED, S.UPSTREAM_FAILED}:
        return RunState.FAILED
    if S.CANCELLED in values:
        return RunState.CANCELLED
    return RunState.SUCCESS


def check_common(sim: Sim) -> None:
    case = sim.case
    states = sim.sched.states()
    assert sim.sched.finished
    assert all(s in FINAL_TASK_STATES for s in states.values())
    assert sim.running == set()
    assert sim.sched.running == 0
    assert sim.sched.next_due() is None
    assert sim.sched.pop_ready(100, sim.clock) == []
    for i, tid in enumerate(sim.ids):
        made = sim.attempts[tid]
        assert made == sim.sched.attempt(tid)
        assert made <= case.retries[i].max_retries + 1
        assert made == len(sim.started_at[tid])
        if states[tid] is S.SUCCESS:
            assert made == case.fails[i] + 1
        if states[tid] in (S.SKIPPED, S.UPSTREAM_FAILED):
            assert made == 0
        for u in case.upstream[i]:
            if case.rules[i] in WAITS_FOR_ALL and sim.started_at[tid]:
                # every upstream had ended before the first start
                assert states[sim.ids[u]] in FINAL_TASK_STATES
                if sim.ids[u] in sim.succeeded_at:
                    assert sim.succeeded_at[sim.ids[u]] < sim.started_at[tid][0]
    assert sim.sched.run_state() is run_state_of(states)
    if sim.cancelled:
        assert sim.sched.run_state() in (RunState.CANCELLED, RunState.FAILED)
    if case.failure_strategy == "fail_fast":
        assert not sim.started_after_failure
        if S.CANCELLED in states.values() and not sim.cancelled:
            assert S.FAILED in states.values()


@settings(max_examples=150, deadline=None)
@given(case=cases(), rnd=st.randoms(use_true_random=False))
def test_random_dags_run_to_a_consistent_end(case: Case, rnd: random.Random) -> None:
    sim = Sim(case, rnd)
    sim.run()
    check_common(sim)
    states = sim.sched.states()
    if case.failure_strategy == "continue" and not sim.cancelled:
        assert list(states.values()) == expected_outcomes(case)
        assert S.CANCELLED not in states.values()
    if S.FAILED not in states.values() and not sim.cancelled:
        assert S.CANCELLED not in states.values()


@settings(max_examples=100, deadline=None)
@given(case=cases(failures=False), rnd=st.randoms(use_true_random=False))
def test_without_failures_every_task_runs_once_in_topological_order(
    case: Case, rnd: random.Random
) -> None:
    sim = Sim(case, rnd)
    sim.run()
    check_common(sim)
    assert sorted(sim.starts) == sorted(sim.ids)  # each exactly once
    assert all(s is S.SUCCESS for s in sim.sched.states().values())
    assert sim.sched.run_state() is RunState.SUCCESS
    position = {tid: k for k, tid in enumerate(sim.starts)}
    for i, tid in enumerate(sim.ids):
        ups = [sim.ids[u] for u in case.upstream[i]]
        done_before = [sim.succeeded_at[u] < sim.started_at[tid][0] for u in ups]
        if case.rules[i] is TR.ONE_SUCCESS:
            assert not ups or any(done_before)
        else:
            assert all(done_before)
            assert all(position[u] < position[tid] for u in ups)


@settings(max_examples=60, deadline=None)
@given(
    case=cases(failures=False, rule_choices=sorted(WAITS_FOR_ALL)),
    rnd=st.randoms(use_true_random=False),
)
def test_start_order_is_topological_when_every_rule_waits_for_all(
    case: Case, rnd: random.Random
) -> None:
    sim = Sim(case, rnd)
    sim.run()
    position = {tid: k for k, tid in enumerate(sim.starts)}
    assert len(position) == case.n
    for i, tid in enumerate(sim.ids):
        assert all(position[sim.ids[u]] < position[tid] for u in case.upstream[i])
