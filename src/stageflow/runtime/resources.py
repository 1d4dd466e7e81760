"""What this machine offers: the ``Capacity`` the engine admits tasks against.

Detected: CPUs (the ones this process may use), memory (psutil), GPUs
(``nvidia-smi -L``, else 0: no GPU here is not an error) and free disk under the
state folder. Configured values win: ``STAGEFLOW_MAX_CPU_CORES`` /
``MAX_CPU_CORES``, ``STAGEFLOW_MAX_MEMORY_GB`` / ``MAX_MEMORY_GB``,
``STAGEFLOW_MAX_GPU_COUNT`` / ``MAX_GPU_COUNT``, pools as
``STAGEFLOW_POOLS="training=2,etl=4"`` and custom resources as
``STAGEFLOW_CUSTOM_RESOURCES="licenses=3"``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from stageflow.engine.admission import Capacity
from stageflow.errors import UsageError

__all__ = ["detect_capacity", "parse_counts"]


def detect_capacity(home: Path, env: Mapping[str, str] | None = None) -> Capacity:
    """The machine's capacity with configured overrides applied."""
    env = os.environ if env is None else env

    def number(name: str) -> float | None:
        raw = env.get(f"STAGEFLOW_{name}") or env.get(name)
        if raw in (None, ""):
            return None
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"{name} is {raw!r}; it must be a number") from None
        if value < 0:
            raise UsageError(f"{name} is {raw!r}; it must not be negative")
        return value

    cpu = number("MAX_CPU_CORES")
    memory = number("MAX_MEMORY_GB")
    gpus = number("MAX_GPU_COUNT")
    return Capacity(
        cpu=cpu if cpu is not None else float(_cpus()),
        memory_gb=memory if memory is not None else _memory_gb(),
        gpu=int(gpus) if gpus is not None else _gpus(env.get("PATH")),
        disk_gb=_disk_gb(home),
        custom=parse_counts(
            env.get("STAGEFLOW_CUSTOM_RESOURCES", ""), "STAGEFLOW_CUSTOM_RESOURCES"
        ),
        pools={
            k: int(v)
            for k, v in parse_counts(env.get("STAGEFLOW_POOLS", ""), "STAGEFLOW_POOLS").items()
        },
    )


def parse_counts(text: str, variable: str) -> dict[str, float]:
    """``"a=2,b=0.5"`` -> ``{"a": 2.0, "b": 0.5}``; ``UsageError`` names a bad item."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not sep or not name.strip() or amount < 0:
            raise UsageError(f"{variable}: {item!r} is not NAME=AMOUNT (e.g. training=2)")
        out[name.strip()] = amount
    return out


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
