"""What this machine offers, and what tasks ask of it.

``detect_capacity``: the ``Capacity`` the engine admits tasks against.

Detected: CPUs (the ones this process may use), memory (psutil), GPUs
(``nvidia-smi -L``, else 0: no GPU here is not an error) and free disk under the
state folder. Configured values win: ``STAGEFLOW_MAX_CPU_CORES`` /
``MAX_CPU_CORES``, ``STAGEFLOW_MAX_MEMORY_GB`` / ``MAX_MEMORY_GB``,
``STAGEFLOW_MAX_GPU_COUNT`` / ``MAX_GPU_COUNT``, pools as
``STAGEFLOW_POOLS="training=2,etl=4"`` and custom resources as
``STAGEFLOW_CUSTOM_RESOURCES="licenses=3"`` (parsed and checked by
``runtime.settings``, which refuses a bad one when the settings load).
Pools are not this machine's: ``configured_pools`` only seeds the store's
global pools (``runtime.pools``), whose sizes the runs share.

``operator_defaults``: the request of a task that declares none, by operator
(seed 001's ``DEFAULT_TASK_RESOURCES``), from
``STAGEFLOW_DEFAULT_TASK_RESOURCES='{"model_training": {"cpu": 2, "memory_gb": 4}}'``.
``resource_problems``: requests that can never fit, as validation problems.
``history_estimates``: each task's expected seconds for critical-path order —
its ``estimated_seconds``, else the median of its successful durations in the
pipeline's last runs (at most 10, and no more than ``HISTORY_ROWS`` task runs in
all, so the read stays ~1-2 ms: a 1,000-task pipeline looks at its last 2 runs),
else 1.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from stageflow.engine.admission import Admission, Capacity, Grant
from stageflow.errors import Problem, UsageError
from stageflow.runtime.settings import capacity_number, parse_counts
from stageflow.spec.models import Pipeline, Resources

if TYPE_CHECKING:
    from stageflow.engine.scheduler import EnginePlan
    from stageflow.runtime.store.base import Store

__all__ = [
    "attempt_env",
    "configured_pools",
    "detect_capacity",
    "history_estimates",
    "operator_defaults",
    "parse_counts",
    "request_json",
    "resource_problems",
    "with_overrides",
]

#: Pipelines larger than this plan with their own estimates only (reading the
#: history of 100,000s of tasks would cost more than the order gains).
HISTORY_MAX_TASKS = 5000
HISTORY_RUNS = 10
#: At most this many task runs are read for the estimates: ~1 µs each, at every run's start.
HISTORY_ROWS = 2000


def detect_capacity(home: Path, env: Mapping[str, str] | None = None) -> Capacity:
    """The machine's capacity with configured overrides applied; ``UsageError``
    names a bad override (``settings.capacity_number``, ``settings.parse_counts``)."""
    env = os.environ if env is None else env
    cpu = capacity_number("MAX_CPU_CORES", env)
    memory = capacity_number("MAX_MEMORY_GB", env)
    gpus = capacity_number("MAX_GPU_COUNT", env)
    return Capacity(
        cpu=cpu if cpu is not None else float(_cpus()),
        memory_gb=memory if memory is not None else _memory_gb(),
        gpu=int(gpus) if gpus is not None else _gpus(env.get("PATH")),
        disk_gb=_disk_gb(home),
        custom=parse_counts(
            env.get("STAGEFLOW_CUSTOM_RESOURCES", ""), "STAGEFLOW_CUSTOM_RESOURCES"
        ),
        pools=configured_pools(env),
    )


def configured_pools(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """Pool sizes from ``STAGEFLOW_POOLS`` (they seed the store's global pools where it
    has none of that name: ``runtime.pools``); ``UsageError`` names a bad one."""
    env = os.environ if env is None else env
    raw = env.get("STAGEFLOW_POOLS", "")
    return {k: int(v) for k, v in parse_counts(raw, "STAGEFLOW_POOLS").items()}


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _memory_gb() -> float:
    import psutil

    return float(psutil.virtual_memory().total) / 1024**3


def _gpus(path: str | None) -> int:
    smi = shutil.which("nvidia-smi", path=path)
    if smi is None:
        return 0
    import subprocess  # only where nvidia-smi exists

    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def _disk_gb(home: Path) -> float:
    path = home if home.exists() else Path.cwd()
    try:
        return shutil.disk_usage(path).free / 1024**3
    except OSError:
        return float("inf")


def with_overrides(
    capacity: Capacity,
    *,
    cpus: float | None = None,
    memory_gb: float | None = None,
    gpus: int | None = None,
) -> Capacity:
    """``capacity`` with the CLI's ``--cpus/--memory-gb/--gpus`` applied."""
    from dataclasses import replace

    for flag, value in (("--cpus", cpus), ("--memory-gb", memory_gb), ("--gpus", gpus)):
        if value is not None and value < 0:
            raise UsageError(f"{flag} is {value:g}; it must not be negative", field=flag)
    return replace(
        capacity,
        cpu=capacity.cpu if cpus is None else float(cpus),
        memory_gb=capacity.memory_gb if memory_gb is None else float(memory_gb),
        gpu=capacity.gpu if gpus is None else int(gpus),
    )


