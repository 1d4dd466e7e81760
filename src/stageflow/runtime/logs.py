"""Per-attempt log capture: a task's print output and logging go to its log file.

Files live at ``<home>/logs/<run_id>/<task_id>/attempt-<n>.log``. In a worker
thread, ``sys.stdout``/``sys.stderr`` and the root logger are routed by a
thread-local "current log" (installed once, on first use); in a worker process
the file descriptors 1 and 2 are redirected for the attempt. Task ids are
validated path-safe (``spec.validate``), and ``log_path`` re-checks that the
result stays inside the logs folder.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from pathlib import Path
from typing import IO, Any

from stageflow.runtime.secrets import mask

__all__ = [
    "attempt_log",
    "capture_thread_output",
    "captured",
    "log_file",
    "log_path",
    "release_thread_output",
]

_local = threading.local()
_installed = False
_install_lock = threading.Lock()


def log_path(logs_dir: Path | str, run_id: str, task_id: str, attempt: int) -> Path:
    """The log file of one attempt; raise ``ValueError`` if it would leave ``logs_dir``."""
    return Path(log_file(logs_dir, run_id, task_id, attempt))


def log_file(logs_dir: Path | str, run_id: str, task_id: str, attempt: int) -> str:
    """``log_path`` as a string: joining part by part, or even building one ``Path``,
    costs more than the smallest tasks do to run."""
    for part in (run_id, task_id):
        if not part or "/" in part or "\\" in part or part.startswith(".") or "\0" in part:
            raise ValueError(f"{part!r} cannot name a folder under {logs_dir}")
    return f"{logs_dir}{os.sep}{run_id}{os.sep}{task_id}{os.sep}attempt-{attempt}.log"


def attempt_log(logs_dir: Path, run_id: str, task_id: str) -> list[Path]:
    """Every attempt's log file of a task, in attempt order."""
    folder = log_path(logs_dir, run_id, task_id, 1).parent
    if not folder.is_dir():
        return []
    return sorted(folder.glob("attempt-*.log"), key=lambda p: int(p.stem.split("-")[1]))


class _Capture:
    """The current attempt's log, opened on the first write (silent tasks cost no file)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def write(self, s: str) -> None:
        if self.file is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self.file.write(mask(s))  # the secrets this process resolved, as ***

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class _Router(io.TextIOBase):
    """A stream that writes to the current thread's log, else to the original."""

    def __init__(self, original: IO[str]) -> None:
        self._original = original

    def write(self, s: str) -> int:
        target = getattr(_local, "file", None)
        if target is not None:
            target.write(s)
            return len(s)
        return self._original.write(s)

    def flush(self) -> None:
        target = getattr(_local, "file", None)
        if target is None:
            self._original.flush()

    def isatty(self) -> bool:
        return getattr(_local, "file", None) is None and self._original.isatty()

    def fileno(self) -> int:
        return self._original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase declares it read-only
        return getattr(self._original, "encoding", "utf-8")


class _RouterHandler(logging.Handler):
    """Root-logger handler writing records of a task's thread to its log."""

    def emit(self, record: logging.LogRecord) -> None:
        target = getattr(_local, "file", None)
        if target is None:
            return
        try:
            target.write(self.format(record) + "\n")
        except Exception:  # logging must never fail a task
            self.handleError(record)


def _install() -> None:
    global _installed
    with _install_lock:
        # Re-checked on every attempt: a host (pytest, IPython, redirect_stdout) may
        # have replaced sys.stdout/sys.stderr since, which would unhook the routing.
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)
        if _installed:
            return
        handler = _RouterHandler(level=logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        _installed = True


def capture_thread_output(path: Path | str) -> Any:
    """Route this thread's output to ``path`` until ``release_thread_output``."""
    _install()
    capture = _Capture(path)
    _local.file = capture
    return capture


def captured() -> bool:
    """Whether this thread's output goes to an attempt's log right now."""
    return getattr(_local, "file", None) is not None


def release_thread_output(handle: Any) -> None:
    _local.file = None
    handle.close()
