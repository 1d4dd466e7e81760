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

State: the free amount of each scalar resource, the used fraction of each
GPU device, free pool slots, and the grants by key. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Admission", "Capacity", "Grant", "Request"]

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


class Admission:
    """Tracks free resources; see the module docstring for the policy."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self._cpu = capacity.cpu
        self._memory = capacity.memory_gb
        self._disk = capacity.disk_gb
        self._custom = dict(capacity.custom)
        self._pools = dict(capacity.pools)
        self._gpu_used = [0.0] * capacity.gpu  # fraction of each device in use
        self._gpu_whole = [False] * capacity.gpu  # held whole by one attempt
        self._grants: dict[object, Grant] = {}

    # -- questions ---------------------------------------------------------------

    def infeasible(self, request: Request) -> str | None:
        """Why ``request`` can never fit this capacity, or ``None``."""
        cap = self.capacity
        if request.gpu > 1 and not float(request.gpu).is_integer():
            return (
                f"gpu is {request.gpu:g}: a request above 1 GPU must be a whole number "
                "(fractions share one device)"
            )
        checks = [
            ("cpu", request.cpu, cap.cpu, "CPUs"),
            ("memory_gb", request.memory_gb, cap.memory_gb, "GB of memory"),
            ("gpu", math.ceil(request.gpu), cap.gpu, "GPUs"),
            ("disk_gb", request.disk_gb, cap.disk_gb, "GB of disk"),
        ]
        for name, asked, have, unit in checks:
            if asked > have + _EPS:
                return (
                    f"resources.{name} is {asked:g} but this machine has {have:g} {unit}; "
                    f"lower it{' or use --executor ray' if name == 'gpu' else ''}"
                )
        for name, asked in request.custom.items():
            limit = cap.custom.get(name)
            if limit is None:
                known = ", ".join(sorted(cap.custom)) or "none"
                return (
                    f"resources.{name}: no custom resource '{name}' is configured "
                    f"(configured: {known})"
                )
            if asked > limit + _EPS:
                return f"resources.{name} is {asked:g} but the capacity is {limit:g}"
        if request.pool is not None and request.pool not in cap.pools:
            known = ", ".join(sorted(cap.pools)) or "none"
            return f"pool '{request.pool}' is not configured (pools: {known})"
        return None

    def fits(self, request: Request) -> bool:
        """Whether ``request`` fits in what is free right now."""
        if request.cpu > self._cpu + _EPS or request.memory_gb > self._memory + _EPS:
            return False
        if request.disk_gb > self._disk + _EPS:
            return False
        for name, asked in request.custom.items():
            if asked > self._custom.get(name, 0.0) + _EPS:
                return False
        if request.pool is not None and self._pools.get(request.pool, 0) < 1:
            return False
        return self._pick_gpus(request.gpu) is not None

    @property
    def held(self) -> int:
        """How many grants are outstanding."""
        return len(self._grants)

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

    def acquire(self, key: object, request: Request) -> Grant | None:
        """Take ``request`` for ``key`` if it fits now; ``None`` (nothing taken) if not."""
        if key in self._grants:
            raise RuntimeError(f"{key!r} already holds resources")
        if not self.fits(request):
            return None
        devices = self._pick_gpus(request.gpu) or ()
        self._cpu -= request.cpu
        self._memory -= request.memory_gb
        self._disk -= request.disk_gb
        for name, asked in request.custom.items():
            self._custom[name] -= asked
        if request.pool is not None:
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
        grant = self._grants.pop(key, None)
        if grant is None:
            return
        request = grant.request
        self._cpu += request.cpu
        self._memory += request.memory_gb
        self._disk += request.disk_gb
        for name, asked in request.custom.items():
            self._custom[name] += asked
        if request.pool is not None:
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
