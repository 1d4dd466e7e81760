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

import logging
from collections.abc import Sequence
from typing import Protocol

from stageflow.errors import StoreError
from stageflow.runtime.settings import Settings
from stageflow.runtime.store.base import Store

__all__ = ["Duty", "background_duties", "run_duties"]

logger = logging.getLogger(__name__)


class Duty(Protocol):
    """One background duty (module docstring)."""

    @property
    def name(self) -> str: ...

    def run_pass(self, now: float) -> None:
        """Do what is due at ``now`` (epoch seconds); return soon."""


def background_duties(settings: Settings, store: Store) -> list[Duty]:
    """The duties a scheduler loop on ``store`` runs, in order."""
    duties: list[Duty] = []
    # Notification deliveries left pending (a process exited or died) or due again.
    from stageflow.runtime.notify import NotificationDuty

    duties.append(NotificationDuty(settings, store))
    from stageflow.runtime.monitor import MonitorDuty  # the host's and store's gauges

    duties.append(MonitorDuty.from_settings(settings, store))
    # Failed runs queued again; scheduled runs past their execution timeout cancelled.
    from stageflow.runtime.run_retries import RetryDuty, TimeoutDuty

    duties.extend([RetryDuty(store), TimeoutDuty(settings, store)])
    from stageflow.runtime.alerting import AlertDuty  # deadlines and alert rules

    duties.append(AlertDuty(settings, store))
    return duties


def run_duties(duties: Sequence[Duty], now: float) -> None:
    """Each duty's pass at ``now``; one that fails (a bug, or a store that does not
    answer) is logged and the others go on."""
    for duty in duties:
        try:
            duty.run_pass(now)
        except StoreError as exc:
            logger.warning("%s: could not read or write the store: %s", duty.name, exc)
        except Exception:  # a bug: said in full, and the next pass goes on
            logger.exception("%s: a pass failed; trying again next pass", duty.name)
