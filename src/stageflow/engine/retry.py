"""Retry timing: whether a failed attempt is tried again, and when.

Attempts are numbered from 1. After attempt ``n`` fails, a retry is due when
``n <= max_retries``; its delay is ``delay_seconds`` (fixed) or
``delay_seconds * 2 ** (n - 1)`` (exponential), capped at ``max_delay_seconds``.
"""

from __future__ import annotations

from stageflow.spec.models import RetryPolicy

__all__ = ["retry_delay", "should_retry"]


def should_retry(policy: RetryPolicy, attempt: int) -> bool:
    """True when the failed ``attempt`` (1-based) leaves a retry."""
    return attempt <= policy.max_retries


def retry_delay(policy: RetryPolicy, attempt: int) -> float:
    """Seconds to wait after failed ``attempt`` (1-based) before the next one."""
    if policy.backoff == "exponential":
        # Cap the exponent first: 2 ** 10_000 is a float overflow.
        delay = policy.delay_seconds * 2.0 ** min(attempt - 1, 64)
    else:
        delay = policy.delay_seconds
    return min(delay, policy.max_delay_seconds)
