"""Shared helpers for the bench scripts: timing, peak memory, a scratch home."""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scratch_home() -> str:
    return tempfile.mkdtemp(prefix="stageflow-bench-")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def report(name: str, **figures: Any) -> None:
    """One line per workload: ``name: key=value ...`` (what bench/README.md records)."""
    parts = []
    for key, value in figures.items():
        parts.append(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}")
    print(f"{name}: {' '.join(parts)}", flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def main_guard(fn: Callable[[], None]) -> None:
    try:
        fn()
    except KeyboardInterrupt:
        sys.exit(130)
