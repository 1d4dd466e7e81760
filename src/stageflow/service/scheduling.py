"""The Python face of schedules: ``PipelineScheduler``, ``ScheduleConfig``, ``ScheduleType``
and ``RetryStrategy`` (seed 003's scheduler API over the store's schedules).

Policy. ``PipelineScheduler`` is an interface like the CLI: every method is one call of
``operations`` (``add_schedule``, ``show_schedule``, ``set_schedule_enabled``,
``remove_schedule``, ``trigger_schedule``, ``list_runs``) on a store opened for that
call, and renders what it returns as plain dicts (the API's JSON). It keeps no schedule
of its own: the schedules live in the store, so ``stageflow schedules list`` shows what
a program added, and any ``stageflow worker``, ``scheduler`` or ``serve`` on the same
store fires them too (each tick fires once however many loops run). Mistakes raise the
operations' exceptions with the CLI's words: ``UsageError`` (a bad cron, interval,
time zone, type), ``ScheduleNotFound`` (an unknown schedule or unsaved pipeline),
``InvalidSpec`` (a parameter the pipeline does not declare).

``start(workers=N)`` makes scheduled pipelines run in this process: a
``runtime.worker.Worker`` on a thread of its own, which fires the schedules (the schedule
loop and its background duties, as ``stageflow worker`` does) and runs up to ``N`` runs
at once (default: ``max_concurrent_executions``). ``start(workers=0)`` only fires them,
as ``stageflow scheduler`` does: the runs wait in the queue for a worker elsewhere.
``stop()`` drains as SIGTERM drains a worker (nothing more is claimed; the runs in
progress get ``grace_seconds``, then go back to the queue), then stops the loop and
joins the thread; it is idempotent, and leaving ``with`` calls it.

Retries and time-outs of the runs a schedule fires (``retry_strategy``, ``max_retries``,
``retry_delay``, ``execution_timeout``) are the schedule's run-level policy
(``engine.run_retry``: ``--retry-strategy``, ``--run-retries``, ``--retry-delay``,
``--execution-timeout`` of ``stageflow schedules add``); left ``None``, the pipeline's
``run_retries`` and no time-out apply.

State: the settings (which store), and while started the worker or schedule loop and
its thread (guarded by a lock).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from stageflow.errors import UsageError

if TYPE_CHECKING:
    from stageflow.operations.runs import RunSummary
    from stageflow.operations.stores import Store
    from stageflow.runtime.orchestrator import Orchestrator
    from stageflow.runtime.settings import Settings
    from stageflow.runtime.worker import Worker
    from stageflow.spec.models import Pipeline

__all__ = ["PipelineScheduler", "RetryStrategy", "ScheduleConfig", "ScheduleType"]

logger = logging.getLogger(__name__)

#: How long ``stop`` waits for the thread beyond the drain's grace (the schedule loop's
#: own stop, the runs' threads handed back).
_JOIN_EXTRA_SECONDS = 60.0


class ScheduleType(Enum):
    """What fires a schedule; the values are the store's kinds (``stageflow schedules``)."""

    CRON = "cron"  # schedule_expression: a cron expression, "0 2 * * *"
    INTERVAL = "interval"  # seconds, or a duration: "90s", "10m", "2h", "1d"
    ONCE = "once"  # an ISO-8601 time
    EVENT = "event"  # an event's name (``POST /api/v1/events/NAME``)
    AFTER = "after"  # a saved pipeline's name: when one of its runs ends
    OBJECT = "object"  # an fsspec URL with a glob: each new object under it


class RetryStrategy(Enum):
    """How a failed scheduled run is queued again (seed 003's four; the values are
    ``engine.run_retry``'s strategies)."""

    FIXED_DELAY = "fixed"
    EXPONENTIAL_BACKOFF = "exponential"
    LINEAR_BACKOFF = "linear"
    NO_RETRY = "none"


