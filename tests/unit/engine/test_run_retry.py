"""Run-level retry arithmetic (``engine.run_retry``) and the schedule fields that carry
a retry policy, an execution timeout or an object URL (``engine.schedules.spec_of``):
pure, table-driven, no clock but the times handed in."""

from __future__ import annotations

import pytest

from stageflow.engine.run_retry import (
    RunRetryPolicy,
    effective_policy,
    next_retry_at,
    policy_problems,
    run_retry_delay,
)
from stageflow.engine.schedules import retry_policy_of, spec_of, written_problems
from stageflow.errors import UsageError


@pytest.mark.parametrize(
    ("strategy", "attempt", "expected"),
    [
        pytest.param("fixed", 1, 10.0, id="fixed-first"),
        pytest.param("fixed", 5, 10.0, id="fixed-fifth"),
        pytest.param("linear", 1, 10.0, id="linear-first"),
        pytest.param("linear", 3, 30.0, id="linear-third"),
        pytest.param("exponential", 1, 10.0, id="exp-first"),
        pytest.param("exponential", 2, 20.0, id="exp-doubles"),
        pytest.param("exponential", 4, 80.0, id="exp-fourth"),
        pytest.param("exponential", 10, 100.0, id="exp-capped"),
        pytest.param("exponential", 10_000, 100.0, id="exp-no-overflow"),
        pytest.param("linear", 50, 100.0, id="linear-capped"),
    ],
)
def test_the_delay_follows_the_strategy_capped(
    strategy: str, attempt: int, expected: float
) -> None:
    policy = RunRetryPolicy(strategy, max_retries=3, retry_delay=10.0, max_delay=100.0)  # type: ignore[arg-type]
    assert run_retry_delay(policy, attempt) == expected


FIXED = RunRetryPolicy("fixed", max_retries=2, retry_delay=5.0)


@pytest.mark.parametrize(
    ("policy", "attempt", "state", "expected"),
    [
        pytest.param(FIXED, 1, "failed", 105.0, id="first-failure"),
        pytest.param(FIXED, 2, "failed", 105.0, id="second-failure"),
        pytest.param(FIXED, 3, "failed", None, id="retries-used-up"),
        pytest.param(FIXED, 1, "cancelled", None, id="cancelled-never"),
        pytest.param(FIXED, 1, "success", None, id="success-never"),
        pytest.param(None, 1, "failed", None, id="no-policy"),
        pytest.param(RunRetryPolicy("none", 5, 5.0), 1, "failed", None, id="strategy-none"),
        pytest.param(RunRetryPolicy("fixed", 0, 5.0), 1, "failed", None, id="zero-retries"),
        pytest.param(RunRetryPolicy("linear", 3, 5.0), 3, "failed", 115.0, id="linear-last"),
    ],
)
def test_a_retry_is_due_after_the_failed_run_ended(
    policy: RunRetryPolicy | None, attempt: int, state: str, expected: float | None
) -> None:
    assert next_retry_at(policy, attempt, state, ended_at=100.0) == expected


def test_the_schedules_policy_wins_over_the_pipelines() -> None:
    mine = RunRetryPolicy("linear", 1, 1.0)
    assert effective_policy(mine, FIXED) is mine
    assert effective_policy(None, FIXED) is FIXED
    assert effective_policy(None, None) is None


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        pytest.param(RunRetryPolicy("sometimes", 1, 1.0), "strategy", id="strategy"),  # type: ignore[arg-type]
        pytest.param(RunRetryPolicy("fixed", -1, 1.0), "max_retries", id="negative"),
        pytest.param(RunRetryPolicy("fixed", 101, 1.0), "max_retries", id="too-many"),
        pytest.param(RunRetryPolicy("fixed", 1, -1.0), "retry_delay", id="negative-delay"),
        pytest.param(RunRetryPolicy("exponential", 1, 0.0), "retry_delay", id="doubles-zero"),
        pytest.param(RunRetryPolicy("fixed", 1, 1.0, max_delay=0.0), "max_delay", id="cap"),
    ],
)
def test_a_bad_policy_names_its_field(policy: RunRetryPolicy, field: str) -> None:
    found = policy_problems(policy, prefix="run_retries.")
    assert [f for f, _ in found] == [f"run_retries.{field}"]
    assert found[0][1].startswith(f"run_retries.{field}")


