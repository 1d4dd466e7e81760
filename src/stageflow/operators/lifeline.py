"""Child processes die with the stageflow process that started them, even by ``kill -9``.

Policy: a ``bash`` task's command runs in a process group of its own, so that a
timeout or a cancel kills all of it. When stageflow's process dies without
cleaning up (``kill -9``, the OOM killer), those groups would run on and overlap
with the attempts that ``stageflow resume`` starts. So each process that starts
commands keeps one *watcher*: a tiny ``/bin/sh`` loop in a session of its own,
reading process group ids from this process over a pipe (``+PGID`` when a
command starts, ``-PGID`` once it was reaped). Only this process holds the
pipe's write end (close-on-exec; ``bash`` commands are started with every other
descriptor closed), so when it dies, however it dies, the watcher reads
end-of-file and SIGKILLs every group still registered. A group is unregistered
only after its leader is reaped, before which its id cannot be reused.

A process-executor worker also asks the kernel to SIGKILL it when its parent
dies (``die_with_parent``: Linux ``PR_SET_PDEATHSIG``). A worker's parent is the
executor's fork server, whose single thread exits as soon as the runner is gone;
the worker's own watcher then kills the groups of the commands it started.

State: this process's watcher (a ``Popen``) and the pid it was started from (a
forked child starts its own), under a lock; started on first use, restarted if
it died. Where ``/bin/sh`` cannot be started, commands run unwatched (as they
would without this module) rather than fail.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading

__all__ = ["die_with_parent", "forget_group", "watch_group"]

#: The watcher: collect ``+PGID`` lines, drop ``-PGID`` ones; at end-of-file, kill the
#: groups left. POSIX sh (dash and bash alike): ``kill -9 -PGID`` is the group.
_WATCHER = """\
groups=""
while IFS= read -r line; do
  case $line in
    +*) groups="$groups ${line#+}" ;;
    -*) gone=${line#-}; kept=""
        for g in $groups; do [ "$g" = "$gone" ] || kept="$kept $g"; done
        groups=$kept ;;
  esac
done
for g in $groups; do kill -9 "-$g" 2>/dev/null; done
"""

_lock = threading.Lock()
_watcher: subprocess.Popen[bytes] | None = None
_watcher_pid = 0  # the process that started ``_watcher``


def watch_group(pgid: int) -> None:
    """Have process group ``pgid`` killed if this process dies before ``forget_group``."""
    _send(f"+{pgid}\n".encode())


def forget_group(pgid: int) -> None:
    """``pgid`` ended (its leader was reaped): it is no longer killed with this process."""
    _send(f"-{pgid}\n".encode(), start=False)


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only; a
    no-op elsewhere). Call it first thing in a child; it exits at once if the
    parent died before it could ask."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl here: nothing to ask
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _send(line: bytes, *, start: bool = True) -> None:
    global _watcher, _watcher_pid
    with _lock:
        watcher = _watcher if _watcher_pid == os.getpid() else None
        for _ in range(2):  # once more with a fresh watcher if the old one died
            if watcher is None:
                if not start:
                    return
                watcher = _start()
                if watcher is None:
                    return
                _watcher, _watcher_pid = watcher, os.getpid()
            try:
                assert watcher.stdin is not None
                watcher.stdin.write(line)  # unbuffered: one write, atomic under PIPE_BUF
                return
            except (BrokenPipeError, OSError, ValueError):
                with contextlib.suppress(OSError):
                    watcher.kill()
                    watcher.wait(1)
                watcher = _watcher = None
                if not start:
                    return


def _start() -> subprocess.Popen[bytes] | None:
    try:
        watcher = subprocess.Popen(
            ["/bin/sh", "-c", _WATCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            start_new_session=True,  # terminal signals (Ctrl-C) are not for it
            close_fds=True,
        )
    except OSError:
        return None
    atexit.register(_stop, watcher)
    return watcher


def _stop(watcher: subprocess.Popen[bytes]) -> None:
    """At a normal exit: end the watcher (it kills what is still registered) and reap it."""
    with contextlib.suppress(OSError, ValueError):
        if watcher.stdin is not None:
            watcher.stdin.close()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        watcher.wait(_STOP_SECONDS)


_STOP_SECONDS = 1.0
