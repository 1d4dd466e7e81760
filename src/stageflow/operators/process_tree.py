"""Measuring a process tree's memory, and the memory limit's message.

A tree is a process and its descendants, found by parent pid (a child that
started a session of its own still counts). Its resident memory is the sum of
its processes' RSS, sampled: a peak shorter than the sampling period may be
missed. Reading one process's RSS is cheap; finding descendants reads the whole
process table, so that is done at most every ``RESCAN_SECONDS`` for all trees
sampled in this process together: a process started since the last scan counts
from the next one on.

psutil is imported on the first sample, never at import time.

The samplers alive in this process are listed by ``live_trees`` (a weak set: a sampler
leaves it when its attempt drops it), each with its labels, its last RSS and its tree's
CPU seconds read from the processes it already holds: the monitor (``runtime.monitor``)
reports running task processes from them rather than sampling them a second time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import weakref
from typing import Any

__all__ = [
    "RESCAN_SECONDS",
    "SAMPLE_SECONDS",
    "TreeSampler",
    "live_trees",
    "memory_limit_message",
]

SAMPLE_SECONDS = 0.05
RESCAN_SECONDS = 0.5
_MIB = 1024 * 1024


def memory_limit_message(peak_mb: float, limit_gb: float) -> str:
    """Why an attempt was killed for its memory, and how to fix it (GB: GiB, as
    ``resources.memory_gb``). The peak shows as many decimals as it takes to read
    above the limit."""
    peak_gb = peak_mb / 1024
    digits = 2
    while digits < 4 and round(peak_gb, digits) <= limit_gb:
        digits += 1
    return (
        f"the task exceeded its memory limit: peaked at {peak_gb:.{digits}f} GB, "
        f"limit {limit_gb:g} GB (resources.memory_gb with enforce_limits: true); "
        "raise resources.memory_gb or reduce the task's memory use"
    )


class TreeSampler:
    """Samples the summed RSS of process ``pid`` and its descendants; keeps the peak."""

    def __init__(self, pid: int, labels: dict[str, str] | None = None) -> None:
        self.pid = pid
        self.labels = dict(labels or {})  # what the tree runs (run_id, task_id, ...)
        self.peak_mb: float | None = None  # None: nothing sampled yet
        self.last_mb: float | None = None  # the last sample; None: none, or the root is gone
        self._procs: dict[int, Any] = {}  # pid -> psutil.Process, reused across samples
        with _live_lock:
            _live.add(self)

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the tree's processes as last sampled; ``None``
        when none can be read."""
        import psutil

        total, read = 0.0, False
        for proc in list(self._procs.values()):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
                read = True
        return total if read else None

    def sample(self) -> float | None:
        """The tree's RSS now, in MiB; ``None`` once the root process is gone."""
        import psutil

        pids = [self.pid, *_descendants(self.pid)]
        total = 0
        for pid in pids:
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                total += proc.memory_info().rss
            except psutil.Error:
                self._procs.pop(pid, None)
                if pid == self.pid:
                    self.last_mb = None
                    return None
        for gone in self._procs.keys() - set(pids):
            del self._procs[gone]
        rss = self.last_mb = total / _MIB
        if self.peak_mb is None or rss > self.peak_mb:
            self.peak_mb = rss
        return rss


_live_lock = threading.Lock()
_live: weakref.WeakSet[TreeSampler] = weakref.WeakSet()


def live_trees() -> list[TreeSampler]:
    """The samplers alive in this process whose tree was sampled and still runs."""
    with _live_lock:
        trees = list(_live)
    return [t for t in trees if t.last_mb is not None]


_table_lock = threading.Lock()
_table: dict[int, list[int]] = {}  # parent pid -> child pids
_table_at = float("-inf")


def _descendants(pid: int) -> list[int]:
    global _table, _table_at
    with _table_lock:
        now = time.monotonic()
        if now - _table_at >= RESCAN_SECONDS:
            _table, _table_at = _children_table(), now
        table = _table
    found: list[int] = []
    seen = {pid}  # a pid reused during the scan must not make a cycle
    todo = list(table.get(pid, ()))
    while todo:
        child = todo.pop()
        if child not in seen:
            seen.add(child)
            found.append(child)
            todo.extend(table.get(child, ()))
    return found


def _children_table() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process this one can see."""
    table: dict[int, list[int]] = {}
    if sys.platform.startswith("linux"):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses
                ppid = int(stat.rsplit(b")", 1)[1].split()[1])
                table.setdefault(ppid, []).append(int(name))
        return table
    import psutil

    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid is not None:
            table.setdefault(ppid, []).append(proc.pid)
    return table