def test_a_good_policy_has_no_problems() -> None:
    assert policy_problems(RunRetryPolicy("exponential", 3, 30.0)) == []
    assert policy_problems(RunRetryPolicy("fixed", 0, 0.0)) == []


def test_a_schedule_carries_its_retry_policy_and_timeout() -> None:
    spec = spec_of(
        every="1h",
        run_retries=2,
        retry_strategy="linear",
        retry_delay="10s",
        execution_timeout="2h",
    )
    assert retry_policy_of(spec) == RunRetryPolicy("linear", 2, 10.0)
    assert spec.execution_timeout == 7200.0
    assert retry_policy_of(spec_of(every="1h")) is None
    assert spec_of(every="1h", run_retries=1).retry_strategy == "fixed"


@pytest.mark.parametrize(
    ("fields", "option"),
    [
        pytest.param({"run_retries": -1}, "--run-retries", id="negative"),
        pytest.param({"retry_strategy": "sometimes"}, "--retry-strategy", id="strategy"),
        pytest.param(
            {"retry_strategy": "exponential", "retry_delay": "0"}, "--retry-delay", id="doubles"
        ),
        pytest.param({"retry_delay": "soon"}, "--retry-delay", id="not-a-duration"),
        pytest.param({"execution_timeout": "0"}, "--execution-timeout", id="zero-timeout"),
        pytest.param({"execution_timeout": "-5"}, "--execution-timeout", id="negative-timeout"),
    ],
)
def test_bad_run_fields_name_their_option(fields: dict[str, object], option: str) -> None:
    with pytest.raises(UsageError) as caught:
        spec_of(every="1h", **fields)  # type: ignore[arg-type]
    assert str(caught.value).startswith(option), caught.value
    assert caught.value.field == option.lstrip("-").replace("-", "_")


def test_a_spec_entry_names_its_fields_by_place() -> None:
    with pytest.raises(UsageError) as caught:
        spec_of(every="1h", run_retries=-1, prefix="schedules[0].")
    assert str(caught.value).startswith("schedules[0].run_retries")


@pytest.mark.parametrize(
    ("fields", "option"),
    [
        pytest.param({"on_object": "not a url"}, "on-object", id="no-protocol"),
        pytest.param({"on_object": "file://"}, "on-object", id="no-path"),
        pytest.param({"on_object": "file:///in/*", "poll": 0.5}, "poll", id="poll-too-fast"),
        pytest.param({"on_object": "file:///in/*", "poll": "2d"}, "poll", id="poll-too-slow"),
        pytest.param(
            {"on_object": "file:///in/*", "start": "2030-01-01T00:00:00Z"}, "start", id="start"
        ),
    ],
)
def test_object_schedule_problems_name_their_option(fields: dict[str, object], option: str) -> None:
    spec = spec_of(**fields)  # type: ignore[arg-type]
    found = written_problems(spec, now=0.0)
    assert [f for f, _ in found] == [option], found
    assert found[0][1].startswith(f"--{option}"), found


def test_an_object_schedule_has_no_fire_times() -> None:
    from stageflow.engine.schedules import due, next_after

    spec = spec_of(on_object="file:///in/*.csv", poll="10s", catchup=True)
    assert (spec.kind, spec.object_url, spec.poll_seconds) == ("object", "file:///in/*.csv", 10.0)
    assert written_problems(spec, now=0.0) == []
    assert next_after(spec, 0.0) is None
    assert due(spec, 0.0, 1e9) == []


def test_poll_without_an_object_url_names_poll() -> None:
    with pytest.raises(UsageError) as caught:
        spec_of(every="1h", poll="5s")
    assert caught.value.field == "poll"
