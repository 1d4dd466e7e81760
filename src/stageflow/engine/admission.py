"""Admission by resources: does a ready task's request fit in what is free now?

Policy. A ``Capacity`` is what the executor has: CPUs, memory, GPUs (whole
devices, numbered), disk, custom resources and named pools with slot counts.
A ``Request`` is what one attempt asks for. ``Admission`` tracks what running
attempts hold: ``acquire`` succeeds only when the whole request fits in what is
free, and returns a ``Grant`` naming the GPU devices assigned; ``release``
gives everything back (the runner calls it on every outcome: success, failure,
timeout, cancellation). GPUs: a request of ``n >= 1`` whole GPUs gets ``n``
devices nobody uses; a fractional request (``0 < gpu < 1``) shares a device
with other fractional requests while their sum stays <= 1 (best fit: the
fullest device that still fits), and never with a whole-GPU holder.
``infeasible`` says, before a run starts, which requests can never fit.

Bounded backfilling. A request that does not fit waits in line (oldest
first); the oldest waiting one holds the *reservation*. Other requests may
still start around it (backfill), but at most ``backfill_limit`` of them:
after that nothing else is admitted until the reserved request fits, so a big
task waits a bounded time and never starves, whichever run it belongs to.
Admitting the reserved key, ``withdraw`` (it was cancelled or its run paused)
or ``forget`` passes the reservation to the next in line.

Exclusive requests (``execution_mode: hybrid``, ``exclusive: true``) are
admitted only when nothing is held, and while one is held nothing else is.

One ``Admission`` may be shared by several runs (one global budget): every
method holds the lock it was given (the runtime passes a thread lock), and
``subscribe`` registers a callback called after each ``release`` (outside the
lock) so that runs waiting for resources wake up. Keys are ``(owner, item)``
pairs: ``forget(owner)`` releases all of an owner's grants (a run that ends
never leaks).

Global pools. Pool slots may be kept outside this process (deployment-wide,
in the store: ``runtime.pools``). An ``Admission`` given a ``PoolGate`` does
not count pool slots itself: once the rest of a pooled request fits, it asks
``gate.take(key, pool)`` (non-blocking; under the lock) and grants only if the
gate gave a slot, and every ``release`` of that grant calls
``gate.give_back(key, pool)`` (outside the lock). A request refused only by the
gate waits, but outside the line: it holds no reservation, since keeping local
resources free for it would not bring a slot held elsewhere any sooner, and the
slot frees without a local ``release``, so ``waits_for_pool(owner)`` tells the
caller to ask again later (the runner polls).

State: the free amount of each scalar resource, the used fraction of each
GPU device, free pool slots (without a gate), the grants by key, the
reservation and its bypass count, the keys the gate refused. Pure: no clock,
no I/O (a gate's I/O is the caller's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Admission", "Capacity", "Grant", "PoolGate", "Request"]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Capacity:
    cpu: float
    memory_gb: float
    gpu: int = 0
    disk_gb: float = math.inf
    custom: Mapping[str, float] = field(default_factory=dict)
    pools: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Request:
    cpu: float = 1.0
    memory_gb: float = 0.0
    gpu: float = 0.0
    disk_gb: float = 0.0
    custom: Mapping[str, float] = field(default_factory=dict)
    pool: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    request: Request
    gpu_devices: tuple[int, ...] = ()


class PoolGate(Protocol):
    """Pool slots kept outside this ``Admission`` (``runtime.pools.GlobalPools``)."""

    def take(self, key: object, pool: str) -> bool:
        """Take one slot of ``pool`` for ``key`` now if one is free; never waits."""

    def give_back(self, key: object, pool: str) -> None:
        """Give back the slot ``key`` took."""


class Admission:
    """Tracks free resources; see the module docstring for the policy."""

    def __init__(
        self,
        capacity: Capacity,
        *,
        backfill_limit: int = 8,
        lock: AbstractContextManager[object] | None = None,
        gate: PoolGate | None = None,
    ) -> None:
        """``lock``: held around every change (a ``threading.RLock`` when runs in
        several threads share this budget; none needed otherwise); ``gate``: pool
        slots are taken from it instead of counted here (module docstring)."""
        self.capacity = capacity
        self.backfill_limit = backfill_limit
        self._lock: AbstractContextManager[object] = lock or nullcontext()
        # Keys that did not fit, oldest first (a dict keeps insertion order); the
        # oldest holds the reservation. ``_bypassed``: grants made around it.
        self._waiting: dict[object, None] = {}
        self._bypassed = 0
        self._exclusive: object | None = None  # the key holding the machine alone
        self._listeners: list[Callable[[], None]] = []
        self._cpu = capacity.cpu
        self._memory = capacity.memory_gb
        self._disk = capacity.disk_gb
        self._custom = dict(capacity.custom)
        self._pools = dict(capacity.pools)
        self._gpu_used = [0.0] * capacity.gpu  # fraction of each device in use
        self._gpu_whole = [False] * capacity.gpu  # held whole by one attempt
        self._grants: dict[object, Grant] = {}
        self.gate = gate
        self._gated: dict[object, None] = {}  # keys the gate refused a slot, not granted since

    # -- questions ---------------------------------------------------------------

    def infeasible(self, request: Request) -> str | None:
        """Why ``request`` can never fit this capacity, or ``None``."""
        found = self.why_infeasible(request)
        return None if found is None else found[1]

    def why_infeasible(self, request: Request) -> tuple[str, str] | None:
        """``(field, message)`` when ``request`` can never fit, else ``None`` (the
        first of ``all_infeasible``)."""
        found = self.all_infeasible(request)
        return found[0] if found else None

    def all_infeasible(self, request: Request) -> list[tuple[str, str]]:
        """``(field, message)`` for every part of ``request`` that can never fit
        (CPUs, memory, GPUs, disk, custom resources, pool); empty when it can."""
        cap = self.capacity
        found: list[tuple[str, str]] = []
        fractional = request.gpu > 1 and not float(request.gpu).is_integer()
        if fractional:
            found.append(
                (
                    "resources.gpu",
                    f"resources.gpu is {request.gpu:g}: a request above 1 GPU must be a whole "
                    "number (fractions share one device)",
                )
            )
        checks = [
            ("cpu", request.cpu, cap.cpu, "CPUs", "--cpus"),
            ("memory_gb", request.memory_gb, cap.memory_gb, "GB of memory", "--memory-gb"),
            ("gpu", math.ceil(request.gpu), cap.gpu, "GPUs", "--gpus"),
            ("disk_gb", request.disk_gb, cap.disk_gb, "GB of free disk", None),
        ]
        for name, asked, have, unit, flag in checks:
            if asked > have + _EPS and not (fractional and name == "gpu"):
                where = f" (capacity set by {flag} or detected)" if flag else ""
                found.append(
                    (
                        f"resources.{name}",
                        f"resources.{name} is {asked:g} but this machine has {_amount(have)} "
                        f"{unit}{where}; lower the request or run it where it fits",
                    )
                )
        for name, asked in request.custom.items():
            limit = cap.custom.get(name)
            if limit is None:
                known = ", ".join(sorted(cap.custom)) or "none"
                found.append(
                    (
                        f"resources.{name}",
                        f"resources.{name}: no custom resource '{name}' is configured "
                        f"(configured: {known})",
                    )
                )
            elif asked > limit + _EPS:
                found.append(
                    (
                        f"resources.{name}",
                        f"resources.{name} is {asked:g} but the capacity is {_amount(limit)}",
                    )
                )
        if request.pool is not None and request.pool not in cap.pools:
            known = ", ".join(sorted(cap.pools)) or "none"
            found.append(
                (
                    "pool",
                    f"pool '{request.pool}' is not configured (pools: {known}); create it with "
                    f"`stageflow pools set {request.pool} SLOTS`",
                )
            )
        return found

    def fits(self, request: Request) -> bool:
        """Whether ``request`` fits in what is free right now."""
        with self._lock:
            return self._fits(request)

    def _fits(self, request: Request) -> bool:
        if request.cpu > self._cpu + _EPS or request.memory_gb > self._memory + _EPS:
            return False
        if request.disk_gb > self._disk + _EPS:
            return False
        for name, asked in request.custom.items():
            if asked > self._custom.get(name, 0.0) + _EPS:
                return False
        if request.pool is not None and self.gate is None and self._pools.get(request.pool, 0) < 1:
            return False
        return self._pick_gpus(request.gpu) is not None

    def waits_for_pool(self, owner: object) -> bool:
        """Whether a key ``(owner, item)`` was refused a slot by the gate and has not
        been granted, withdrawn or forgotten since: its slot may free elsewhere, so
        ``owner`` must ask again later."""
        if not self._gated:  # the common case, read without the lock (runs ask often)
            return False
        with self._lock:
            return any(isinstance(k, tuple) and k and k[0] is owner for k in self._gated)

    @property
    def held(self) -> int:
        """How many grants are outstanding."""
        return len(self._grants)

    @property
    def reserved(self) -> object | None:
        """The key the next resources are kept for (bounded backfilling), or ``None``."""
        return next(iter(self._waiting), None)

    def may_backfill(self, key: object) -> bool:
        """Whether a request other than the reservation may still be admitted
        around it (always True for the reserved key itself or with none)."""
        with self._lock:
            return self._open_for(key)

    def _open_for(self, key: object) -> bool:
        head = next(iter(self._waiting), None)
        return head is None or head == key or self._bypassed < self.backfill_limit

    def free(self) -> dict[str, float]:
        """What is free now (for logs and tests)."""
        return {
            "cpu": self._cpu,
            "memory_gb": self._memory,
            "disk_gb": self._disk,
            "gpu": sum(1.0 - used for used in self._gpu_used),
            **{f"custom.{k}": v for k, v in self._custom.items()},
            **{f"pool.{k}": float(v) for k, v in self._pools.items()},
        }

    # -- changes -------------------------------------------------------------------

    def acquire(self, key: object, request: Request, *, exclusive: bool = False) -> Grant | None:
        """Take ``request`` for ``key`` if it may start now; ``None`` (nothing taken)
        if not: the key then waits in line, and the oldest waiting key holds the
        reservation, around which at most ``backfill_limit`` others are admitted."""
        with self._lock:
            if key in self._grants:
                raise RuntimeError(f"{key!r} already holds resources")
            if (
                self._exclusive is not None
                or not self._open_for(key)
                or not self._fits(request)
                or (exclusive and self._grants)
            ):
                self._gated.pop(key, None)
                self._waiting.setdefault(key, None)
                return None
            grant: Grant | None = None
            if request.pool is not None and self.gate is not None:
                if not self.gate.take(key, request.pool):
                    # Refused a slot held elsewhere: it waits, but out of the line.
                    self._gated[key] = None
                    listeners = self._leave_line(key)
                else:
                    self._gated.pop(key, None)
            if key not in self._gated:
                head = next(iter(self._waiting), None)
                moved = head is not None and head == key
                if key in self._waiting:
                    del self._waiting[key]
                if moved:
                    self._bypassed = 0  # the next in line holds the reservation now
                elif head is not None:
                    self._bypassed += 1
                if exclusive:
                    self._exclusive = key
                grant = self._take(key, request)
                listeners = list(self._listeners) if moved else []
        for callback in listeners:  # others held back by the reservation may go on
            callback()
        return grant

    def withdraw(self, key: object) -> None:
        """``key`` no longer waits (cancelled, or its run paused): it leaves the line."""
        with self._lock:
            self._gated.pop(key, None)
            listeners = self._leave_line(key)
        for callback in listeners:
            callback()

    def _leave_line(self, key: object) -> list[Callable[[], None]]:
        """Take ``key`` out of the line (under the lock); the listeners to call when
        it held the reservation (the next in line holds it now)."""
        if key not in self._waiting:
            return []
        moved = next(iter(self._waiting)) == key
        del self._waiting[key]
        if not moved:
            return []
        self._bypassed = 0
        return list(self._listeners)

    def forget(self, owner: object) -> None:
        """Release every grant of keys ``(owner, item)`` and take them out of line."""
        with self._lock:
            mine = [k for k in self._grants if isinstance(k, tuple) and k and k[0] is owner]
            waiting = [k for k in self._waiting if isinstance(k, tuple) and k and k[0] is owner]
            waiting += [k for k in self._gated if isinstance(k, tuple) and k and k[0] is owner]
        for key in waiting:
            self.withdraw(key)
        for key in mine:
            self.release(key)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every release (e.g. to wake a waiting run)."""
        with self._lock:
            self._listeners.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _take(self, key: object, request: Request) -> Grant:
        devices = self._pick_gpus(request.gpu) or ()
        self._cpu -= request.cpu
        self._memory -= request.memory_gb
        self._disk -= request.disk_gb
        for name, asked in request.custom.items():
            self._custom[name] -= asked
        if request.pool is not None and self.gate is None:
            self._pools[request.pool] -= 1
        if request.gpu >= 1:
            for d in devices:
                self._gpu_used[d] = 1.0
                self._gpu_whole[d] = True
        elif request.gpu > 0:
            self._gpu_used[devices[0]] += request.gpu
        grant = Grant(request, tuple(devices))
        self._grants[key] = grant
        return grant

    def release(self, key: object) -> None:
        """Give back what ``key`` holds (no-op when it holds nothing)."""
        with self._lock:
            grant = self._grants.pop(key, None)
            if grant is None:
                return
            self._give_back(key, grant)
            listeners = list(self._listeners)
        pool = grant.request.pool
        if pool is not None and self.gate is not None:
            self.gate.give_back(key, pool)  # outside the lock: it may write to a store
        for callback in listeners:
            callback()

    def _give_back(self, key: object, grant: Grant) -> None:
        if self._exclusive == key:
            self._exclusive = None
        request = grant.request
        self._cpu += request.cpu
        self._memory += request.memory_gb
        self._disk += request.disk_gb
        for name, asked in request.custom.items():
            self._custom[name] += asked
        if request.pool is not None and self.gate is None:
            self._pools[request.pool] += 1
        if request.gpu >= 1:
            for d in grant.gpu_devices:
                self._gpu_used[d] = 0.0
                self._gpu_whole[d] = False
        elif request.gpu > 0:
            d = grant.gpu_devices[0]
            self._gpu_used[d] = max(0.0, self._gpu_used[d] - request.gpu)

    def _pick_gpus(self, gpu: float) -> tuple[int, ...] | None:
        """Devices for a GPU request, or ``None`` when none fit now."""
        if gpu <= 0:
            return ()
        if gpu >= 1:
            free = [d for d, used in enumerate(self._gpu_used) if used <= _EPS]
            n = int(gpu)
            return tuple(free[:n]) if len(free) >= n else None
        best: int | None = None
        for d, used in enumerate(self._gpu_used):
            if self._gpu_whole[d] or used + gpu > 1.0 + _EPS:
                continue
            if best is None or used > self._gpu_used[best]:
                best = d  # best fit: the fullest device that still has room
        return None if best is None else (best,)


def _amount(value: float) -> str:
    """A detected or configured amount for people: ``23.5`` for 23.5403 GB, ``7.75``,
    ``16``; a request is shown as the user wrote it."""
    return f"{round(value, 2 if abs(value) < 10 else 1):g}"
