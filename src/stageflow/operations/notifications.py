"""Notification deliveries as the CLI and the API list them (``runtime.notify``).

Policy. The delivery log is read through the store; a caller sees the deliveries of
its owner's runs only (an admin, and the CLI, see all), as for runs. A delivery shows
its channel's kind and its target as ``engine.delivery.shown_target`` made it (a
webhook's scheme and host, a secret's name): never the URL, never a secret's value,
never the message's channel as configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stageflow.errors import UsageError
from stageflow.runtime.result import iso
from stageflow.runtime.store.base import NotificationRecord, Store

__all__ = ["NOTIFICATION_STATES", "NotificationInfo", "list_notifications"]

#: A delivery's states: due (``pending``), being tried (``sending``), and its ends.
NOTIFICATION_STATES = ("pending", "sending", "delivered", "failed")
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class NotificationInfo:
    """One delivery of a notification to one channel, as it may be shown."""

    id: int
    key: str
    kind: str
    pipeline: str | None
    run_id: str | None
    task: str | None
    channel: str
    target: str
    state: str
    attempts: int
    last_error: str | None
    created_at: float
    next_try_at: float | None
    delivered_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "kind": self.kind,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "task": self.task,
            "channel": self.channel,
            "target": self.target,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "next_try_at": iso(self.next_try_at) if self.state == "pending" else None,
            "delivered_at": iso(self.delivered_at),
        }


def list_notifications(
    store: Store,
    *,
    run_id: str | None = None,
    state: str | None = None,
    owner: str | None,
    see_all: bool,
    limit: int = 100,
) -> list[NotificationInfo]:
    """The deliveries the caller may see, newest first, of run ``run_id`` and in
    ``state`` when given. ``UsageError`` names a bad ``state`` or ``limit``."""
    if state is not None and state not in NOTIFICATION_STATES:
        raise UsageError(
            f"state {state!r} is not a delivery state; use one of {', '.join(NOTIFICATION_STATES)}",
            field="state",
        )
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be 1 to {MAX_LIMIT}, got {limit}", field="limit")
    rows = store.notifications(
        run_id=run_id, state=state, owner=owner, any_owner=see_all, limit=limit
    )
    return [_info(r) for r in rows]


def _info(r: NotificationRecord) -> NotificationInfo:
    return NotificationInfo(
        id=r.id,
        key=r.key,
        kind=r.kind,
        pipeline=r.pipeline,
        run_id=r.run_id,
        task=r.task,
        channel=r.channel_kind,
        target=r.target,
        state=r.state,
        attempts=r.attempts,
        last_error=r.last_error,
        created_at=r.created_at,
        next_try_at=r.next_try_at,
        delivered_at=r.delivered_at,
    )
