"""Task functions for the attempt-usage tests (``test_attempt_usage.py``).

At module level in an importable module, so that worker processes import them by
reference. Memory is filled (``b"x" * n``), not merely reserved, so that it is
resident.
"""

from __future__ import annotations

import subprocess
import sys
import time

MIB = 1024 * 1024


def busy(cpu_seconds: float) -> int:
    """Arithmetic until this thread has used ``cpu_seconds`` of CPU time."""
    start = time.thread_time()
    n = 0
    while time.thread_time() - start < cpu_seconds:
        for i in range(10_000):
            n += i * i
    return n


def allocate(mb: int) -> int:
    data = b"x" * (mb * MIB)
    return len(data)


def allocate_and_wait(mb: int) -> int:
    """Hold ``mb`` MiB for a minute: long enough for any limit to be seen."""
    data = b"x" * (mb * MIB)
    time.sleep(60)
    return len(data)


def child_holds(mb: int, seconds: float) -> int:
    """Start a Python process that holds ``mb`` MiB for ``seconds``; wait for it."""
    code = f"import time; data = b'x' * ({mb} * {MIB}); time.sleep({seconds})"
    return subprocess.run([sys.executable, "-c", code], check=True).returncode


def ok() -> str:
    return "ok"
