"""Global pools: a pool's slots are shared by every process on one store.

Policy. A task's ``pool: NAME`` takes one slot of the pool while it runs. A pool
is deployment-wide, like Airflow's pools: its size is kept in the store
(``stageflow pools set NAME SLOTS``), and its slots are counted across every
worker and every ``stageflow run`` process on that store, not per machine (CPU,
memory and GPU capacity stay per machine). Pools configured in the settings
(``STAGEFLOW_POOLS="training=2"``, or a ``Capacity``'s pools) seed the store:
a pool not in the store yet is created with that size; once there, the store's
size wins.

``GlobalPools`` is the ``engine.admission.PoolGate`` of an ``Admission``: when
the rest of a pooled request fits, the admission asks it for a slot, which is
one compare-and-set transaction in the store (``Store.acquire_pool_slot``)
keyed by the run, the task and its attempt, under the run's lease epoch; it
never waits. A refused request waits; since slots free in other processes, the
run asks again every ``POLL_SECONDS`` (``RunPools.waiting``, read by the run
loop). Releasing a grant deletes the holding. A holding lives only as long as
its run's lease (same epoch, not expired, run not final), so a slot held by a
process that died comes back when its lease expires, and one whose run was
taken over or handed back comes back at once: no slot leaks.

State: the runs bound to the gate (their scheduler -> run id, lease epoch,
store), weakly held, so a finished run's entry goes with its scheduler.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from stageflow.engine.admission import Admission, Capacity
from stageflow.errors import StageflowError, UsageError
from stageflow.runtime.store.base import PoolHolding

if TYPE_CHECKING:
    from stageflow.engine.scheduler import EnginePlan, Scheduler
    from stageflow.runtime.store.base import Store

__all__ = [
    "MAX_SLOTS",
    "POLL_SECONDS",
    "GlobalPools",
    "PoolStatus",
    "RunPools",
    "bind_run",
    "list_pools",
    "remove_pool",
    "set_pool",
    "uses_pools",
    "with_global_pools",
]

logger = logging.getLogger(__name__)

#: How often a run whose task waits for a slot held elsewhere asks again.
POLL_SECONDS = 0.25
#: The most slots a pool may have.
MAX_SLOTS = 1_000_000
#: A pool's name, as a spec's ``pool:`` accepts it (``spec.models``).
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """A global pool: its size and the live holdings of its slots."""

    name: str
    slots: int
    holders: list[PoolHolding]

    @property
    def used(self) -> int:
        return len(self.holders)

    def as_json(self) -> dict[str, object]:
        return {
            "pool": self.name,
            "slots": self.slots,
            "used": self.used,
            "holders": [h._asdict() for h in self.holders],
        }


@dataclass(slots=True)
class _Bound:
    run_id: str
    epoch: int
    store: Store
    ids: list[str]  # task ids by the scheduler's index (grows with mapped children)


class GlobalPools:
    """Pool slots taken from and given back to the store; see the module docstring.

    Keys are the scheduler's ``(scheduler, index)``: ``bind`` tells which run (and
    store connection) a scheduler belongs to before its first request."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._runs: weakref.WeakKeyDictionary[object, _Bound] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._missing: set[str] = set()  # pools already warned about

    def bind(self, sched: Scheduler, *, run_id: str, epoch: int, store: Store) -> None:
        """Slots taken for ``sched``'s tasks are held by ``run_id`` under lease ``epoch``,
        through ``store`` (the run's own connection)."""
        with self._lock:
            self._runs[sched] = _Bound(run_id, epoch, store, [])  # ids: at the first take

    def take(self, key: object, pool: str) -> bool:
        """One slot of ``pool`` for the task ``key`` names, if one is free now; a
        store that fails says no (logged): the task waits and asks again."""
        found = self._holder(key)
        if found is None:
            raise RuntimeError(f"{key!r} asks for pool '{pool}' but its run is not bound")
        bound, task_id, sched = found
        attempt = sched.attempt(task_id) + 1  # the attempt the grant starts
        try:
            taken = bound.store.acquire_pool_slot(
                pool, bound.run_id, task_id, attempt, bound.epoch, self.clock()
            )
        except StageflowError as exc:
            logger.warning("run %s task %s: pool '%s': %s", bound.run_id, task_id, pool, exc)
            return False
        if not taken and pool not in self._missing and not self._exists(bound.store, pool):
            self._missing.add(pool)
            logger.warning(
                "run %s task %s waits for pool '%s', which is no longer in the store; "
                "create it with `stageflow pools set %s SLOTS`",
                bound.run_id,
                task_id,
                pool,
                pool,
            )
        return taken

    def give_back(self, key: object, pool: str) -> None:
        """Delete the task's holding; a store that fails is logged (the holding dies
        with the run's lease at the latest)."""
        found = self._holder(key)
        if found is None:
            return
        bound, task_id, _ = found
        try:
            bound.store.release_pool_slot(pool, bound.run_id, task_id)
        except StageflowError as exc:
            logger.warning(
                "run %s task %s: pool '%s': could not give the slot back (%s); it frees "
                "when the run ends or its lease expires",
                bound.run_id,
                task_id,
                pool,
                exc,
            )

    def _holder(self, key: object) -> tuple[_Bound, str, Scheduler] | None:
        if not (isinstance(key, tuple) and len(key) == 2):
            return None
        sched, index = key
        with self._lock:
            bound = self._runs.get(sched)
            if bound is None:
                return None
            if index >= len(bound.ids):  # the first take, or a mapped task's children appeared
                bound.ids = list(sched.states())
            return bound, bound.ids[index], sched

    def _exists(self, store: Store, pool: str) -> bool:
        try:
            return any(p.name == pool for p in store.pools())
        except StageflowError:
            return True