@dataclass(frozen=True)
class ScheduleConfig:
    """A schedule to add: ``name`` (seed 003's ``schedule_id``: the schedule's one name),
    the saved ``pipeline`` it runs, and its timing: ``schedule_type`` with
    ``schedule_expression`` (see ``ScheduleType``), ``timezone`` (a cron's), ``start`` /
    ``end`` (ISO-8601 times), ``catchup``, ``after_states`` (``AFTER``), ``poll_seconds``
    (``OBJECT``: how often its URL is listed). ``parameters`` (seed 003's
    ``execution_config``) are the runs' parameters; ``priority`` orders the queue;
    ``max_concurrent_runs`` bounds its unfinished runs. A failed run is queued again
    ``max_retries`` times, ``retry_delay`` apart by ``retry_strategy``; a run unfinished
    after ``execution_timeout`` is cancelled. Delays and time-outs are seconds (seed 003's
    ``*_minutes`` times 60); ``None`` leaves them to the pipeline."""

    name: str
    pipeline: str
    schedule_type: ScheduleType | str = ScheduleType.CRON
    schedule_expression: str | float | None = None
    timezone: str = "UTC"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_concurrent_runs: int | None = None
    enabled: bool = True
    catchup: bool = False
    start: str | None = None
    end: str | None = None
    after_states: tuple[str, ...] | None = None
    poll_seconds: float | None = None
    retry_strategy: RetryStrategy | str | None = None
    max_retries: int | None = None
    retry_delay: float | None = None
    execution_timeout: float | None = None


