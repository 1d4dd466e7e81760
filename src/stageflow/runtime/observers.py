"""Run and task events, delivered to subscribers off the runs' locks: ``Observers``.

Policy. A run publishes what happens to it — it started (which run, of what), a
task changed state (the engine's ``Transition``), it finished (its
``RunResult``) — while it holds its step lock. Publishing only appends the event
to ONE bounded queue; a dispatcher thread (started with the first subscriber)
hands each event to the subscribers, in the order published. So a slow
subscriber never slows a run: while the queue is full, task events are dropped
(counted in ``dropped``, one warning per burst) rather than block the step; the
events that end something (``finished``) wait for room instead, so no
subscriber misses a run's end. Task events are built and queued only while a
subscriber wants them (the reproducibility record wants a run's end only): with
none, the run loop pays one truthiness test per transition.

Subscribers: the CLI's live view (``service.progress``), a run's listener and
``on_start`` callbacks (``Runner``), the reproducibility record, lineage and
MLflow tracking (``runtime.lineage``: on ``finished``); the metrics, the API's
event stream and the UI will be. ``drain(run_id)`` waits until every event the run
published so far was handled — a run's entry point calls it before returning, so
its record is written and its view complete when the caller gets the result.

State: the subscribers (a tuple replaced on change, read without a lock), the
queue, the dispatcher thread, the count of events handled per run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stageflow.engine.scheduler import Transition
    from stageflow.runtime.result import RunResult

__all__ = ["Observer", "Observers", "RunEvent"]

logger = logging.getLogger(__name__)

QUEUE_SIZE = 10_000  # events waiting for the subscribers, at most


@dataclass(frozen=True, slots=True)
class RunEvent:
    """``kind``: ``started`` (``info``: ``runner.RunStarted``), ``task`` (``transition``),
    ``finished`` (``result``, and ``refs``: the stored outputs by task)."""

    kind: str
    run_id: str
    info: Any = None
    transition: Transition | None = None
    result: RunResult | None = None
    refs: Any = None


Observer = Callable[[RunEvent], None]


class Observers:
    """Subscribers to run events and the queue that feeds them (module docstring)."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self._subs: tuple[tuple[Observer, str | None, bool], ...] = ()
        self._task_subs = 0  # subscribers that want task events
        self._queue: queue.Queue[RunEvent | None] = queue.Queue(size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._published: dict[str, int] = {}  # run id -> events queued
        self._handled: dict[str, int] = {}  # run id -> events handled
        self._progress = threading.Condition()
        self.dropped = 0
        self._warned = False

    @property
    def subscriptions(self) -> int:
        """How many subscribers there are now."""
        return len(self._subs)

    def __bool__(self) -> bool:
        """Whether anyone wants task events (the run loop asks before it builds one)."""
        return self._task_subs > 0

    def subscribe(
        self, observer: Observer, *, run_id: str | None = None, tasks: bool = True
    ) -> Callable[[], None]:
        """Call ``observer`` with every event (of run ``run_id`` only, when given; without
        ``tasks``, only runs' ``started``/``finished``: task events are then not even
        queued unless another subscriber wants them). Returns the unsubscribe function."""
        entry = (observer, run_id, tasks)
        with self._lock:
            self._subs = (*self._subs, entry)
            self._task_subs += tasks
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._dispatch, name="stageflow-observers", daemon=True
                )
                self._thread.start()

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._subs:
                    self._subs = tuple(s for s in self._subs if s is not entry)
                    self._task_subs -= tasks

        return unsubscribe

    def publish(self, event: RunEvent) -> None:
        """Queue ``event`` for the subscribers; never blocks a run for a task event."""
        if not self._subs or (event.kind == "task" and not self._task_subs):
            return
        run_id = event.run_id
        try:
            if event.kind == "task":
                self._queue.put_nowait(event)
            else:  # a run's start or end: no subscriber may miss it
                self._queue.put(event, timeout=30)
        except queue.Full:
            self.dropped += 1
            if not self._warned:
                self._warned = True
                logger.warning(
                    "observers are behind by %d events: task events are dropped until "
                    "they catch up (a slow subscriber never slows a run)",
                    self._queue.maxsize,
                )
            return
        self._published[run_id] = self._published.get(run_id, 0) + 1

    def drain(self, run_id: str, timeout: float = 30.0) -> bool:
        """Wait until every event run ``run_id`` published so far was handled; false when
        ``timeout`` passed first. Forgets the run's counts."""
        target = self._published.get(run_id, 0)
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._handled.get(run_id, 0) < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._progress.wait(left)
            self._handled.pop(run_id, None)
        self._published.pop(run_id, None)
        return True

    def _dispatch(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            if self._warned and self._queue.qsize() < self._queue.maxsize // 2:
                self._warned = False  # caught up: warn again at the next burst
            task = event.kind == "task"
            for observer, only, tasks in self._subs:
                if (only is not None and only != event.run_id) or (task and not tasks):
                    continue
                try:
                    observer(event)
                except Exception:  # a subscriber's bug must not stop the others
                    logger.warning("an observer failed on a %s event", event.kind, exc_info=True)
            with self._progress:
                self._handled[event.run_id] = self._handled.get(event.run_id, 0) + 1
                self._progress.notify_all()

    def close(self) -> None:
        """Stop the dispatcher once it has handled what was queued."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(5)
