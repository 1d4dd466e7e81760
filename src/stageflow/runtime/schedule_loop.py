"""The schedule loop: fires the store's schedules, each tick exactly once.

Policy. Every ``poll_seconds``, or at the soonest next fire time when it comes first
(``Store.next_fire_after``), the loop reads the enabled schedules whose next fire
time has come (``Store.due_schedules``: an index read) and, for each, the ticks due
since the one it last fired (``engine.schedules.due``: every missed
one, oldest first, with ``catchup``; else only the latest). Each tick queues a run
of the schedule's pipeline (its latest saved version, with the schedule's
parameters and priority; ``triggered_by`` ``schedule:NAME``) for the workers, and
records the tick in the same transaction (``Store.create_run(tick=...)``; the ticks of
schedules without ``max_active_runs`` are written together, a thousand to a transaction,
each version and parameters checked once a pass: ``Store.create_tick_runs``). So any
number of loops, in ``serve``, in workers, in ``stageflow scheduler`` processes, on
one store fire each tick once: the others meet the tick's key (``TickTaken``) and
move on. ``last_tick`` then moves forward (it never moves back), and ``next_at`` with
it. A schedule with ``max_active_runs`` unfinished runs fires nothing until one ends
(its due ticks wait: with ``catchup`` they all come, else the latest). A tick that
cannot make a run (the pipeline was deleted, or no longer validates) is skipped with
one log line, so the loop never spins on it. An event schedule (kind ``event``) has no
fire times: its ``next_at`` is ``None``, so ``Store.due_schedules`` never hands it to the
loop; ``operations.fire_event`` queues its runs when its event comes.

After schedules (kind ``after``: "when a run of pipeline P ends in one of these states")
have no fire times either, but the loop fires them: they are stored with ``next_at``
``0.0``, so ``Store.due_schedules`` hands them to every pass. For each, the loop reads
the runs of P that ended in one of its states after its ``last_tick`` (never fired: after
its creation; ``Store.ended_runs_after``, oldest end first, ``TICKS_PER_PASS`` at most)
and fires one tick per upstream run: its logical time is the upstream run's ``ended_at``
(the data interval ``[ended_at, ended_at)``), so the ``schedule_runs`` key makes each
upstream run fire once however many loops see it; ``last_tick`` then moves to that
``ended_at`` (``next_at`` stays ``0.0``). ``max_active_runs`` holds the upstream runs
back as it holds due ticks (they fire once runs end), and so does a pause: a resumed
after schedule fires for the upstream runs that ended while it was paused. Two upstream
runs that end at the very same float time are one tick: the second is not fired (the
key holds the first, and ``last_tick`` is past it). ``ended_at`` is a float of seconds
with the clock's microseconds, so this is accepted rather than worked around. An
upstream run whose end is committed after a later-ending run's was fired on (its store
was away a while) is still fired: each pass also looks back ``AFTER_LOOKBACK_SECONDS``
before ``last_tick`` for ends that made no tick yet.

Object schedules (kind ``object``: "each new object under an fsspec URL") are stored
with ``next_at`` their next poll; a pass that finds one due moves ``last_tick`` to now
and ``next_at`` a poll on first (a loop that loses that race leaves the listing to the
winner), lists the URL (``runtime.schedule_objects``) and fires one run per object not
seen before, keyed by (schedule, object) in the run's creating transaction, so any
number of loops fire each object once (``TickTaken`` for the others).

State: none between passes but the store's; the loop is driven by ``run_pass(now)``
(tests call it with a fake clock) or by ``serve_forever``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from stageflow.engine.schedules import ScheduleSpec, due, next_after
from stageflow.errors import InvalidSpec, StoreError, StoreUnreachable, TickTaken, UsageError
from stageflow.runtime.duties import Duty, run_duties
from stageflow.runtime.runner import QueueTemplate, new_run_id, queue_saved, queue_template
from stageflow.runtime.settings import Settings
from stageflow.runtime.store.base import PipelineRecord, ScheduleRecord, Store, TickRun

__all__ = ["Fired", "ScheduleLoop", "first_fire", "handled_until", "schedule_spec"]

logger = logging.getLogger(__name__)

#: The longest ``serve_forever`` waits before it looks whether it was asked to stop.
_SLICE_SECONDS = 0.1
#: How far back an ``after`` schedule looks for upstream runs whose end was committed
#: late (after a later-ending run had fired it already).
AFTER_LOOKBACK_SECONDS = 300.0
#: The most ticks one schedule fires in one pass (a long catch-up goes on next pass).
TICKS_PER_PASS = 100
#: The most ticks written in one transaction (``ScheduleLoop._fire_together``).
BATCH_TICKS = 1000
#: How many times a run id drawn twice is drawn again before the pass gives up.
_RUN_ID_TRIES = 5


@dataclass(frozen=True, slots=True)
class Fired:
    """One tick fired by this loop: the schedule, its logical time, the run it made."""

    schedule: str
    at: float
    run_id: str


@dataclass
class PassReport:
    """What one pass did: the ticks it fired, those another loop had fired, those it
    skipped (and why)."""

    fired: list[Fired] = field(default_factory=list)
    taken: int = 0  # ticks another loop fired first
    skipped: list[tuple[str, float, str]] = field(default_factory=list)  # (schedule, at, why)


def schedule_spec(record: ScheduleRecord) -> ScheduleSpec:
    """The stored schedule's timing (``ScheduleRecord.spec``: ``ScheduleSpec``'s fields;
    JSON keeps ``after_states`` as a list, the spec a tuple)."""
    fields = dict(record.spec)
    if "after_states" in fields:
        fields["after_states"] = tuple(fields["after_states"])
    return ScheduleSpec(**fields)


def handled_until(record: ScheduleRecord, spec: ScheduleSpec) -> float | None:
    """The time the schedule's ticks are handled until, for ``engine.schedules.due``'s
    ``last``: its last tick; one that never fired, ``None`` when it has a ``start`` (it
    fires from there: every tick since, with catch-up) else its creation (it does not
    fire for the past)."""
    if record.last_tick is None and spec.start is None:
        return record.created_at
    return record.last_tick


def first_fire(spec: ScheduleSpec, last_tick: float | None, created_at: float) -> float | None:
    """When a schedule fires next, for ``Store.put_schedule``'s ``next_at``: after the
    tick it last fired; one that never fired, from its ``start`` (inclusive) or else
    after its creation (it does not fire for the past). An ``after`` schedule: ``0.0``,
    so that every pass looks for upstream runs that ended (module docstring)."""
    if spec.kind == "after":
        return 0.0
    if spec.kind == "object":  # polled: at once, then every poll
        return created_at if last_tick is None else last_tick + _poll_of(spec)
    if last_tick is not None:
        return next_after(spec, last_tick)
    if spec.start is not None:
        return next_after(spec, math.nextafter(spec.start, -math.inf))
    return next_after(spec, created_at)


class ScheduleLoop:
    """Fires due schedules; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        poll_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        duties: Sequence[Duty] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.duties = list(duties)
        self._stop = threading.Event()
        self._asked_to_stop = False

    def run_pass(self, now: float | None = None) -> PassReport:
        """Fire every tick due at ``now`` (default: the clock's); what it did."""
        now = self.clock() if now is None else now
        report = PassReport()
        together: list[ScheduleRecord] = []
        for record in self.store.due_schedules(now):
            if record.spec.get("kind") == "after":
                self._fire_after(record, report)
            elif record.spec.get("kind") == "object":
                self._fire_objects(record, now, report)
            elif record.max_active_runs is not None:
                self._fire_due(record, now, report)  # counts its runs before each tick
            else:
                together.append(record)
        if together:
            self._fire_together(together, now, report)
        run_duties(self.duties, now)
        return report

    def _fire_together(self, records: list[ScheduleRecord], now: float, report: PassReport) -> None:
        """The due ticks of schedules without ``max_active_runs``, fired in batches of
        ``BATCH_TICKS`` (``Store.create_tick_runs``: one transaction each), each saved
        version and parameters checked once (``runner.queue_template``); the same
        outcomes as ``_fire_tick`` one by one, at a fraction of the cost (10,000
        schedules due in the same minute: bench/schedules_scale.py)."""
        latest: dict[str, PipelineRecord | str] = {}  # by pipeline: its version, or why not
        templates: dict[tuple[str, str, str, int], QueueTemplate | str] = {}
        items: list[TickRun] = []
        for record in records:
            spec = schedule_spec(record)
            for tick in due(spec, handled_until(record, spec), now, limit=TICKS_PER_PASS):
                next_at = next_after(spec, tick.at)
                template = self._template(record, latest, templates)
                if isinstance(template, str):  # no live version, or it no longer checks
                    self._skip(record, tick.at, template, report)
                    self.store.advance_schedule(record.name, tick.at, next_at)
                    continue
                created = self.clock()
                run = template.new_run(created, triggered_by=f"schedule:{record.name}")
                at = (record.name, tick.at, tick.interval_start)
                items.append(TickRun(run, template.task_ids, template.pipeline, at, next_at))
        fired, taken = len(report.fired), report.taken
        for start in range(0, len(items), BATCH_TICKS):
            self._create_together(items[start : start + BATCH_TICKS], report)
        if items:
            logger.info(
                "schedules: %d ticks fired, %d fired by another loop first",
                len(report.fired) - fired,
                report.taken - taken,
            )

    def _template(
        self,
        record: ScheduleRecord,
        latest: dict[str, PipelineRecord | str],
        templates: dict[tuple[str, str, str, int], QueueTemplate | str],
    ) -> QueueTemplate | str:
        """The checked template of ``record``'s runs, or why it fires none (said once per
        pass and pipeline version and parameters)."""
        if record.pipeline not in latest:
            try:
                latest[record.pipeline] = self.store.latest_pipeline(record.pipeline)
            except StoreUnreachable:
                raise  # the store failed: try again next pass
            except StoreError as exc:  # no live version of it (deleted)
                latest[record.pipeline] = str(exc)
        pipeline = latest[record.pipeline]
        if isinstance(pipeline, str):
            return pipeline
        key = (
            pipeline.name,
            pipeline.version,
            json.dumps(record.params, sort_keys=True, default=str),
            record.priority,
        )
        if key not in templates:
            try:
                templates[key] = queue_template(
                    self.settings, self.store, pipeline, record.params, priority=record.priority
                )
            except (InvalidSpec, UsageError) as exc:
                templates[key] = str(exc)
        return templates[key]

    def _create_together(self, items: list[TickRun], report: PassReport) -> None:
        """Write ``items`` (``Store.create_tick_runs``); a run id drawn twice (24 random
        bits a second: likely among thousands) is drawn again and written next."""
        for _try in range(_RUN_ID_TRIES):
            again: list[TickRun] = []
            for item, outcome in zip(items, self.store.create_tick_runs(items), strict=True):
                name, at = item.tick[0], item.tick[1]
                if outcome == "created":
                    report.fired.append(Fired(name, at, item.run.run_id))
                    logger.debug(
                        "schedule %s fired its tick at %s: run %s", name, at, item.run.run_id
                    )
                elif outcome == "taken":
                    report.taken += 1
                else:
                    run = replace(item.run, run_id=new_run_id(self.clock()))
                    again.append(replace(item, run=run))
            if not again:
                return
            items = again
        raise StoreError(f"could not draw unused run ids for {len(items)} ticks; next pass")

    def serve_forever(self) -> None:
        """Run passes every ``poll_seconds``, and at each schedule's next fire time when
        it comes sooner (a tick fires on time, not up to a poll late), until ``stop``; a
        store that does not answer is tried again next pass (one log line each)."""
        while not self._stopping():
            wait = self.poll_seconds
            try:
                self.run_pass()
                soonest = self.store.next_fire_after(self.clock())
                if soonest is not None:
                    wait = min(wait, max(0.0, soonest - self.clock()))
            except StoreError as exc:
                logger.warning("schedules: could not read or write the store: %s", exc)
            except Exception:  # a bug: said in full, and the schedules go on next pass
                logger.exception("schedules: a pass failed; trying again next pass")
            # Waits in short slices: ``stop_soon`` (a signal handler's) only sets a flag.
            deadline = time.monotonic() + wait
            while not self._stopping() and (left := deadline - time.monotonic()) > 0:
                self._stop.wait(min(left, _SLICE_SECONDS))

    def stop(self) -> None:
        """End ``serve_forever`` (from another thread)."""
        self._stop.set()

    def stop_soon(self) -> None:
        """End ``serve_forever`` within a tenth of a second; safe in a signal handler,
        where ``stop`` is not (``Event.set`` takes the lock that the interrupted
        ``Event.wait`` of the same thread may hold: a deadlock)."""
        self._asked_to_stop = True

    def _stopping(self) -> bool:
        return self._asked_to_stop or self._stop.is_set()

    def _fire_due(self, record: ScheduleRecord, now: float, report: PassReport) -> None:
        spec = schedule_spec(record)
        for tick in due(spec, handled_until(record, spec), now, limit=TICKS_PER_PASS):
            next_at = next_after(spec, tick.at)
            if not self._fire_tick(record, tick.at, tick.interval_start, next_at, report):
                return  # the due ticks wait for one of its runs to end

    def _fire_after(self, record: ScheduleRecord, report: PassReport) -> None:
        """An ``after`` schedule: one tick per upstream run that ended in one of its
        states since its last tick (module docstring)."""
        spec = schedule_spec(record)
        assert spec.after is not None
        since = record.created_at if record.last_tick is None else record.last_tick
        if record.last_tick is not None:
            # An upstream run whose end was committed after a later-ending one had fired
            # the schedule: ended before ``last_tick``, fired not yet. Looked for over the
            # last few minutes (a commit is that late only if its store was away).
            floor = max(record.created_at, since - AFTER_LOOKBACK_SECONDS)
            late = self.store.ended_runs_after(spec.after, spec.after_states, floor, 1000)
            for upstream, at in late:
                if at > since:
                    break
                if self.store.tick_run(record.name, at) is None:
                    logger.info(
                        "schedule %s: run %s of %s ended late", record.name, upstream, spec.after
                    )
                    if not self._fire_tick(record, at, at, 0.0, report):
                        return
        ended = self.store.ended_runs_after(spec.after, spec.after_states, since, TICKS_PER_PASS)
        for upstream, at in ended:
            logger.debug("schedule %s: run %s of %s ended", record.name, upstream, spec.after)
            if not self._fire_tick(record, at, at, 0.0, report):
                return  # the upstream runs wait for one of its runs to end

    def _fire_tick(
        self,
        record: ScheduleRecord,
        at: float,
        interval_start: float,
        next_at: float | None,
        report: PassReport,
    ) -> bool:
        """Fire the schedule's tick at ``at`` (a run of its pipeline, unless another loop
        fired it or it is skipped) and move its ``last_tick`` to ``at``; False when it
        has ``max_active_runs`` unfinished runs (nothing done: the tick waits)."""
        if (
            record.max_active_runs is not None
            and self.store.active_schedule_runs(record.name) >= record.max_active_runs
        ):
            return False
        try:
            pipeline = self.store.latest_pipeline(record.pipeline)
        except StoreUnreachable:
            raise  # the store failed: try again next pass
        except StoreError as exc:  # no live version of it (deleted)
            self._skip(record, at, str(exc), report)
            self.store.advance_schedule(record.name, at, next_at)
            return True
        try:
            run = queue_saved(
                self.settings,
                self.store,
                pipeline,
                record.params,
                priority=record.priority,
                triggered_by=f"schedule:{record.name}",
                tick=(record.name, at, interval_start),
            )
        except TickTaken:
            report.taken += 1
        except (InvalidSpec, UsageError) as exc:  # it no longer validates: say so, go on
            self._skip(record, at, str(exc), report)
        else:
            report.fired.append(Fired(record.name, at, run.run_id))
            logger.info("schedule %s fired its tick at %s: run %s", record.name, at, run.run_id)
        self.store.advance_schedule(record.name, at, next_at)
        return True

    def _fire_objects(self, record: ScheduleRecord, now: float, report: PassReport) -> None:
        """An object schedule: one run per object under its URL not seen before (module
        docstring); a listing that fails is logged and tried at the next poll."""
        from stageflow.runtime.schedule_objects import list_objects

        spec = schedule_spec(record)
        assert spec.object_url is not None
        if not self.store.advance_schedule(record.name, now, now + _poll_of(spec)):
            return  # another loop polls it now
        try:
            objects = list_objects(spec.object_url)
        except Exception as exc:  # a filesystem's own errors: any kind
            logger.warning("schedule %s: could not list %s: %s", record.name, spec.object_url, exc)
            return
        seen = self.store.seen_objects(record.name)
        fresh = [(url, key) for url, key in objects if key not in seen]
        if not fresh:
            return
        try:
            pipeline = self.store.latest_pipeline(record.pipeline)
        except StoreUnreachable:
            raise
        except StoreError as exc:  # no live version of it (deleted)
            self._skip(record, now, str(exc), report)
            return
        for url, key in fresh:
            try:
                run = queue_saved(
                    self.settings,
                    self.store,
                    pipeline,
                    record.params,
                    priority=record.priority,
                    triggered_by=f"schedule:{record.name}",
                    schedule_object=(record.name, key),
                )
            except TickTaken:
                report.taken += 1
            except (InvalidSpec, UsageError) as exc:
                self._skip(record, now, str(exc), report)
                return
            else:
                report.fired.append(Fired(record.name, now, run.run_id))
                logger.info("schedule %s: object %s fired run %s", record.name, url, run.run_id)

    def _skip(self, record: ScheduleRecord, at: float, why: str, report: PassReport) -> None:
        report.skipped.append((record.name, at, why))
        logger.error("schedule %s: skipped its tick at %s: %s", record.name, at, why)


def _poll_of(spec: ScheduleSpec) -> float:
    """How often an object schedule lists its URL (seconds)."""
    from stageflow.engine.schedules import DEFAULT_POLL_SECONDS

    return spec.poll_seconds if spec.poll_seconds is not None else DEFAULT_POLL_SECONDS