class PipelineScheduler:
    """Adds, inspects and fires the store's schedules from a program; see the module
    docstring. Give ``settings``, or ``home`` / ``store_url`` (as ``Orchestrator``), or
    seed 003's ``orchestrator`` (its store); ``max_concurrent_executions``: the runs
    ``start`` runs at once (default ``MAX_CONCURRENT_RUNS``); ``executor``: the
    worker's (``thread`` or ``process``); ``poll_seconds``: how often the loop of
    ``start(workers=0)`` reads the schedules (a worker's loop reads them every second);
    ``grace_seconds``: how long ``stop`` lets runs in progress end."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        home: str | os.PathLike[str] | None = None,
        store_url: str | None = None,
        orchestrator: Orchestrator | None = None,
        max_concurrent_executions: int | None = None,
        executor: str = "thread",
        poll_seconds: float = 1.0,
        grace_seconds: float = 30.0,
    ) -> None:
        from stageflow.runtime.runner import EXECUTORS, resolve_settings

        if orchestrator is not None:
            if settings is not None or home is not None or store_url is not None:
                raise UsageError(
                    "give orchestrator= or settings=/home=/store_url=, not both: the "
                    "scheduler uses the orchestrator's store",
                    field="orchestrator",
                )
            settings = orchestrator.settings
        self.settings = resolve_settings(settings, home, store_url)
        limit = (
            self.settings.max_concurrent_runs
            if max_concurrent_executions is None
            else max_concurrent_executions
        )
        if limit < 1:
            raise UsageError(
                f"max_concurrent_executions is {limit}; it must be at least 1",
                field="max_concurrent_executions",
            )
        if executor not in EXECUTORS:
            raise UsageError(
                f"unknown executor '{executor}'; use one of: {', '.join(EXECUTORS)}",
                field="executor",
            )
        if not 0.05 <= poll_seconds <= 60:
            raise UsageError(
                f"poll_seconds is {poll_seconds}; give 0.05 to 60", field="poll_seconds"
            )
        if grace_seconds < 0:
            raise UsageError(
                f"grace_seconds is {grace_seconds}; give 0 or more", field="grace_seconds"
            )
        self.max_concurrent_executions = limit
        self.executor = executor
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._worker: Worker | None = None
        self._stop_loop: Callable[[], None] | None = None

    # -- schedules ------------------------------------------------------------------------

    def add_schedule(self, config: ScheduleConfig) -> dict[str, Any]:
        """Create schedule ``config.name`` (or change the one of that name) as
        ``stageflow schedules add`` does; the schedule as stored. Raises ``UsageError``,
        ``ScheduleNotFound`` (the pipeline is not saved), ``InvalidSpec``, ``Conflict``."""
        from stageflow import operations as ops

        timing = _timing_of(config)
        with ops.writing(self.settings) as store:
            info = ops.add_schedule(
                store,
                config.name,
                config.pipeline,
                owner=None,
                see_all=True,  # a local program, no server: every schedule
                timezone=config.timezone,
                start=config.start,
                end=config.end,
                catchup=config.catchup,
                params=dict(config.parameters),
                priority=config.priority,
                max_active_runs=config.max_concurrent_runs,
                enabled=config.enabled,
                run_retries=config.max_retries,
                retry_strategy=_strategy_of(config),
                retry_delay=config.retry_delay,
                execution_timeout=config.execution_timeout,
                **timing,
            )
        return info.as_json()

    def remove_schedule(self, name: str) -> None:
        """Delete schedule ``name`` (its runs stay); ``ScheduleNotFound`` if there is none."""
        from stageflow import operations as ops

        with ops.writing(self.settings) as store:
            ops.remove_schedule(store, name, owner=None, see_all=True)

    def pause_schedule(self, name: str) -> dict[str, Any]:
        """Pause schedule ``name``: it fires nothing until resumed."""
        return self._set_enabled(name, False)

    def resume_schedule(self, name: str) -> dict[str, Any]:
        """Resume schedule ``name``; without catch-up it fires its latest due tick only."""
        return self._set_enabled(name, True)

    def list_schedules(self) -> list[dict[str, Any]]:
        """Every schedule in the store, by name, with when it fires next."""
        from stageflow import operations as ops

        with ops.reading(self.settings) as store:
            return [s.as_json() for s in ops.list_schedules(store, owner=None, see_all=True)]

    def get_schedule_status(self, name: str) -> dict[str, Any]:
        """Schedule ``name`` as ``stageflow schedules show --format json`` prints it: its
        timing, ``enabled``, ``next_at``, ``last_tick``, ``active_runs``, the next 5 fire
        times (``upcoming``) and its latest 10 fired runs (``runs``)."""
        from stageflow import operations as ops

        with ops.reading(self.settings) as store:
            return ops.show_schedule(store, name, owner=None, see_all=True).as_json()

    def trigger_manual_execution(
        self, name: str, parameters: Mapping[str, Any] | None = None
    ) -> str:
        """Queue a run of schedule ``name``'s pipeline now (``stageflow schedules trigger``),
        with the schedule's parameters and ``parameters`` on top; its run id. A worker
        runs it: this scheduler once started, or any other on the store."""
        from stageflow import operations as ops

        with ops.writing(self.settings) as store:
            run = ops.trigger_schedule(
                self.settings, store, name, parameters, owner=None, see_all=True
            )
        return run.run_id

    # -- runs ---------------------------------------------------------------------------

    def get_execution_queue_status(self) -> dict[str, Any]:
        """The store's run queue (every run, not only scheduled ones): how many runs are
        ``queued``, ``running`` and ``paused``, the queued ones by priority (workers take
        the highest first), and this scheduler's own state (``started``, ``workers``,
        the runs its worker started and finished)."""
        from stageflow import operations as ops
        from stageflow.runtime.result import iso

        counts: dict[str, int] = {}
        by_priority: dict[int, int] = {}
        oldest: float | None = None
        with ops.reading(self.settings) as store:
            now = time.time()
            for state in ("queued", "running", "paused"):
                runs = _runs_in(store, state, now)
                counts[state] = len(runs)
                if state == "queued":
                    for run in runs:
                        by_priority[run.priority] = by_priority.get(run.priority, 0) + 1
                    oldest = min((r.created_at for r in runs), default=None)
        with self._lock:
            worker, thread = self._worker, self._thread
        started = thread is not None and thread.is_alive()
        return {
            **counts,
            "by_priority": dict(sorted(by_priority.items(), reverse=True)),
            "oldest_queued_at": iso(oldest) if oldest is not None else None,
            "started": started,
            "workers": (worker.concurrency if worker is not None else 0) if started else 0,
            "started_here": worker.report.started if worker is not None else 0,
            "finished_here": len(worker.report.finished) if worker is not None else 0,
        }

    def get_recent_executions(
        self, limit: int = 10, *, schedule: str | None = None
    ) -> list[dict[str, Any]]:
        """The latest ``limit`` runs the store's schedules made (their ticks, manual
        triggers, and the run-level retries of their ticks; of ``schedule`` only, when
        given), newest first: run id, schedule, pipeline, state, priority, whether it was
        ``manual``, the run it retries (``retry_of``: its chain's first run) and its
        times. Runs of a removed schedule are not listed."""
        from stageflow import operations as ops
        from stageflow.runtime.result import iso

        if not 1 <= limit <= 1000:
            raise UsageError(f"limit {limit} is out of range; give 1 to 1,000", field="limit")
        found: list[tuple[str, bool, str | None, RunSummary]] = []
        with ops.reading(self.settings) as store:
            now = time.time()

            def runs(by: str) -> list[RunSummary]:
                return ops.list_runs(
                    store, ops.RunFilter(triggered_by=by, limit=limit), now=now
                ).runs

            if schedule is None:
                names = [s.name for s in ops.list_schedules(store, owner=None, see_all=True)]
            else:
                names = [ops.show_schedule(store, schedule, owner=None, see_all=True).name]
            for name in names:
                found.extend((name, False, None, run) for run in runs(f"schedule:{name}"))
                found.extend((name, True, None, run) for run in runs(f"schedule:{name} (manual)"))
            # A retry is newer than the run it retries: only the latest ticks' can be listed.
            ticks = [(name, run) for name, manual, _, run in _newest(found, limit) if not manual]
            for name, first in ticks:
                found.extend(
                    (name, False, first.run_id, run) for run in runs(f"retry:{first.run_id}")
                )
        return [
            {
                "run_id": run.run_id,
                "schedule": name,
                "pipeline": run.pipeline,
                "state": run.state,
                "priority": run.priority,
                "manual": manual,
                "retry_of": retry_of,
                "created_at": iso(run.created_at),
                "started_at": iso(run.started_at),
                "ended_at": iso(run.ended_at),
            }
            for name, manual, retry_of, run in _newest(found, limit)
        ]

    # -- saving pipelines ---------------------------------------------------------------

    def save_pipeline(self, pipeline: Pipeline | str) -> dict[str, Any]:
        """Save ``pipeline`` (a ``Pipeline``, or a spec file / ``module:pipeline``) as a
        version of its name, as ``stageflow submit`` saves it, so schedules can run it;
        checked first (``InvalidSpec``: every problem, nothing saved). Its ``name``,
        ``version`` and whether the version is new (``created``)."""
        from stageflow import operations as ops
        from stageflow.runtime.loading import load_pipeline
        from stageflow.runtime.plan import check

        if isinstance(pipeline, str):
            pipeline = load_pipeline(pipeline, self.settings.limits)
        check(pipeline)
        with ops.writing(self.settings) as store:
            saved = ops.publish_pipeline(
                store, pipeline, owner=pipeline.owner, now=time.time(), may_see_all=True
            )
        return {"name": saved.name, "version": saved.version, "created": saved.created}

    # -- the background -------------------------------------------------------------------

    def start(self, *, workers: int | None = None) -> None:
        """Fire the schedules in this process from now on, on a thread: with ``workers``
        (default ``max_concurrent_executions``) a worker that also runs up to that many
        runs at once; with ``workers=0`` only the schedule loop (the runs wait for a
        worker elsewhere). Raises ``UsageError`` when started already, ``StoreError``
        when the store cannot be reached."""
        from stageflow import operations as ops

        count = self.max_concurrent_executions if workers is None else workers
        if count < 0:
            raise UsageError(
                f"workers is {count}; give 0 (fire schedules only: a worker elsewhere runs "
                "the runs) or more",
                field="workers",
            )
        with self._lock:
            if self._thread is not None:
                raise UsageError(
                    "the scheduler is started already; call stop() before start()",
                    field="start",
                )
            ops.check_store(self.settings)  # unreachable: say so now, not on the thread
            if count == 0:
                self._thread, self._stop_loop = self._start_loop()
                self._worker = None
            else:
                self._thread, self._worker = self._start_worker(count)

    def stop(self) -> None:
        """Stop firing and running: the worker drains (nothing more is claimed; its runs
        get ``grace_seconds`` to end, then go back to the queue), the schedule loop
        stops, and the thread is joined. Does nothing when not started."""
        with self._lock:
            thread, worker, stop_loop = self._thread, self._worker, self._stop_loop
            if thread is None:
                return
            if worker is not None:
                worker.drain()
            if stop_loop is not None:
                stop_loop()
            thread.join(self.grace_seconds + _JOIN_EXTRA_SECONDS)
            if thread.is_alive():
                logger.warning("the scheduler's thread did not end in time; left as a daemon")
            self._thread, self._stop_loop = None, None

    @property
    def running(self) -> bool:
        """Whether ``start`` was called and its thread is alive."""
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> PipelineScheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ------------------------------------------------------------------------

    def _set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        from stageflow import operations as ops

        with ops.writing(self.settings) as store:
            info = ops.set_schedule_enabled(store, name, enabled, owner=None, see_all=True)
        return info.as_json()

    def _start_worker(self, count: int) -> tuple[threading.Thread, Worker]:
        from stageflow.runtime.worker import Worker

        worker = Worker(
            self.settings,
            concurrency=count,
            executor=self.executor,
            grace_seconds=self.grace_seconds,
            schedules=True,
        )

        def serve() -> None:
            try:
                report = worker.serve()
            except Exception:  # said in full: the thread is the only one to see it
                logger.exception("the scheduler's worker stopped on an error")
                return
            logger.info(
                "the scheduler's worker stopped: %d run(s) started, %d finished",
                report.started,
                len(report.finished),
            )

        thread = threading.Thread(target=serve, name="stageflow-scheduler", daemon=True)
        thread.start()
        return thread, worker

    def _start_loop(self) -> tuple[threading.Thread, Callable[[], None]]:
        from stageflow import operations as ops
        from stageflow.runtime.duties import background_duties
        from stageflow.runtime.schedule_loop import ScheduleLoop

        store = ops.open_for_service(self.settings)
        loop = ScheduleLoop(
            self.settings,
            store,
            poll_seconds=self.poll_seconds,
            duties=background_duties(self.settings, store),
        )

        def serve() -> None:
            try:
                loop.serve_forever()
            finally:
                store.close()

        thread = threading.Thread(target=serve, name="stageflow-scheduler", daemon=True)
        thread.start()
        return thread, loop.stop


def _newest(
    found: list[tuple[str, bool, str | None, RunSummary]], limit: int
) -> list[tuple[str, bool, str | None, RunSummary]]:
    """The ``limit`` newest of ``found`` (by creation, then run id), newest first."""
    return sorted(found, key=lambda f: (f[3].created_at, f[3].run_id), reverse=True)[:limit]


def _runs_in(store: Store, state: str, now: float) -> list[RunSummary]:
    """Every run in ``state``, a page of 1,000 at a time (``operations.list_runs``)."""
    from stageflow import operations as ops

    runs: list[RunSummary] = []
    cursor: str | None = None
    while True:
        page = ops.list_runs(
            store, ops.RunFilter(states=(state,), limit=1000, cursor=cursor), now=now
        )
        runs.extend(page.runs)
        cursor = page.cursor
        if cursor is None:
            return runs


def _timing_of(config: ScheduleConfig) -> dict[str, Any]:
    """``operations.add_schedule``'s timing arguments for ``config``; ``UsageError``
    naming ``schedule_type`` or ``schedule_expression``."""
    kind = config.schedule_type
    if isinstance(kind, str):
        known = [t.value for t in ScheduleType]
        if kind.lower() not in known:
            raise UsageError(
                f"schedule_type {kind!r} is not a schedule type; use one of "
                f"{', '.join(known)} (ScheduleType.CRON, ...)",
                field="schedule_type",
            )
        kind = ScheduleType(kind.lower())
    elif not isinstance(kind, ScheduleType):
        raise UsageError(
            f"schedule_type {kind!r} is not a ScheduleType; give ScheduleType.CRON, "
            "INTERVAL, ONCE, EVENT, AFTER or OBJECT",
            field="schedule_type",
        )
    expression = config.schedule_expression
    what = {
        ScheduleType.CRON: "a cron expression ('0 2 * * *')",
        ScheduleType.INTERVAL: "an interval in seconds or a duration ('90s', '10m')",
        ScheduleType.ONCE: "an ISO-8601 time ('2030-01-01T02:00:00Z')",
        ScheduleType.EVENT: "an event's name",
        ScheduleType.AFTER: "the name of a saved pipeline",
        ScheduleType.OBJECT: "an fsspec URL with a glob ('file:///data/in/*.csv')",
    }[kind]
    if expression is None or (isinstance(expression, str) and not expression.strip()):
        raise UsageError(
            f"schedule '{config.name}': schedule_expression is missing; a "
            f"{kind.value} schedule needs {what}",
            field="schedule_expression",
        )
    if isinstance(expression, bool) or (
        not isinstance(expression, str) and kind is not ScheduleType.INTERVAL
    ):
        raise UsageError(
            f"schedule '{config.name}': schedule_expression {expression!r} is not text; "
            f"a {kind.value} schedule needs {what}",
            field="schedule_expression",
        )
    text = str(expression)
    if config.after_states is not None and kind is not ScheduleType.AFTER:
        raise UsageError(
            f"schedule '{config.name}': after_states is for an AFTER schedule (it fires when "
            "a run of a pipeline ends in one of them); remove it, or use ScheduleType.AFTER",
            field="after_states",
        )
    if config.poll_seconds is not None and kind is not ScheduleType.OBJECT:
        raise UsageError(
            f"schedule '{config.name}': poll_seconds is for an OBJECT schedule (how often "
            "its URL is listed); remove it, or use ScheduleType.OBJECT",
            field="poll_seconds",
        )
    if kind is ScheduleType.CRON:
        return {"cron": text}
    if kind is ScheduleType.INTERVAL:
        return {"every": text}
    if kind is ScheduleType.ONCE:
        return {"at": text}
    if kind is ScheduleType.EVENT:
        return {"on_event": text}
    if kind is ScheduleType.OBJECT:
        return {"on_object": text, "poll": config.poll_seconds}
    states = list(config.after_states) if config.after_states is not None else None
    return {"after": text, "after_states": states}


def _strategy_of(config: ScheduleConfig) -> str | None:
    """``config.retry_strategy`` as ``engine.run_retry`` names it; ``UsageError`` naming
    ``retry_strategy`` for one that is not a ``RetryStrategy``."""
    strategy = config.retry_strategy
    if strategy is None or isinstance(strategy, RetryStrategy):
        return None if strategy is None else strategy.value
    known = [s.value for s in RetryStrategy]
    if not isinstance(strategy, str) or strategy.lower() not in known:
        raise UsageError(
            f"schedule '{config.name}': retry_strategy {strategy!r} is not a retry strategy; "
            f"use one of {', '.join(known)} (RetryStrategy.FIXED_DELAY, ...)",
            field="retry_strategy",
        )
    return strategy.lower()
