"""Retry timing and error classes: whether a failed attempt is tried again, and when.

Attempts are numbered from 1. After attempt ``n`` fails, a retry is due when
the strategy (``RetryPolicy.backoff``) is not ``none``, ``n <= max_retries`` and
the error is retryable (``retry_on``). Its delay, capped at ``max_delay_seconds``:

=============  ==========================================
``none``       never retried
``fixed``      ``delay_seconds``
``linear``     ``delay_seconds * n``
``exponential`` ``delay_seconds * 2 ** (n - 1)``
=============  ==========================================

``jitter`` (0..1) then takes up to that fraction off the delay. The amount is
a pure function of a key handed in (the runner passes the run id and task id)
and ``n``: the same inputs always give the same delay, no global random state,
and tasks failing together still spread their retries out.

Error classes are matched by name against the raised exception's MRO (the
runtime records ``module.QualName`` for every class): ``ValueError`` matches
``builtins.ValueError``, and ``pkg.mod.Error`` or ``Error`` matches ``pkg.mod.Error``.
An error whose classes include ``NOT_RETRYABLE`` (the runtime adds it for
``TaskFailed(..., retryable=False)``: another attempt cannot change the outcome)
is never retried, whatever ``retry_on`` says; ``fatal_on`` still applies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from stageflow.spec.models import RetryPolicy

__all__ = [
    "NOT_RETRYABLE",
    "error_matches",
    "is_retryable",
    "jitter_fraction",
    "retry_delay",
    "should_retry",
]

#: The class name the runtime adds to an error's classes when the operator said that
#: another attempt cannot change it (``TaskFailed(..., retryable=False)``).
NOT_RETRYABLE = "stageflow.NotRetryable"


def should_retry(policy: RetryPolicy, attempt: int, *, retryable: bool = True) -> bool:
    """True when the failed ``attempt`` (1-based) leaves a retry."""
    return retryable and policy.backoff != "none" and attempt <= policy.max_retries


def retry_delay(policy: RetryPolicy, attempt: int, key: str = "") -> float:
    """Seconds to wait after failed ``attempt`` (1-based) before the next one."""
    base = policy.delay_seconds
    if policy.backoff == "exponential":
        # Cap the exponent first: 2 ** 10_000 is a float overflow.
        delay = base * 2.0 ** min(attempt - 1, 64)
    elif policy.backoff == "linear":
        delay = base * min(attempt, 2**53)
    else:
        delay = base
    delay = min(delay, policy.max_delay_seconds)
    if policy.jitter and delay:
        delay *= 1.0 - policy.jitter * jitter_fraction(key, attempt)
    return delay


def jitter_fraction(key: str, attempt: int) -> float:
    """A number in [0, 1) determined by ``key`` and ``attempt`` alone."""
    digest = hashlib.sha256(f"{key}\x00{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def error_matches(names: Iterable[str], error_types: Sequence[str]) -> bool:
    """True when one of ``names`` names a class in ``error_types`` (qualified names)."""
    for name in names:
        suffix = "." + name
        for qualified in error_types:
            if qualified == name or qualified.endswith(suffix):
                return True
    return False


def is_retryable(policy: RetryPolicy, error_types: Sequence[str]) -> bool:
    """Whether an error of ``error_types`` may be retried: never one marked
    ``NOT_RETRYABLE``; else one that ``retry_on`` names (no ``retry_on``: any)."""
    if NOT_RETRYABLE in error_types:
        return False
    return policy.retry_on is None or error_matches(policy.retry_on, error_types)
