"""The worker processes of ``stageflow serve``: started, watched, restarted, stopped.

Policy. ``serve`` runs the API in its own process and the pipelines in ``stageflow
worker`` child processes (``python -m stageflow worker``): the API process never
imports a user's module, and a task that crashes or exhausts memory takes down a
worker, not the API. A worker that exits is started again after a back-off that
doubles from 1 s up to 30 s (reset once a worker has lived a minute); its runs'
leases expire and a worker (it, or another) takes them over, so nothing is lost.
``stop`` sends SIGTERM (each worker drains: no new claims, its runs get their grace
period and the rest go back to the queue), waits, then kills what is left.

State: the children (process, when started, restarts), the watcher thread.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Supervisor"]

logger = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = FIRST_BACKOFF_S
    due_at: float = 0.0  # when to start it again (after it exited)


@dataclass
class Supervisor:
    """``count`` workers, each ``python -m stageflow worker`` with ``worker_args``."""

    count: int
    worker_args: list[str] = field(default_factory=list)
    say: Callable[[str], None] = lambda line: None
    poll_s: float = 0.5
    _children: list[_Child] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        with self._lock:
            self._children = [_Child(i) for i in range(self.count)]
            for child in self._children:
                self._spawn(child)
        self._thread = threading.Thread(
            target=self._watch, name="stageflow-supervisor", daemon=True
        )
        self._thread.start()

    def alive(self) -> tuple[int, int]:
        """(workers running now, workers wanted)."""
        with self._lock:
            running = sum(
                1 for c in self._children if c.process is not None and c.process.poll() is None
            )
        return running, self.count

    def pids(self) -> list[int]:
        with self._lock:
            return [c.process.pid for c in self._children if c.process is not None]

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM every worker (they drain), wait up to ``grace_s`` plus a margin,
        then SIGKILL what is left."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            procs = [c.process for c in self._children if c.process is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s + 10.0
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _spawn(self, child: _Child) -> None:
        command = [sys.executable, "-m", "stageflow", "worker", *self.worker_args]
        child.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            env=os.environ.copy(),
            preexec_fn=_drain_when_orphaned if sys.platform == "linux" else None,
        )
        child.started_at = time.monotonic()
        self.say(f"worker {child.index} started (pid {child.process.pid})")

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_s):
            now = time.monotonic()
            with self._lock:
                for child in self._children:
                    self._tend(child, now)

    def _tend(self, child: _Child, now: float) -> None:
        proc = child.process
        if proc is not None:
            code = proc.poll()
            if code is None:
                if now - child.started_at >= HEALTHY_AFTER_S:
                    child.backoff = FIRST_BACKOFF_S
                return
            child.process = None
            child.due_at = now + child.backoff
            self.say(
                f"worker {child.index} (pid {proc.pid}) exited with status {code}; "
                f"starting it again in {child.backoff:g}s"
            )
            child.backoff = min(MAX_BACKOFF_S, child.backoff * 2)
            return
        if now >= child.due_at and not self._stopping.is_set():
            child.restarts += 1
            self._spawn(child)


def _drain_when_orphaned() -> None:  # pragma: no cover (runs in the child, before exec)
    """Linux: the worker gets SIGTERM (it drains) if ``serve`` dies, even by SIGKILL,
    instead of living on as an orphan that a restarted ``serve`` would double. (The
    signal comes when the thread that started it ends: the main thread, or the
    watcher, which ends only in ``stop``, which stops the workers anyway.)"""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
