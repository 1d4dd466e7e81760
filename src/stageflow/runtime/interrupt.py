"""A request to cancel this process's runs, safe to make from a signal handler.

Policy. The CLI's SIGINT handler must not touch a run's state itself: the
signal arrives on the main thread between any two bytecodes, possibly while
that thread holds the run's step lock or is inside a store transaction. So
``request`` only sets a flag and wakes the subscribed runs from a fresh
thread (waking takes locks the interrupted thread may hold); each run's next
step sees the flag and cancels the run through the engine, as a cancel from
another process would, so the run ends ``cancelled`` and is committed whole.

State: whether a cancel was requested and why, and the runs' wake-up callbacks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Interrupt"]


class Interrupt:
    """Cancel requests for the runs of one process (see the module docstring)."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = "cancelled: interrupted (Ctrl-C)"
        self._wakes: list[Callable[[], None]] = []

    def request(self, reason: str | None = None) -> None:
        """Ask every subscribed run to cancel; callable from a signal handler."""
        if reason is not None:
            self.reason = reason
        self.requested = True
        threading.Thread(target=self._wake_all, name="stageflow-interrupt", daemon=True).start()

    def subscribe(self, wake: Callable[[], None]) -> None:
        self._wakes.append(wake)

    def unsubscribe(self, wake: Callable[[], None]) -> None:
        if wake in self._wakes:
            self._wakes.remove(wake)

    def _wake_all(self) -> None:
        for wake in list(self._wakes):
            wake()
