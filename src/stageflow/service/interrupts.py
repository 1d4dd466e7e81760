"""Ctrl-C on a run shown in the terminal.

Policy. The first SIGINT asks the run to cancel (``runtime.interrupt``): its
running attempts are stopped, every unfinished task is cancelled, the run is
committed ``cancelled`` and the CLI exits 130 with a line saying so. A second
SIGINT exits at once (130), committing nothing more: the run stays as the store
last saw it, owned by a process that no longer exists, so ``stageflow resume``
finishes it; child processes die with this one (``operators.lifeline``).
Only the main thread receives signals, so the handler is installed only there.

State: the interrupt request, how many SIGINTs arrived, the previous handler.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from stageflow.runtime.interrupt import Interrupt

__all__ = ["CtrlC"]


class CtrlC:
    """Install the two-step SIGINT handler for the duration of a ``with`` block."""

    def __init__(self, tell: Callable[[int, str], None]) -> None:
        """``tell(count, line)``: the view learns of the ``count``-th Ctrl-C and shows
        ``line`` (it must not block: it runs in the signal handler)."""
        self.interrupt = Interrupt()
        self.count = 0
        self.run_id: str | None = None
        self._tell = tell
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        run = f"run {self.run_id}" if self.run_id else "the run"
        if self.count == 1:
            self.interrupt.request("cancelled: interrupted (Ctrl-C)")
            self._tell(
                1,
                f"Ctrl-C: cancelling {run} (running attempts are stopped); "
                "press Ctrl-C again to exit at once and leave it resumable",
            )
            return
        resume = f"`stageflow resume {self.run_id}`" if self.run_id else "`stageflow resume RUN_ID`"
        self._tell(
            self.count, f"Ctrl-C again: exiting now; {run} stays resumable: {resume} finishes it"
        )
        _show_cursor()
        os._exit(130)


def _show_cursor() -> None:
    """The live view hides the cursor; an immediate exit must not leave it hidden."""
    try:
        if os.isatty(2):
            os.write(2, b"\x1b[?25h")
    except OSError:
        pass