class RunPools:
    """One run's side of the global pools, for its loop (``runtime.runner``)."""

    def __init__(self, admission: Admission, sched: Scheduler, clock: Callable[[], float]):
        self.admission = admission
        self.sched = sched
        self.clock = clock

    def waiting(self) -> bool:
        """Whether a task of the run was refused a slot held elsewhere: look again
        within ``POLL_SECONDS``."""
        return self.admission.waits_for_pool(self.sched)

    def started_at(self, task_id: str, at: float) -> float:
        """When a task that just started really started: for a pooled task, now (its
        slot was taken after the step's clock was read, possibly after a wait for the
        store), so that one pool's attempt intervals never overlap."""
        grant = self.sched.grant(task_id)
        if grant is None or grant.request.pool is None:
            return at
        return max(at, self.clock())


def bind_run(
    admission: Admission | None,
    sched: Scheduler,
    *,
    run_id: str,
    epoch: int,
    store: Store,
    clock: Callable[[], float],
) -> RunPools | None:
    """Bind a run to its admission's ``GlobalPools`` gate; ``None`` when there is none."""
    if admission is None or not isinstance(admission.gate, GlobalPools):
        return None
    admission.gate.bind(sched, run_id=run_id, epoch=epoch, store=store)
    return RunPools(admission, sched, clock)


def uses_pools(plan: EnginePlan) -> bool:
    """Whether any task of the plan asks for a pool slot."""
    return any(r.pool is not None for r in plan.requests)


def with_global_pools(store: Store, capacity: Capacity, now: float) -> Capacity:
    """``capacity`` with the store's pools (after seeding it with ``capacity``'s own,
    from the settings, where the store has none of that name)."""
    seed: Mapping[str, int] = capacity.pools
    if seed:
        store.seed_pools(dict(seed), now)
    return replace(capacity, pools={p.name: p.slots for p in store.pools()})


# -- configuration (``stageflow pools``) --------------------------------------------------


def set_pool(store: Store, name: str, slots: str | int, now: float) -> int:
    """Create pool ``name`` or resize it to ``slots``; returns the size. ``UsageError``
    for a bad name or a size that is not a whole number from 0 to ``MAX_SLOTS``."""
    _check_name(name)
    try:
        size = int(str(slots).strip())
    except ValueError:
        size = -1
    if not 0 <= size <= MAX_SLOTS:
        raise UsageError(
            f"pool '{name}': SLOTS is {str(slots)!r}; it must be a whole number from 0 to "
            f"{MAX_SLOTS:,} (0 holds every task of the pool back)",
            field="slots",
        )
    store.set_pool(name, size, now)
    return size


def remove_pool(store: Store, name: str) -> None:
    """Delete pool ``name`` and its holdings; ``UsageError`` when there is none (tasks
    naming it then fail validation, and running ones keep going)."""
    _check_name(name)
    if not store.remove_pool(name):
        known = ", ".join(p.name for p in store.pools()) or "none"
        raise UsageError(
            f"no pool '{name}' in the store at {store.url} (pools: {known}); "
            "see `stageflow pools list`",
            field="name",
        )


def list_pools(store: Store, configured: Mapping[str, int], now: float) -> list[PoolStatus]:
    """Every global pool with its live holders at ``now``, after seeding the store
    with the ``configured`` ones it lacks (as a run would)."""
    if configured:
        store.seed_pools(dict(configured), now)
    holders: dict[str, list[PoolHolding]] = {}
    for h in store.pool_holdings(now):
        holders.setdefault(h.pool, []).append(h)
    return [PoolStatus(p.name, p.slots, holders.get(p.name, [])) for p in store.pools()]


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise UsageError(
            f"pool name {name!r} is not valid; use 1 to 64 letters, digits, '_', '.' or '-' "
            "(as a task's pool: field)",
            field="name",
        )
