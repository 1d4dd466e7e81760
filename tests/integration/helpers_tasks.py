"""Task functions for the runtime's integration tests.

They live at module level in an importable module so that worker processes
(the ``process`` executor) can import them by reference: pytest puts this
folder on ``sys.path`` (it has no ``__init__.py``) and worker processes inherit
``sys.path``. Tasks that leave evidence write it to files named by their
parameters, opened with ``O_APPEND`` so that concurrent writers never mix lines.
A few checks shared by ``test_runtime.py`` and ``test_crash_resume.py`` come first.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stageflow.operators.base import TaskContext
from stageflow.runtime.store import Store, open_store

BIG_BYTES = 200_000
BIG_LIST = 50_000

logger = logging.getLogger("helpers_tasks")


def append_line(path: str | Path, line: str) -> None:
    """Append one line with a single ``write`` (atomic for short lines with O_APPEND)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: str | Path) -> list[str]:
    p = Path(path)
    return p.read_text().splitlines() if p.exists() else []


# -- checks shared by the tests --------------------------------------------------------------

# Settings read these too (seed documents' names): the host's must not leak into a test.
SEED_VARS = frozenset(
    {
        "DATABASE_URL",
        "MAX_PARALLEL_TASKS",
        "MAX_CONCURRENT_RUNS",
        "TASK_TIMEOUT",
        "MAX_RETRIES",
        "LOG_LEVEL",
        "API_HOST",
        "API_PORT",
    }
)


def me() -> str:
    """Who this process is to run control without a server: its operating-system user by
    effective uid (the uid as text without a passwd entry), whatever ``$USER`` says."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def clean_environ(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without stageflow's settings variables."""
    return {k: v for k, v in env.items() if not k.startswith("STAGEFLOW_") and k not in SEED_VARS}


@contextmanager
def store_of(home: Path) -> Iterator[Store]:
    store = open_store(None, home)
    try:
        yield store
    finally:
        store.close()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting until {what}")
        time.sleep(0.02)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")
    except OSError:
        return True


def assert_durable_and_causal(store: Store, upstream: dict[str, list[str]], run_id: str) -> None:
    """Every success has an output row whose bytes match its hash, and every task's
    ``success`` event comes before its downstream's first ``running`` event."""
    rows = {r.task_id: r for r in store.task_runs(run_id)}
    outputs = store.outputs(run_id)
    for tid, row in rows.items():
        if row.state != "success":
            continue
        ref = outputs.get(tid)
        assert ref is not None, f"task {tid} succeeded without an output row"
        data = ref.data if ref.kind == "inline" else Path(ref.uri or "").read_bytes()
        assert data is not None
        assert len(data) == ref.size
        assert hashlib.sha256(data).hexdigest() == ref.sha256, tid
    events = store.events(run_id)
    success_at = {e.task_id: i for i, e in enumerate(events) if e.to_state == "success"}
    first_running: dict[str, int] = {}
    for i, e in enumerate(events):
        if e.to_state == "running" and e.task_id is not None:
            first_running.setdefault(e.task_id, i)
    for tid, ups in upstream.items():
        if tid not in first_running:
            continue
        for up in ups:
            if rows[up].state == "success":
                assert success_at[up] < first_running[tid], (up, tid)


# -- passing outputs ---------------------------------------------------------------------


def small() -> dict[str, int]:
    return {"n": 21}


def big_bytes() -> bytes:
    return b"x" * BIG_BYTES


def big_list() -> list[int]:
    return list(range(BIG_LIST))


def by_name(small: dict[str, int], big_bytes: bytes, big_list: list[int]) -> dict[str, int]:
    return {"n": small["n"] * 2, "bytes": len(big_bytes), "items": len(big_list)}


def positional(*args: Any) -> list[str]:
    return [type(a).__name__ for a in args]


# -- retries -------------------------------------------------------------------------------


def flaky(attempts_file: str, context: TaskContext) -> str:
    """Fail the first two attempts; every call leaves a line in ``attempts_file``."""
    append_line(attempts_file, str(context.attempt))
    if context.attempt <= 2:
        raise ValueError(f"flaky failure on attempt {context.attempt}")
    return f"ok after {context.attempt}"


# -- timeouts and crashes --------------------------------------------------------------------


def sleep_long(pid_file: str, release_file: str, done_file: str) -> str:
    """Sleep up to 30 s (until ``release_file`` exists); leave the pid first."""
    append_line(pid_file, str(os.getpid()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not os.path.exists(release_file):
        time.sleep(0.05)
    append_line(done_file, "finished")
    return "slept"


def exit_3() -> None:
    os._exit(3)


def sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def segfault() -> None:
    ctypes.string_at(0)


def fail() -> None:
    raise RuntimeError("boom: this task always fails")


def ok() -> str:
    return "ok"


def wait_cancelled(context: TaskContext) -> str:
    """Run until cancelled (at most 20 s): a task that is running when the run fails fast."""
    context.cancelled.wait(20)
    return "waited"


# -- logs and intervals --------------------------------------------------------------------


def chatty(marker: str) -> str:
    print(f"printed {marker}", flush=True)
    logger.warning("logged %s", marker)
    return marker


def interval(out_dir: str, context: TaskContext) -> None:
    """Sleep 0.2 s and record ``task_id start end`` (wall clock) under ``out_dir``."""
    start = time.time()
    time.sleep(0.2)
    append_line(Path(out_dir) / "intervals", f"{context.task_id} {start!r} {time.time()!r}")


# -- crash and resume ----------------------------------------------------------------------


def ledger_step(ledger: str, context: TaskContext, pause: float = 0.15) -> str:
    """Leave ``task_id`` in the ledger, then work a little."""
    append_line(ledger, context.task_id)
    time.sleep(pause)
    return context.task_id


def wait_for_file(release: str, started: str, context: TaskContext) -> str:
    """Say it started, then wait (at most 60 s) until ``release`` exists."""
    append_line(started, context.task_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(release):
        time.sleep(0.05)
    return "released"


def needs_flag(flag: str, ledger: str, context: TaskContext) -> str:
    """Fail while ``flag`` is absent."""
    append_line(ledger, context.task_id)
    if not os.path.exists(flag):
        raise RuntimeError(f"flag file {flag} is missing")
    return "flag present"