def operator_defaults(env: Mapping[str, str] | None = None) -> dict[str, Resources]:
    """Default requests by operator name; ``UsageError`` names a bad entry."""
    env = os.environ if env is None else env
    raw = env.get("STAGEFLOW_DEFAULT_TASK_RESOURCES") or env.get("DEFAULT_TASK_RESOURCES")
    if not raw:
        return {}
    variable = "STAGEFLOW_DEFAULT_TASK_RESOURCES"
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{variable} is not JSON ({exc}); e.g. '{_EXAMPLE}'") from None
    if not isinstance(data, dict):
        raise UsageError(f"{variable} must be a JSON object by operator, e.g. '{_EXAMPLE}'")
    out: dict[str, Resources] = {}
    from pydantic import ValidationError

    from stageflow.spec.messages import readable_error

    for operator, request in data.items():
        try:
            out[str(operator)] = Resources.model_validate(request)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UsageError(
                f"{variable}: {operator}{'.' + where if where else ''}: {readable_error(first)}"
            ) from None
    return out


_EXAMPLE = '{"model_training": {"cpu": 2, "memory_gb": 4}}'


def resource_problems(pipeline: Pipeline, plan: EnginePlan, capacity: Capacity) -> list[Problem]:
    """A problem for each part of each task's request that can never fit ``capacity``
    (a task asking too many GPUs and too much memory gets both)."""
    if not plan.needs_admission():
        return []
    admission = Admission(capacity)
    problems = []
    seen: dict[int, list[tuple[str, str]]] = {}
    for i, tid in enumerate(plan.ids):
        c = plan.request_of[i] if plan.request_of else -1
        if c < 0:
            continue
        if c not in seen:
            seen[c] = admission.all_infeasible(plan.requests[c])
        for field, message in seen[c]:
            problems.append(Problem(f"{message} (task cannot run here)", task=tid, field=field))
    return problems


def history_estimates(store: Store, pipeline: Pipeline, plan: EnginePlan) -> list[float]:
    """Expected seconds per task (see the module docstring); ``[]`` when there is
    nothing better than 1 s each."""
    own = {t.id: t.estimated_seconds for t in pipeline.tasks if t.estimated_seconds}
    durations: dict[str, list[float]] = {}
    if 2 < len(plan.ids) <= HISTORY_MAX_TASKS and len(own) < len(plan.ids):
        runs = max(1, min(HISTORY_RUNS, HISTORY_ROWS // len(plan.ids)))
        for tid, seconds in store.task_durations(pipeline.name, runs):
            durations.setdefault(tid, []).append(seconds)
    if not own and not durations:
        return []
    import statistics  # only with history to summarise

    return [
        own.get(tid) or (statistics.median(durations[tid]) if tid in durations else 1.0)
        for tid in plan.ids
    ]


def attempt_env(grant: Grant | None) -> dict[str, str]:
    """Variables an attempt gets from its grant: ``CUDA_VISIBLE_DEVICES`` for GPUs."""
    if grant is None or grant.request.gpu <= 0:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(d) for d in grant.gpu_devices)}


def request_json(grant: Grant | None) -> str | None:
    """The resources a grant holds, as stored with the attempt; ``None`` for none."""
    if grant is None:
        return None
    r = grant.request
    data: dict[str, object] = {}
    for name, value in (
        ("cpu", r.cpu),
        ("memory_gb", r.memory_gb),
        ("gpu", r.gpu),
        ("disk_gb", r.disk_gb),
    ):
        if value:
            data[name] = value
    data.update(r.custom)
    if r.pool is not None:
        data["pool"] = r.pool
    return json.dumps(data, sort_keys=True) if data else None
