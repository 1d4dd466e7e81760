"""Claiming a run: who owns it, and taking it over (the runtime side of ``engine.lease``).

Policy (DESIGN.md, ``Lease``; ``engine.lease`` holds the arithmetic). A run is
owned while its lease is live, unless its owner ran on this host and its process
is gone (pid and start time: then it is known dead at once, so ``resume`` right
after a crash does not wait for the expiry). ``take_run`` claims a run for this
process: it decides with ``engine.lease.decide`` on the run as it read it, then
compare-and-sets the epoch it read (``Store.claim_run``), so of any number of
simultaneous claimers (``run``, ``resume``, ``retry``, ``cancel`` of an orphaned
run) exactly one wins; the others get ``RunOwned`` naming the owner. The epoch it
returns goes into every commit of the run (``Fence``). A worker does not read
first: ``Store.claim_next`` picks the next claimable run and claims it in one
transaction, and the runner starts it under that epoch (``Runner.start_queued``,
``Runner.resume`` with ``epoch=``).

An owner is named ``host:pid`` by default. No state.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, replace
from typing import Literal

from stageflow.engine.lease import (
    DEFAULT_LEASE_SECONDS,
    Holder,
    LeaseTerms,
    Verdict,
    decide,
    describe_holder,
)
from stageflow.engine.states import RunState
from stageflow.errors import RunOwned
from stageflow.runtime.settings import Settings
from stageflow.runtime.store.base import RunRecord, Store

__all__ = [
    "Owner",
    "check_claimable",
    "default_owner",
    "holder_of",
    "lease_terms",
    "live_owner",
    "process_start",
    "take_run",
    "under_lease",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Owner:
    """The live process that runs a run: its lease's owner ``name`` (``host:pid``)."""

    host: str
    pid: int | None
    local: bool  # on this host (its process is alive)
    name: str | None = None

    def describe(self) -> str:
        if self.local:
            return f"process {self.pid}"
        return f"{self.name} on host {self.host}" if self.name else f"host {self.host}"


def default_owner() -> str:
    """This process's name as a lease owner: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_terms(settings: Settings) -> LeaseTerms:
    """The lease length settings give (``STAGEFLOW_LEASE_SECONDS``), else the default."""
    return LeaseTerms(settings.lease_seconds or DEFAULT_LEASE_SECONDS)


def holder_of(run: RunRecord) -> Holder:
    """The run's lease as ``engine.lease`` reads it."""
    return Holder(
        run.state, run.lease_owner, run.lease_epoch, run.lease_expires_at, run.heartbeat_at
    )


def live_owner(run: RunRecord, now: float | None = None) -> Owner | None:
    """The live process running ``run``, or ``None`` (it ended, crashed, or none took it).

    Owned while its lease is live (``engine.lease``), unless the owner ran on this
    host and its process is gone (pid reuse is caught by the start time).
    """
    now = time.time() if now is None else now
    local = _local_owner(run)
    if decide(holder_of(run), "", now, owner_dead=local == "dead").may_take:
        return None
    return Owner(run.owner_host or "?", run.owner_pid, local=local == "alive", name=run.lease_owner)


def take_run(
    store: Store,
    run: RunRecord,
    *,
    now: float,
    terms: LeaseTerms,
    owner: str | None = None,
) -> int:
    """Claim ``run`` (as read from ``store``) for this process; return the lease epoch.

    Decides with ``engine.lease`` whether it may be taken, then compare-and-sets the
    epoch it read: raises ``RunOwned`` naming the owner when another process holds a
    live lease or won the claim first; ``RunNotFound``.
    """
    owner = owner or default_owner()
    verdict = check_claimable(run, now, owner)
    epoch = store.claim_run(
        run.run_id,
        owner=owner,
        expected_epoch=run.lease_epoch,
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=process_start(),
        now=now,
        ttl=terms.seconds,
    )
    if verdict in (Verdict.EXPIRED, Verdict.OWNER_DEAD):
        # A silent owner is worth a warning; a dead one is what resume is for.
        logger.log(
            logging.WARNING if verdict is Verdict.EXPIRED else logging.INFO,
            "run %s: took it over from %s (%s), lease epoch %d",
            run.run_id,
            run.lease_owner,
            "its lease expired" if verdict is Verdict.EXPIRED else "its process is gone",
            epoch,
        )
    return epoch


def check_claimable(run: RunRecord, now: float, owner: str | None = None) -> Verdict:
    """Why ``owner`` (default: this process) may take ``run`` as read; ``RunOwned``
    naming the owner and what to do when another process holds a live lease."""
    local = _local_owner(run)
    holder = holder_of(run)
    verdict = decide(holder, owner or default_owner(), now, owner_dead=local == "dead")
    if not verdict.may_take:
        raise RunOwned(_held_message(run, holder, local == "alive", now), owner=run.lease_owner)
    return verdict


def process_start() -> float:
    """This process's start time (guards against pid reuse when checking the owner);
    read once per process (a forked child reads its own)."""
    global _started
    pid = os.getpid()
    if _started is None or _started[0] != pid:
        import psutil  # imported here: only a process that claims a run needs it

        _started = (pid, float(psutil.Process().create_time()))
    return _started[1]


_started: tuple[int, float] | None = None  # (pid, start time) of process_start


def under_lease(
    run: RunRecord,
    *,
    owner: str,
    epoch: int,
    now: float,
    terms: LeaseTerms,
    host: str | None = None,
    pid: int | None = None,
    started_at: float | None = None,
) -> RunRecord:
    """``run`` as the store holds it once ``owner`` won its lease at ``epoch`` at ``now``:
    owned by this process (or the ``host``/``pid``/``started_at`` given, which a
    long-lived worker reads once), its lease running ``terms`` from ``now``."""
    return replace(
        run,
        lease_owner=owner,
        lease_epoch=epoch,
        lease_expires_at=terms.expiry(now),
        heartbeat_at=now,
        owner_host=host or socket.gethostname(),
        owner_pid=pid or os.getpid(),
        owner_started_at=process_start() if started_at is None else started_at,
    )


def _local_owner(run: RunRecord) -> Literal["alive", "dead", "elsewhere"]:
    """Whether the run's recorded owner process is alive on this host, gone from it,
    or not known here (another host, or none recorded)."""
    if run.owner_host != socket.gethostname() or run.owner_pid is None:
        return "elsewhere"
    import psutil  # only a control request or a claim needs it

    try:
        proc = psutil.Process(run.owner_pid)
        alive = abs(proc.create_time() - (run.owner_started_at or 0)) < 1.0 and (
            proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        alive = False
    return "alive" if alive else "dead"


def _held_message(run: RunRecord, holder: Holder, local: bool, now: float) -> str:
    """Why a claim of ``run`` is refused: who holds its lease, and what to do."""
    paused = (
        f"; it is paused: `stageflow unpause {run.run_id}` continues it"
        if run.state == RunState.PAUSED
        else ""
    )
    if local:
        return (
            f"run '{run.run_id}' is still running in process {run.owner_pid} "
            f"(owner {describe_holder(holder, now)}); wait for it to finish, or stop "
            f"that process, then resume{paused}"
        )
    return (
        f"run '{run.run_id}' is owned by {describe_holder(holder, now)}; wait for it, or "
        f"stop it: the run is taken over once its lease expires{paused}"
    )
