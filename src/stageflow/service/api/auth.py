"""Who asks: the bearer token of a request, its role and owner (``operations.access``).

Every route but ``/health`` and ``/metrics`` (``serve`` keeps ``/metrics`` open)
depends on ``identity``. A client address that fails authentication (no token, or
one that authenticates nobody) ``FAILURES_PER_MINUTE`` times within a minute is
answered 429 until the minute has passed: guessing a token costs a minute per few
tries (tokens are 256-bit random anyway), and the audit entries of unauthenticated
requests stay bounded (a 429 is not audited).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from fastapi import Request

from stageflow import operations as ops
from stageflow.errors import StageflowError
from stageflow.operations.access import NEEDS, Action, Identity
from stageflow.operations.stores import Store

__all__ = ["FAILURES_PER_MINUTE", "FailedLogins", "Unauthorized", "identity", "require"]

FAILURES_PER_MINUTE = 10
#: How often a token's ``last_used_at`` is written, at most (a write per request
#: would make every read a write).
TOUCH_EVERY_S = 60.0


class Unauthorized(StageflowError):
    """No token, or one that authenticates nobody (401)."""


class TooManyFailures(StageflowError):
    """This client failed authentication too often (429)."""


@dataclass
class FailedLogins:
    """Failed authentications per client address over the last minute."""

    limit: int = FAILURES_PER_MINUTE
    window_s: float = 60.0
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blocked_for(self, client: str, now: float) -> float:
        """Seconds ``client`` must wait before trying again (0: it may try now)."""
        with self._lock:
            times = self._seen.get(client)
            if not times:
                return 0.0
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) < self.limit:
                return 0.0
            return times[0] + self.window_s - now

    def fail(self, client: str, now: float) -> None:
        with self._lock:
            if len(self._seen) > 100_000:  # a flood of addresses: forget the oldest
                self._seen.pop(next(iter(self._seen)))
            self._seen.setdefault(client, deque()).append(now)


@dataclass
class Authenticator:
    store: Store
    failures: FailedLogins = field(default_factory=FailedLogins)
    _touched: dict[str, float] = field(default_factory=dict)

    def __call__(self, request: Request) -> Identity:
        now = time.time()
        client = request.client.host if request.client else "unknown"
        wait = self.failures.blocked_for(client, now)
        if wait > 0:
            raise TooManyFailures(
                f"too many failed authentications from {client}; try again in {wait:.0f} s"
            )
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            self.failures.fail(client, now)  # counted too: each is an audit entry
            raise Unauthorized(
                "this route needs a token: send `Authorization: Bearer sft_...` "
                "(an admin makes one with `stageflow tokens create`)"
            )
        found = ops.authenticate(self.store, presented, now=now)
        if found is None:
            self.failures.fail(client, now)
            raise Unauthorized("the token is unknown, revoked or expired")
        token_id = presented.strip().split("_")[1]
        if now - self._touched.get(token_id, 0.0) >= TOUCH_EVERY_S:
            self._touched[token_id] = now
            self.store.touch_token(token_id, now)
        request.state.identity = found
        return found


async def identity(request: Request) -> Identity:
    """The FastAPI dependency: the caller (401/429 as ``Authenticator``). On the event
    loop, not the thread pool: one indexed read, cheaper than a thread hop."""
    authenticator: Authenticator = request.app.state.ctx.auth
    return authenticator(request)


_VERBS = {
    "operate": "submit or control runs",
    "edit": "save or delete pipelines",
    "admin": "do this (admins only)",
}


def require(who: Identity, action: Action) -> None:
    """``Forbidden`` unless ``who``'s role allows ``action``."""
    if not ops.may(who, action):
        raise ops.Forbidden(
            f"token '{who.name}' has role {who.role}, which may not {_VERBS.get(action, action)}; "
            f"it needs role {NEEDS[action]} or higher"
        )
