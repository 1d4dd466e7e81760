"""Task functions for the resilience and caching integration tests.

Module-level and importable, so worker processes (the ``process`` executor)
find them by reference (see ``helpers_tasks``). Each task that must be counted
appends one line per execution to a file named by its parameters, with
``O_APPEND`` so concurrent writers never mix lines.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from helpers_tasks import append_line, read_lines

from stageflow.errors import MissingExtra
from stageflow.operators.base import TaskContext


class TransientError(ConnectionError):
    """A network hiccup: worth retrying."""


class BadInput(ValueError):
    """A data error: retrying cannot help."""


class CorruptData(Exception):
    """Severe: the whole run must stop (``fatal_on``)."""


_ERRORS: dict[str, type[Exception]] = {
    "TransientError": TransientError,
    "BadInput": BadInput,
    "CorruptData": CorruptData,
    "MissingExtra": MissingExtra,  # what stageflow's own helpers raise for a package to install
}


def flaky(log: str, fail_times: int, error: str) -> str:
    """Raise ``error`` on the first ``fail_times`` executions, then succeed."""
    append_line(log, "run")
    if len(read_lines(log)) <= fail_times:
        raise _ERRORS[error](f"attempt {len(read_lines(log))} failed")
    return "recovered"


def wait_for_then_raise(marker: str, error: str) -> None:
    """Wait until ``marker`` exists (another task is running), then raise ``error``."""
    deadline = time.monotonic() + 30
    while not Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    raise _ERRORS[error]("checksum mismatch in the input data")


def call_api(log: str, health: str) -> dict[str, str]:
    """A call to a shared service: fails while the ``health`` file says ``down``."""
    append_line(log, "call")
    if Path(health).read_text().strip() == "down":
        raise TransientError("service unavailable")
    return {"status": "ok"}


def extract() -> list[int]:
    return [1, 2, 3]


def broken(extract: list[int]) -> int:
    raise BadInput(f"cannot score {len(extract)} rows")


def score_one(extract: int) -> int:
    """One element of a mapped task: the second one is bad."""
    if extract == 2:
        raise BadInput(f"cannot score {extract}")
    return extract * 10


def report(broken: Any) -> Any:
    return {"got": broken}


def degraded(extract: list[int], error: str, factor: int = 1) -> dict[str, Any]:
    """A fallback: the task's inputs and parameters, plus the error text."""
    return {"degraded": True, "rows": len(extract) * factor, "error": error}


def failing_fallback(error: str) -> None:
    raise RuntimeError("the fallback is broken too")


def slow(seconds: float, marker: str = "") -> str:
    if marker:
        Path(marker).touch()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return "slept"


#: The thread of each abandoned first attempt of ``slow_first_attempt``, by gate.
ABANDONED: dict[str, threading.Thread] = {}


def slow_first_attempt(gate: str, size: int, context: TaskContext) -> bytes:
    """Attempt 1 waits until the folder ``gate`` holds ``open`` (past its timeout),
    then returns ``size`` bytes of ``1``; later attempts return ``size`` bytes of
    ``2`` at once. (A folder, not a file: a file's version is part of a cache key.)"""
    if context.attempt > 1:
        return b"2" * size
    ABANDONED[gate] = threading.current_thread()
    deadline = time.monotonic() + 30
    while not Path(gate, "open").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return b"1" * size


def big_fallback(size: int) -> bytes:
    return b"F" * size


# -- caching ---------------------------------------------------------------------------------


def counted(log: str, value: Any) -> Any:
    """Return ``value``; record one line per execution."""
    append_line(log, "ran")
    return value


def double(log: str, counted: Any) -> Any:
    append_line(log, "ran")
    return [x * 2 for x in counted]


def parity(log: str, counted: Any) -> list[bool]:
    """Depends only on the parity of the input: different inputs, same output."""
    append_line(log, "ran")
    return [x % 2 == 0 for x in counted]


def total(log: str, *args: Any) -> int:
    append_line(log, "ran")
    return sum(sum(int(v) for v in a) for a in args)


def read_source(log: str, path: str) -> int:
    """An ingestion task: its key includes the file's size and mtime."""
    append_line(log, "ran")
    return len(Path(path).read_text().split())


def stamp(log: str) -> float:
    append_line(log, "ran")
    return time.time() + os.getpid()  # never the same twice
