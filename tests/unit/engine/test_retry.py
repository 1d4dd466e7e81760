"""Retry timing: ``retry_delay`` and ``should_retry`` for fixed and exponential backoff."""

from __future__ import annotations

import math
from typing import Literal

import pytest

from stageflow.engine.retry import retry_delay, should_retry
from stageflow.spec.models import RetryPolicy


def policy(
    *,
    max_retries: int = 3,
    delay: float = 10.0,
    backoff: Literal["fixed", "exponential"] = "fixed",
    max_delay: float = 3600.0,
) -> RetryPolicy:
    return RetryPolicy(
        max_retries=max_retries,
        delay_seconds=delay,
        backoff=backoff,
        max_delay_seconds=max_delay,
    )


@pytest.mark.parametrize(
    ("retry", "attempt", "expected"),
    [
        pytest.param(policy(), 1, 10.0, id="fixed-first"),
        pytest.param(policy(), 2, 10.0, id="fixed-second"),
        pytest.param(policy(), 50, 10.0, id="fixed-later"),
        pytest.param(policy(delay=0.0), 1, 0.0, id="fixed-zero"),
        pytest.param(policy(delay=2.5), 3, 2.5, id="fixed-fraction"),
        pytest.param(policy(delay=100.0, max_delay=60.0), 1, 60.0, id="fixed-capped"),
        pytest.param(policy(delay=10.0, max_delay=0.0), 1, 0.0, id="fixed-cap-zero"),
        pytest.param(policy(backoff="exponential"), 1, 10.0, id="exp-first"),
        pytest.param(policy(backoff="exponential"), 2, 20.0, id="exp-doubles"),
        pytest.param(policy(backoff="exponential"), 3, 40.0, id="exp-doubles-again"),
        pytest.param(policy(backoff="exponential"), 4, 80.0, id="exp-fourth"),
        pytest.param(policy(backoff="exponential", max_delay=60.0), 3, 40.0, id="exp-under-cap"),
        pytest.param(policy(backoff="exponential", max_delay=60.0), 4, 60.0, id="exp-capped"),
        pytest.param(policy(backoff="exponential", max_delay=40.0), 3, 40.0, id="exp-at-cap"),
        pytest.param(policy(backoff="exponential", max_delay=60.0), 9, 60.0, id="exp-stays-capped"),
        pytest.param(policy(backoff="exponential", delay=0.0), 30, 0.0, id="exp-zero"),
        pytest.param(policy(backoff="exponential", delay=0.5), 2, 1.0, id="exp-fraction"),
        pytest.param(
            policy(backoff="exponential", max_delay=60.0), 10_000, 60.0, id="exp-huge-attempt"
        ),
        pytest.param(
            policy(backoff="exponential", max_delay=60.0), 10**18, 60.0, id="exp-enormous-attempt"
        ),
        pytest.param(
            policy(backoff="exponential", delay=7 * 24 * 3600, max_delay=1e300),
            10**9,
            7 * 24 * 3600 * 2.0**64,  # the exponent stops growing; still finite
            id="exp-huge-delay-huge-cap",
        ),
    ],
)
def test_retry_delay(retry: RetryPolicy, attempt: int, expected: float) -> None:
    assert retry_delay(retry, attempt) == expected


@pytest.mark.parametrize("attempt", [1, 2, 63, 64, 65, 1000, 10**6, 10**100])
def test_exponential_delay_never_overflows(attempt: int) -> None:
    retry = policy(backoff="exponential", delay=7 * 24 * 3600, max_delay=math.inf)
    delay = retry_delay(retry, attempt)
    assert math.isfinite(delay)
    assert delay >= 7 * 24 * 3600


def test_exponential_delay_never_decreases() -> None:
    retry = policy(backoff="exponential", delay=1.0, max_delay=1e12)
    delays = [retry_delay(retry, n) for n in range(1, 200)]
    assert delays == sorted(delays)
    assert delays[-1] == 1e12


def test_default_policy_has_no_delay_and_no_retry() -> None:
    retry = RetryPolicy()
    assert retry_delay(retry, 1) == 0.0
    assert not should_retry(retry, 1)


@pytest.mark.parametrize(
    ("max_retries", "attempt", "expected"),
    [
        pytest.param(0, 1, False, id="no-retries"),
        pytest.param(1, 1, True, id="one-retry-first-fails"),
        pytest.param(1, 2, False, id="one-retry-spent"),
        pytest.param(3, 1, True, id="three-first"),
        pytest.param(3, 3, True, id="three-third"),
        pytest.param(3, 4, False, id="three-spent"),
        pytest.param(3, 100, False, id="far-past"),
        pytest.param(1000, 1000, True, id="max-last-retry"),
        pytest.param(1000, 1001, False, id="max-spent"),
    ],
)
def test_should_retry(max_retries: int, attempt: int, expected: bool) -> None:
    assert should_retry(policy(max_retries=max_retries), attempt) is expected


@pytest.mark.parametrize("max_retries", [0, 1, 2, 5])
def test_attempts_made_is_max_retries_plus_one(max_retries: int) -> None:
    retry = policy(max_retries=max_retries)
    attempts = 1
    while should_retry(retry, attempts):
        attempts += 1
    assert attempts == max_retries + 1
