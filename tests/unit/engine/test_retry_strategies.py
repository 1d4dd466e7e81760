"""Retry strategies (none, fixed, linear, exponential), deterministic jitter, the
error classes of ``retry_on``, and how specs spell them (seed 000 included)."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow.engine import EnginePlan, Scheduler, TaskState
from stageflow.engine.retry import (
    NOT_RETRYABLE,
    error_matches,
    is_retryable,
    jitter_fraction,
    retry_delay,
    should_retry,
)
from stageflow.errors import InvalidSpec
from stageflow.spec import pipeline_from_data
from stageflow.spec.models import Backoff, RetryPolicy, TriggerRule

S = TaskState


def policy(backoff: Backoff, **kw: Any) -> RetryPolicy:
    return RetryPolicy(backoff=backoff, **{"max_retries": 5, "delay_seconds": 10.0, **kw})


@pytest.mark.parametrize(
    ("retry", "attempt", "expected"),
    [
        pytest.param(policy("none"), 1, 10.0, id="none-delay-is-fixed-but-unused"),
        pytest.param(policy("fixed"), 1, 10.0, id="fixed-1"),
        pytest.param(policy("fixed"), 4, 10.0, id="fixed-4"),
        pytest.param(policy("linear"), 1, 10.0, id="linear-1"),
        pytest.param(policy("linear"), 2, 20.0, id="linear-2"),
        pytest.param(policy("linear"), 5, 50.0, id="linear-5"),
        pytest.param(policy("linear", max_delay_seconds=35.0), 5, 35.0, id="linear-capped"),
        pytest.param(policy("linear"), 10**30, 3600.0, id="linear-huge-attempt-capped"),
        pytest.param(policy("exponential"), 1, 10.0, id="exp-1"),
        pytest.param(policy("exponential"), 3, 40.0, id="exp-3"),
        pytest.param(policy("exponential", max_delay_seconds=60.0), 4, 60.0, id="exp-capped"),
        pytest.param(policy("exponential", delay_seconds=0.0), 9, 0.0, id="exp-zero"),
    ],
)
def test_delay_of_each_strategy(retry: RetryPolicy, attempt: int, expected: float) -> None:
    assert retry_delay(retry, attempt) == expected


@pytest.mark.parametrize(
    ("backoff", "max_retries", "attempt", "retryable", "expected"),
    [
        pytest.param("none", 5, 1, True, False, id="none-never-retries"),
        pytest.param("fixed", 5, 1, True, True, id="fixed-retries"),
        pytest.param("linear", 2, 2, True, True, id="linear-last-retry"),
        pytest.param("linear", 2, 3, True, False, id="linear-spent"),
        pytest.param("exponential", 5, 1, False, False, id="not-retryable-error"),
        pytest.param("fixed", 0, 1, True, False, id="no-retries-configured"),
    ],
)
def test_should_retry(
    backoff: Backoff, max_retries: int, attempt: int, retryable: bool, expected: bool
) -> None:
    retry = policy(backoff, max_retries=max_retries)
    assert should_retry(retry, attempt, retryable=retryable) is expected


# -- jitter ----------------------------------------------------------------------------


@pytest.mark.parametrize("backoff", ["fixed", "linear", "exponential"])
@pytest.mark.parametrize("jitter", [0.25, 0.5, 1.0])
def test_jitter_stays_within_its_fraction_and_is_deterministic(
    backoff: Backoff, jitter: float
) -> None:
    plain = policy(backoff, max_delay_seconds=1e9)
    jittered = policy(backoff, max_delay_seconds=1e9, jitter=jitter)
    for attempt in range(1, 6):
        for key in ("run-1/a", "run-1/b", "run-2/a"):
            full = retry_delay(plain, attempt, key)
            delay = retry_delay(jittered, attempt, key)
            assert full * (1 - jitter) <= delay <= full
            assert delay == retry_delay(jittered, attempt, key)  # no hidden random state


def test_jitter_spreads_tasks_that_fail_together() -> None:
    retry = policy("fixed", jitter=1.0)
    delays = {retry_delay(retry, 1, f"run/{i}") for i in range(50)}
    assert len(delays) == 50
    assert min(delays) < 5.0 < max(delays)


def test_jitter_applies_after_the_cap() -> None:
    retry = policy("exponential", max_delay_seconds=60.0, jitter=0.5)
    fraction = jitter_fraction("k", 30)
    assert retry_delay(retry, 30, "k") == pytest.approx(60.0 * (1 - 0.5 * fraction))


@pytest.mark.parametrize(
    ("key", "attempt"), [("", 1), ("run/a", 1), ("run/a", 2), ("x" * 1000, 10**9)]
)
def test_jitter_fraction_is_in_unit_interval(key: str, attempt: int) -> None:
    assert 0.0 <= jitter_fraction(key, attempt) < 1.0
    assert jitter_fraction(key, attempt) == jitter_fraction(key, attempt)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        pytest.param(True, 1.0, id="true-is-full"),
        pytest.param(False, 0.0, id="false-is-none"),
        pytest.param(0.3, 0.3, id="fraction"),
    ],
)
def test_jitter_accepts_a_flag_or_a_fraction(given: Any, stored: float) -> None:
    assert RetryPolicy(jitter=given).jitter == stored


def test_the_scheduler_hands_its_seed_and_the_task_to_the_jitter() -> None:
    retry = RetryPolicy(max_retries=1, delay_seconds=100.0, jitter=1.0)
    plan = EnginePlan(
        ids=["a", "b"],
        upstream=[[], []],
        rules=[TriggerRule.ALL_SUCCESS] * 2,
        retries=[retry, retry],
        priorities=[0, 0],
    )
    due: dict[tuple[str, str], float] = {}
    for seed in ("run-1", "run-2"):
        sched = Scheduler(plan, jitter_seed=seed)
        sched.start(0.0)
        sched.pop_ready(2, 0.0)
        for tid in ("a", "b"):
            (t,) = sched.record(tid, 1, False, 0.0, "boom")
            assert t.new is S.UP_FOR_RETRY and t.due_at is not None
            assert t.due_at == retry_delay(retry, 1, f"{seed}/{tid}")
            due[(seed, tid)] = t.due_at
    assert len(set(due.values())) == 4


# -- error classes ------------------------------------------------------------------------

VALUE_ERROR = ("builtins.ValueError", "builtins.Exception", "builtins.BaseException")
CONN_RESET = (
    "builtins.ConnectionResetError",
    "builtins.ConnectionError",
    "builtins.OSError",
    "builtins.Exception",
    "builtins.BaseException",
)
CUSTOM = ("shop.api.RateLimited", "shop.api.ApiError", "builtins.Exception")
# TaskFailed(..., retryable=False): the runtime adds NOT_RETRYABLE to its classes.
FINAL = (
    "stageflow.operators.base.TaskFailed",
    "builtins.Exception",
    "builtins.BaseException",
    NOT_RETRYABLE,
)


@pytest.mark.parametrize(
    ("names", "types", "expected"),
    [
        pytest.param(["ValueError"], VALUE_ERROR, True, id="builtin-short-name"),
        pytest.param(["builtins.ValueError"], VALUE_ERROR, True, id="builtin-qualified"),
        pytest.param(["KeyError"], VALUE_ERROR, False, id="other-class"),
        pytest.param(["ConnectionError"], CONN_RESET, True, id="base-class-in-mro"),
        pytest.param(["OSError"], CONN_RESET, True, id="deeper-base-class"),
        pytest.param(["ApiError"], CUSTOM, True, id="custom-base-short"),
        pytest.param(["shop.api.RateLimited"], CUSTOM, True, id="custom-qualified"),
        pytest.param(["api.RateLimited"], CUSTOM, True, id="custom-partial-path"),
        pytest.param(["Limited"], CUSTOM, False, id="no-substring-match"),
        pytest.param(["other.RateLimited"], CUSTOM, False, id="wrong-module"),
        pytest.param([], VALUE_ERROR, False, id="no-names"),
        pytest.param(["ValueError"], (), False, id="nothing-raised"),
    ],
)
def test_error_matches(names: list[str], types: tuple[str, ...], expected: bool) -> None:
    assert error_matches(names, types) is expected


@pytest.mark.parametrize(
    ("retry_on", "types", "expected"),
    [
        pytest.param(None, VALUE_ERROR, True, id="no-retry-on-retries-all"),
        pytest.param(None, (), True, id="no-retry-on-worker-died"),
        pytest.param(["ConnectionError"], CONN_RESET, True, id="listed"),
        pytest.param(["ConnectionError"], VALUE_ERROR, False, id="not-listed"),
        pytest.param(["ConnectionError"], (), False, id="nothing-raised-matches-nothing"),
        pytest.param([], VALUE_ERROR, False, id="empty-list-retries-none"),
        pytest.param(None, FINAL, False, id="not-retryable-without-retry-on"),
        pytest.param(["TaskFailed"], FINAL, False, id="not-retryable-though-listed"),
        pytest.param(["NotRetryable"], FINAL, False, id="not-retryable-named"),
    ],
)
def test_is_retryable(retry_on: list[str] | None, types: tuple[str, ...], expected: bool) -> None:
    assert is_retryable(RetryPolicy(max_retries=3, retry_on=retry_on), types) is expected


# -- how specs spell it ------------------------------------------------------------------


def _retry(task_retry: dict[str, Any]) -> RetryPolicy:
    p = pipeline_from_data(
        {"name": "p", "tasks": [{"id": "a", "operator": "bash", "retry": task_retry}]}
    )
    assert p.tasks[0].retry is not None
    return p.tasks[0].retry


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            {"max_retries": 3, "retry_delay": 60, "exponential_backoff": True},
            RetryPolicy(max_retries=3, delay_seconds=60, backoff="exponential"),
            id="seed-000-exponential",
        ),
        pytest.param(
            {"max_retries": 2, "retry_delay": 5, "exponential_backoff": False},
            RetryPolicy(max_retries=2, delay_seconds=5, backoff="fixed"),
            id="seed-000-fixed",
        ),
        pytest.param(
            {"retries": 4, "strategy": "linear", "delay_seconds": 2},
            RetryPolicy(max_retries=4, delay_seconds=2, backoff="linear"),
            id="strategy-spelling",
        ),
        pytest.param(
            {"max_retries": 3, "backoff": "exponential", "max_delay_seconds": 30, "jitter": True},
            RetryPolicy(max_retries=3, backoff="exponential", max_delay_seconds=30, jitter=1.0),
            id="exponential-cap-jitter",
        ),
        pytest.param(
            {"max_retries": 3, "retry_on": ["ConnectionError", "shop.api.RateLimited"]},
            RetryPolicy(max_retries=3, retry_on=["ConnectionError", "shop.api.RateLimited"]),
            id="retry-on",
        ),
        pytest.param({"backoff": "none"}, RetryPolicy(backoff="none"), id="none"),
    ],
)
def test_specs_spell_strategies(raw: dict[str, Any], expected: RetryPolicy) -> None:
    assert _retry(raw) == expected


@pytest.mark.parametrize(
    ("task", "field", "needle"),
    [
        pytest.param(
            {"retry": {"backoff": "random"}}, "retry.backoff", "'none', 'fixed'", id="bad-strategy"
        ),
        pytest.param({"retry": {"jitter": 2}}, "retry.jitter", "less than or equal", id="jitter"),
        pytest.param(
            {"retry": {"retry_on": ["Not An Error"]}},
            "retry.retry_on.0",
            "exception class name",
            id="bad-class-name",
        ),
        pytest.param(
            {"retry_on": ["ValueError"]}, "retry_on", "belongs to the retry policy", id="misplaced"
        ),
        pytest.param(
            {"retry": {"strategy": "linear", "backoff": "fixed"}},
            "retry.strategy",
            "another spelling of 'backoff'",
            id="both-spellings",
        ),
        pytest.param(
            {"fatal_on": ["ok", "1bad"]}, "fatal_on.1", "exception class name", id="fatal-on-name"
        ),
    ],
)
def test_bad_retry_specs_are_reported(task: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        pipeline_from_data({"name": "p", "tasks": [{"id": "a", "operator": "bash", **task}]})
    found = {(p.field, p.message) for p in info.value.problems}
    assert any(f == field and needle in m for f, m in found), found
