"""The engine's resilience decisions with a fake clock: non-retryable and fatal
failures, ``will_retry``, ``abort`` (run timeout), success notes (fallback,
cache), and the circuit breaker's pure state machine."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from stageflow.engine import EnginePlan, RunState, Scheduler, TaskState, Transition
from stageflow.engine.circuit import CircuitState, admit, open_message, record_result
from stageflow.engine.states import TASK_TRANSITIONS
from stageflow.spec.models import RetryPolicy, TriggerRule

S = TaskState
R = RunState
RETRY_2 = RetryPolicy(max_retries=2, delay_seconds=10.0)


def scheduler(
    upstream: dict[str, list[str]],
    *,
    retries: dict[str, RetryPolicy] | None = None,
    failure_strategy: str = "continue",
) -> Scheduler:
    ids = list(upstream)
    index = {t: i for i, t in enumerate(ids)}
    plan = EnginePlan(
        ids=ids,
        upstream=[[index[u] for u in upstream[t]] for t in ids],
        rules=[TriggerRule.ALL_SUCCESS] * len(ids),
        retries=[(retries or {}).get(t, RetryPolicy()) for t in ids],
        priorities=[0] * len(ids),
    )
    return Scheduler(plan, failure_strategy=failure_strategy)


def checked(sched: Scheduler, before: dict[str, TaskState], out: list[Transition]) -> None:
    """Every transition is legal and the states end where the scheduler says."""
    current = dict(before)
    for t in out:
        assert t.old is current[t.task_id]
        assert t.new in TASK_TRANSITIONS[t.old]
        current[t.task_id] = t.new
    assert current == sched.states()


def record(sched: Scheduler, tid: str, ok: bool, now: float, **kw: object) -> list[Transition]:
    before = sched.states()
    out = sched.record(tid, sched.attempt(tid), ok, now, "boom" if not ok else None, **kw)  # type: ignore[arg-type]
    checked(sched, before, out)
    return out


# -- retryable / fatal ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retryable", "fatal", "expected"),
    [
        pytest.param(True, False, S.UP_FOR_RETRY, id="retryable"),
        pytest.param(False, False, S.FAILED, id="not-in-retry-on"),
        pytest.param(True, True, S.FAILED, id="fatal-is-never-retried"),
        pytest.param(False, True, S.FAILED, id="fatal-and-not-retryable"),
    ],
)
def test_a_failure_with_retries_left(retryable: bool, fatal: bool, expected: TaskState) -> None:
    sched = scheduler({"a": []}, retries={"a": RETRY_2})
    sched.start(0.0)
    sched.pop_ready(1, 0.0)
    will = sched.will_retry("a", 1, retryable=retryable, fatal=fatal)
    assert will is (expected is S.UP_FOR_RETRY)
    out = record(sched, "a", False, 5.0, retryable=retryable, fatal=fatal)
    assert out[0].new is expected
    assert out[0].message == "boom"
    if expected is S.UP_FOR_RETRY:
        assert out[0].due_at == 15.0
        assert sched.next_due() == 15.0
    else:
        assert sched.next_due() is None
        assert sched.run_state() is R.FAILED


@pytest.mark.parametrize("strategy", ["continue", "fail_fast"])
def test_a_fatal_error_stops_the_run_whatever_the_strategy(strategy: str) -> None:
    # two independent branches: a -> b and c -> d; c is running when a fails fatally
    sched = scheduler(
        {"a": [], "b": ["a"], "c": [], "d": ["c"], "e": []},
        retries={"a": RETRY_2},
        failure_strategy=strategy,
    )
    sched.start(0.0)
    sched.pop_ready(2, 0.0)  # a and c run; e waits (limit 2)
    out = record(sched, "a", False, 1.0, fatal=True)
    assert [(t.task_id, t.new) for t in out] == [
        ("a", S.FAILED),
        ("b", S.CANCELLED),
        ("c", S.CANCELLED),
        ("d", S.CANCELLED),
        ("e", S.CANCELLED),
    ]
    assert all("fatal error (boom)" in (t.message or "") for t in out[1:])
    assert sched.finished and sched.running == 0
    assert sched.run_state() is R.FAILED
    # the cancelled attempt of c reports late: ignored
    assert sched.record("c", 1, True, 2.0) == []


def test_continue_without_fatal_lets_independent_branches_go_on() -> None:
    sched = scheduler({"a": [], "b": ["a"], "c": []})
    sched.start(0.0)
    sched.pop_ready(2, 0.0)
    out = record(sched, "a", False, 1.0)
    assert [(t.task_id, t.new) for t in out] == [("a", S.FAILED), ("b", S.UPSTREAM_FAILED)]
    assert sched.state("c") is S.RUNNING


@pytest.mark.parametrize(
    ("max_retries", "failures_before", "expected"),
    [
        pytest.param(0, 0, False, id="no-retries"),
        pytest.param(2, 0, True, id="first-failure"),
        pytest.param(2, 1, True, id="second-failure"),
        pytest.param(2, 2, False, id="third-is-final"),
    ],
)
def test_will_retry_tells_a_final_failure_without_changing_anything(
    max_retries: int, failures_before: int, expected: bool
) -> None:
    sched = scheduler({"a": []}, retries={"a": RetryPolicy(max_retries=max_retries)})
    sched.start(0.0)
    now = 0.0
    for _ in range(failures_before):
        sched.pop_ready(1, now)
        record(sched, "a", False, now)
        sched.due(now)
    sched.pop_ready(1, now)
    before = sched.states()
    assert sched.will_retry("a", sched.attempt("a")) is expected
    assert sched.will_retry("a", sched.attempt("a"), retryable=False) is False
    assert sched.states() == before


def test_a_success_carries_its_note_and_releases_downstream() -> None:
    # a fallback (or a cache hit) ends the task `success` with a message saying so
    sched = scheduler({"a": [], "b": ["a"]})
    sched.start(0.0)
    sched.pop_ready(1, 0.0)
    before = sched.states()
    out = sched.record("a", 1, True, 2.0, "fallback used: the task failed: boom")
    checked(sched, before, out)
    assert [(t.task_id, t.new, t.message) for t in out] == [
        ("a", S.SUCCESS, "fallback used: the task failed: boom"),
        ("b", S.QUEUED, None),
    ]


# -- abort (run timeout) --------------------------------------------------------------------


def test_abort_cancels_what_is_not_final_and_fails_the_run() -> None:
    sched = scheduler({"a": [], "b": ["a"], "c": [], "d": []}, retries={"d": RETRY_2})
    sched.start(0.0)
    sched.pop_ready(3, 0.0)  # a, c, d run
    record(sched, "a", True, 1.0)  # b queued
    record(sched, "d", False, 1.0)  # d up for retry
    assert sched.state("d") is S.UP_FOR_RETRY
    before = sched.states()
    out = sched.abort(9.0, "run timed out after 9s (run_timeout_seconds)")
    checked(sched, before, out)
    assert {t.task_id: t.new for t in out} == {"b": S.CANCELLED, "c": S.CANCELLED, "d": S.CANCELLED}
    assert all(t.message == "run timed out after 9s (run_timeout_seconds)" for t in out)
    assert sched.finished and sched.running == 0 and sched.next_due() is None
    assert sched.run_state() is R.FAILED
    assert sched.aborted == "run timed out after 9s (run_timeout_seconds)"
    assert sched.abort(10.0, "again") == []


def test_abort_of_a_finished_run_changes_nothing() -> None:
    sched = scheduler({"a": []})
    sched.start(0.0)
    sched.pop_ready(1, 0.0)
    record(sched, "a", True, 1.0)
    assert sched.abort(2.0, "late") == []
    assert sched.aborted is None
    assert sched.run_state() is R.SUCCESS


# -- circuit breaker -------------------------------------------------------------------------

THRESHOLD = 3
RESET = 30.0


@dataclass
class Breaker:
    """Drives the pure circuit functions as the runtime does, with a fake clock."""

    state: CircuitState | None = None

    def try_run(self, now: float) -> bool:
        allowed, self.state = admit(self.state, "db", now, RESET)
        return allowed

    def result(self, ok: bool, now: float) -> None:
        self.state = record_result(self.state, "db", ok, now, THRESHOLD, RESET)

    @property
    def phase(self) -> str:
        return self.state.state if self.state else "closed"


# Each step: (time, action, expected phase after it, expected admit answer or None)
# actions: "run" (admit), "ok", "fail" (the result of an admitted attempt)
Step = tuple[float, str, str, bool | None]


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(
            [(0, "run", "closed", True), (1, "ok", "closed", None)],
            id="closed-success-stays-closed",
        ),
        pytest.param(
            [
                (0, "fail", "closed", None),
                (1, "fail", "closed", None),
                (2, "ok", "closed", None),
                (3, "fail", "closed", None),
                (4, "fail", "closed", None),
                (5, "run", "closed", True),
            ],
            id="a-success-resets-the-count",
        ),
        pytest.param(
            [
                (0, "fail", "closed", None),
                (1, "fail", "closed", None),
                (2, "fail", "open", None),
                (3, "run", "open", False),
                (31.9, "run", "open", False),
            ],
            id="threshold-opens-and-fails-fast",
        ),
        pytest.param(
            [
                (0, "fail", "closed", None),
                (1, "fail", "closed", None),
                (2, "fail", "open", None),
                (32, "run", "half_open", True),
                (33, "run", "half_open", False),
                (34, "ok", "closed", None),
                (35, "run", "closed", True),
            ],
            id="half-open-trial-success-closes",
        ),
        pytest.param(
            [
                (0, "fail", "closed", None),
                (1, "fail", "closed", None),
                (2, "fail", "open", None),
                (32, "run", "half_open", True),
                (40, "fail", "open", None),
                (69, "run", "open", False),
                (70, "run", "half_open", True),
            ],
            id="half-open-trial-failure-reopens-for-another-timeout",
        ),
        pytest.param(
            [
                (0, "fail", "closed", None),
                (1, "fail", "closed", None),
                (2, "fail", "open", None),
                (32, "run", "half_open", True),
                (61, "run", "half_open", False),
                (62, "run", "half_open", True),
            ],
            id="a-lost-trial-is-given-up-after-a-timeout",
        ),
        pytest.param(
            [
                (0, "fail", "closed", None),
                (1, "fail", "closed", None),
                (2, "fail", "open", None),
                (3, "ok", "open", None),
                (4, "fail", "open", None),
                (31, "run", "open", False),
                (32, "run", "half_open", True),
            ],
            id="late-results-while-open-change-nothing",
        ),
    ],
)
def test_circuit_breaker(steps: list[Step]) -> None:
    b = Breaker()
    for now, action, phase, answer in steps:
        if action == "run":
            assert b.try_run(now) is answer, (now, b.state)
        else:
            b.result(action == "ok", now)
        assert b.phase == phase, (now, action, b.state)


def test_the_open_until_time_is_the_last_failure_plus_the_timeout() -> None:
    b = Breaker()
    for now in (100.0, 101.0, 102.0):
        b.result(False, now)
    assert b.state == CircuitState("db", "open", 3, 132.0, None, 102.0)


@pytest.mark.parametrize(
    ("state", "needle"),
    [
        pytest.param(
            CircuitState("db", "open", 3, 1_700_000_060.0, None, 1_700_000_000.0),
            "circuit 'db' is open until 2023-11-14T22:14:20+00:00 after 3 consecutive failures",
            id="open",
        ),
        pytest.param(
            CircuitState("db", "half_open", 3, 1_700_000_000.0, 1_700_000_000.0, 1.0),
            "circuit 'db' is open until 2023-11-14T22:13:50+00:00 (a trial attempt is running)",
            id="half-open",
        ),
    ],
)
def test_open_message_names_the_circuit_and_the_time(state: CircuitState, needle: str) -> None:
    assert needle in open_message(state, RESET)
    assert "did not run" in open_message(state, RESET)
