"""Run-level retries: whether a whole run that ended ``failed`` is queued again, and when.

A run is attempt 1; the run queued because attempt ``n`` failed is attempt ``n + 1``.
After attempt ``n`` fails, a retry is due when the strategy is not ``none`` and
``n <= max_retries``, ``delay(n)`` seconds after the failed run ended, capped at
``max_delay`` (a day unless said):

===============  ====================================
``none``         never retried
``fixed``        ``retry_delay``
``linear``       ``retry_delay * n``
``exponential``  ``retry_delay * 2 ** (n - 1)``
===============  ====================================

A cancelled run is never retried (someone meant it to stop), nor a successful one.
The policy comes from the run's schedule when it has one, else from its pipeline's
``run_retries`` (``effective_policy``): the schedule's owner chose for its runs.
Pure: the caller hands in the end time and gets the due time back; who creates the
retry run, exactly once, is ``runtime.run_retries``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "MAX_RUN_RETRIES",
    "RunRetryPolicy",
    "Strategy",
    "effective_policy",
    "next_retry_at",
    "policy_problems",
    "run_retry_delay",
]

Strategy = Literal["none", "fixed", "linear", "exponential"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
#: The most retries a policy may ask for: past it a failing pipeline is a loop, not bad luck.
MAX_RUN_RETRIES = 100
_DAY = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class RunRetryPolicy:
    """How often and how soon a failed run is queued again (module docstring)."""

    strategy: Strategy = "fixed"
    max_retries: int = 0
    retry_delay: float = 0.0  # seconds
    max_delay: float = _DAY  # seconds: no retry waits longer


def policy_problems(policy: RunRetryPolicy, prefix: str = "") -> list[tuple[str, str]]:
    """Every mistake in ``policy`` as (field, message saying how to fix it); the field
    is ``prefix`` + its name (``--run-retries``, ``run_retries.max_retries``)."""
    found: list[tuple[str, str]] = []
    if policy.strategy not in STRATEGIES:
        found.append(
            (
                f"{prefix}strategy",
                f"{prefix}strategy {policy.strategy!r} is not a retry strategy; "
                f"use one of {', '.join(STRATEGIES)}",
            )
        )
    if not 0 <= policy.max_retries <= MAX_RUN_RETRIES:
        found.append(
            (
                f"{prefix}max_retries",
                f"{prefix}max_retries is {policy.max_retries}; give a whole number from 0 "
                f"to {MAX_RUN_RETRIES}",
            )
        )
    if policy.retry_delay < 0 or policy.retry_delay > _DAY * 7:
        found.append(
            (
                f"{prefix}retry_delay",
                f"{prefix}retry_delay is {policy.retry_delay:g}s; give 0 to 7 days",
            )
        )
    elif policy.strategy == "exponential" and policy.retry_delay == 0:
        found.append(
            (
                f"{prefix}retry_delay",
                f"{prefix}retry_delay is 0 with the exponential strategy, which would "
                "double nothing; give a positive delay (30s) or use strategy fixed",
            )
        )
    if policy.max_delay <= 0:
        found.append(
            (
                f"{prefix}max_delay",
                f"{prefix}max_delay is {policy.max_delay:g}s; give a positive one",
            )
        )
    return found


def run_retry_delay(policy: RunRetryPolicy, attempt: int) -> float:
    """Seconds to wait after failed ``attempt`` (1-based) before its retry is due."""
    base = policy.retry_delay
    if policy.strategy == "exponential":
        # Cap the exponent first: 2 ** 10_000 is a float overflow.
        delay = base * 2.0 ** min(attempt - 1, 64)
    elif policy.strategy == "linear":
        delay = base * attempt
    else:
        delay = base
    return min(delay, policy.max_delay)


def next_retry_at(
    policy: RunRetryPolicy | None, attempt: int, state: str, ended_at: float
) -> float | None:
    """When the retry of a run (attempt ``attempt``) that ended in ``state`` at
    ``ended_at`` is due; ``None`` when it gets none (no policy, strategy ``none``,
    retries used up, or it did not fail: ``cancelled`` and ``success`` never retry)."""
    if policy is None or state != "failed" or policy.strategy == "none":
        return None
    if attempt > policy.max_retries:
        return None
    return ended_at + run_retry_delay(policy, attempt)


def effective_policy(
    schedule: RunRetryPolicy | None, pipeline: RunRetryPolicy | None
) -> RunRetryPolicy | None:
    """The policy a run follows: its schedule's when it has one, else its pipeline's."""
    return schedule if schedule is not None else pipeline
