"""Background duties: work that every scheduler loop does beside firing schedules.

A ``Duty`` is anything with a ``name`` and a ``run_pass(now)``; the schedule loop
(``runtime.schedule_loop``) calls each after its own pass, every ``poll_seconds``, in
every process that runs one (each ``stageflow worker``, ``stageflow scheduler``), so a
duty keeps its own cadence (it returns at once when its interval has not passed) and
must be safe with several processes doing it on one store at the same time. A duty's
failure is logged and the loop goes on with the next one: a duty never stops the
schedules. ``background_duties`` lists the duties a process runs; each holds the store
connection it is given (the loop's own).
"""

from __future__ import annotations

from typing import Protocol

from stageflow.runtime.settings import Settings
from stageflow.runtime.store.base import Store

__all__ = ["Duty", "background_duties"]


class Duty(Protocol):
    """One background duty (module docstring)."""

    @property
    def name(self) -> str: ...

    def run_pass(self, now: float) -> None:
        """Do what is due at ``now`` (epoch seconds); return soon."""


def background_duties(settings: Settings, store: Store) -> list[Duty]:
    """The duties a scheduler loop on ``store`` runs, in order."""
    duties: list[Duty] = []
    return duties
