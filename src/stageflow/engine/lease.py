"""Leases: who owns a run, until when, and whether a claimer may take it over.

Policy (DESIGN.md, ``Lease``). The process that runs a run holds its lease: an
owner name (``host:pid`` by default), an epoch and an expiry.

- A lease lasts ``LeaseTerms.seconds`` (15 s by default; ``STAGEFLOW_LEASE_SECONDS``)
  and its owner renews it every third of that (5 s): every commit of the run renews
  it, and the run loop commits a heartbeat when nothing else did. Two renewals in a
  row may be late before the lease lapses.
- A lease is live while ``now < expires_at``. A run with a live lease of another
  owner is *held*: a claimer is refused. A run whose lease expired is taken over by
  the next claimer; so is one whose owner is known dead on the claimer's host (same
  host, its pid gone), so that ``resume`` right after a crash need not wait for
  the expiry. A run with no lease (never claimed, or ended: its final commit clears
  the expiry) is free.
- Deciding is not owning. The claimer then compare-and-sets the epoch it read
  (``runtime.store``): of simultaneous claimers exactly one wins, and every commit
  carries its epoch (fencing), so an owner that lost its lease commits nothing.

Pure: handed the time; no clock, no I/O. Times are float epoch seconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from stageflow.engine.states import FINAL_RUN_STATES

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "RENEWALS_PER_LEASE",
    "Holder",
    "LeaseTerms",
    "Verdict",
    "clock_text",
    "decide",
    "describe_holder",
    "is_live",
    "silence",
]

#: How long a lease lasts unless settings say otherwise.
DEFAULT_LEASE_SECONDS = 15.0
#: Renewals per lease: the owner renews every ``seconds / RENEWALS_PER_LEASE``.
RENEWALS_PER_LEASE = 3


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """How long a lease lasts and how often its owner renews it."""

    seconds: float = DEFAULT_LEASE_SECONDS

    @property
    def renew_every(self) -> float:
        return self.seconds / RENEWALS_PER_LEASE

    def expiry(self, now: float) -> float:
        """When a lease taken or renewed at ``now`` expires."""
        return now + self.seconds


def is_live(expires_at: float | None, now: float) -> bool:
    """Whether a lease expiring at ``expires_at`` still holds at ``now`` (``None``: no lease)."""
    return expires_at is not None and now < expires_at


@dataclass(frozen=True, slots=True)
class Holder:
    """What the store says about a run's lease: the run's state, the owner's name,
    the epoch, when the lease expires and when it was last renewed."""

    state: str
    owner: str | None
    epoch: int
    expires_at: float | None
    renewed_at: float | None = None


class Verdict(enum.StrEnum):
    """Whether a claimer may take a run, and why."""

    FREE = "free"  # no lease: never claimed, or the run ended
    MINE = "mine"  # the claimer holds the lease already (it claims again)
    EXPIRED = "expired"  # its owner stopped renewing: taken over
    OWNER_DEAD = "owner_dead"  # its owner is gone from the claimer's host: taken over now
    HELD = "held"  # another owner's live lease: refused

    @property
    def may_take(self) -> bool:
        return self is not Verdict.HELD


def decide(holder: Holder, claimer: str, now: float, *, owner_dead: bool = False) -> Verdict:
    """May ``claimer`` take the run at ``now``? ``owner_dead``: its owner ran on the
    claimer's host and its process is gone (the caller checked)."""
    if holder.state in FINAL_RUN_STATES or holder.owner is None or holder.expires_at is None:
        return Verdict.FREE
    if holder.owner == claimer:
        return Verdict.MINE
    if owner_dead:
        return Verdict.OWNER_DEAD
    if not is_live(holder.expires_at, now):
        return Verdict.EXPIRED
    return Verdict.HELD


def silence(holder: Holder, now: float) -> str | None:
    """How a run whose lease expired reads in ``runs list``/``runs show``:
    ``"host:41 silent since 12:01:07 UTC, will be taken over"``; ``None`` when the
    run ended, has no lease or its lease is live."""
    if holder.state in FINAL_RUN_STATES or holder.owner is None:
        return None
    if holder.expires_at is None or is_live(holder.expires_at, now):
        return None
    if holder.renewed_at is not None:
        return (
            f"{holder.owner} silent since {clock_text(holder.renewed_at, now)}, will be taken over"
        )
    return (
        f"{holder.owner}'s lease expired at {clock_text(holder.expires_at, now)}, "
        "will be taken over"
    )


def describe_holder(holder: Holder, now: float) -> str:
    """The owner and its lease, for a refusal: ``"host:41 (lease epoch 3, renewed 2s
    ago, expires in 13s)"``."""
    parts = [f"lease epoch {holder.epoch}"]
    if holder.renewed_at is not None:
        parts.append(f"renewed {_seconds(now - holder.renewed_at)} ago")
    if holder.expires_at is not None:
        left = holder.expires_at - now
        parts.append(
            f"expires in {_seconds(left)}" if left > 0 else f"expired {_seconds(-left)} ago"
        )
    return f"{holder.owner or 'nobody'} ({', '.join(parts)})"


def clock_text(ts: float, now: float) -> str:
    """``ts`` as a UTC time of day (``12:01:07 UTC``), with the date when it is not
    ``now``'s day."""
    at = datetime.fromtimestamp(ts, UTC)
    if at.date() == datetime.fromtimestamp(now, UTC).date():
        return at.strftime("%H:%M:%S UTC")
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(seconds: float) -> str:
    return f"{max(seconds, 0.0):.0f}s"
