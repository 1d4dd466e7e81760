"""When a waiting sensor is checked next, and when it has waited too long.

Policy. A sensor task (``operator: sensor``) whose trigger rule is met moves
``pending -> sensing`` and is checked ("poked") at once, then every
``poke_interval`` seconds until its condition holds or ``timeout`` seconds have
passed since it started waiting (a resumed run keeps when its waiting sensors
began: the time before the resume counts). Pokes are not attempts: they take no
worker slot, no resources and no pool slot, so a thousand waiting sensors leave
the workers to the other tasks (Airflow's reschedule mode and deferrable operators).
The last poke is due at the deadline itself, so a condition that comes true just
before it is still seen; a poke that finds it unmet at or past the deadline ends
the wait: ``failed``, or ``skipped`` with ``soft_fail`` (as Airflow's sensors).
A poke in flight is not handed out again until its result is recorded.

State: a heap of (due time, task index) for the sensors waiting between pokes,
each sensor's deadline, and the set of those whose poke is in flight. Nothing
here reads a clock or does I/O: the scheduler hands in ``now``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

__all__ = ["SensorPolicy", "SensorWaits", "span"]


@dataclass(frozen=True, slots=True)
class SensorPolicy:
    """How one sensor waits: seconds between pokes, seconds in all, and whether a
    timeout skips it (``soft_fail``) rather than failing it. ``waits_for`` says what
    it waits for, in words (``file data/*.csv``), for the state's message."""

    poke_interval: float
    timeout: float
    soft_fail: bool = False
    waits_for: str = ""


class SensorWaits:
    """The sensors of one run that are waiting: their next poke and deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []  # (due_at, index): between pokes
        self._deadline: dict[int, float] = {}  # index -> when the wait ends
        self._policy: dict[int, SensorPolicy] = {}
        self._in_flight: set[int] = set()

    def __len__(self) -> int:
        """How many sensors wait (between pokes or poking)."""
        return len(self._deadline)

    def start(
        self, i: int, policy: SensorPolicy, now: float, *, since: float | None = None
    ) -> float:
        """Sensor ``i`` starts waiting: its first poke is due now. Returns its deadline:
        ``timeout`` after ``since`` (when it began to wait before a resume), else after
        now."""
        deadline = min(since, now) + policy.timeout if since is not None else now + policy.timeout
        self._deadline[i] = deadline
        self._policy[i] = policy
        heapq.heappush(self._heap, (now, i))
        return deadline

    def due(self, now: float) -> list[int]:
        """The sensors whose poke is due at ``now``: each is in flight until ``poked``."""
        out: list[int] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, i = heapq.heappop(heap)
            if i in self._deadline and i not in self._in_flight:
                self._in_flight.add(i)
                out.append(i)
        return out

    def next_poke(self) -> float | None:
        """When the earliest poke is due (``None``: none waits between pokes)."""
        heap = self._heap
        while heap and heap[0][1] not in self._deadline:
            heapq.heappop(heap)  # stale: ended (cancelled) meanwhile
        return heap[0][0] if heap else None

    def poked(self, i: int, met: bool, now: float) -> bool | None:
        """Record sensor ``i``'s poke. ``True``: met (it stops waiting); ``False``:
        unmet at or past its deadline (timed out: it stops waiting); ``None``: unmet,
        the next poke is scheduled (``poke_interval`` on, but never past the deadline).
        A sensor that is not waiting (cancelled meanwhile) gives ``None`` and
        changes nothing; the caller checks its state first."""
        deadline = self._deadline.get(i)
        if deadline is None:
            return None
        self._in_flight.discard(i)
        if met:
            self.drop(i)
            return True
        if now >= deadline:
            self.drop(i)
            return False
        heapq.heappush(self._heap, (min(now + self._policy[i].poke_interval, deadline), i))
        return None

    def policy(self, i: int) -> SensorPolicy:
        return self._policy[i]

    def drop(self, i: int) -> None:
        """Sensor ``i`` stops waiting (met, timed out or cancelled); its heap entry
        goes stale."""
        self._deadline.pop(i, None)
        self._in_flight.discard(i)


def span(seconds: float) -> str:
    """``seconds`` as a person writes it: ``7d``, ``6h``, ``30m``, ``90s``, ``0.5s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
