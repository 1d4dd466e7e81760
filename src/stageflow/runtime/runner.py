"""The run loop: turns the engine's decisions into work, records every change.

Policy (DESIGN.md, durability rule). A scheduling step (``_Drive.step``):
record finished attempts in the engine (their outputs are already stored by
the worker, so an output is durable before its success can be committed),
re-queue due retries, fail timed-out attempts and start as many ready tasks as
there are free slots. A step is run by whichever thread has something for it:
a worker that just finished an attempt, keeping the next task for itself, or
the run's own thread when a timer is due (``runtime.cycle``). State changes
accumulate in one ``Batch`` in the order they happened and are committed in
ONE transaction once the oldest of them is ``commit_interval`` old (10 ms by
default), and always before the run is reported finished. Batches are applied
in order, so a task's ``success`` is never committed after the success of a
task that consumed its output (causal order). A crash at any instant loses
only uncommitted changes, and ``resume`` re-runs exactly the tasks without a
committed ``success``: at least once, never one that has it.

Leases (``engine.lease``, ``runtime.claim.take_run``). Before a run starts
(a new one) or before its committed state is read (resume, retry), this process
claims it by compare-and-set of its lease epoch; every batch carries that epoch
(``Fence``) and renews the lease, and the step adds a heartbeat every
``renew_every`` (5 s) so a quiet run renews it too. A commit refused because
another process took the run over (``LeaseLost``) stops the run: no step runs
after it, running attempts are stopped, nothing more is committed, and the entry
points raise it. A run starts no new attempt past the lease expiry its last
commit confirmed (its lease may have been taken over meanwhile).

State: the engine (``Scheduler``), the executor and the ``Cycle`` that runs
steps, per-task rows mirroring the store (``_Row``), the outputs by task
(objects for the thread executor, ``OutputRef``s always), and a heap of attempt
deadlines (``_Drive``).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stageflow.engine.admission import Admission, Capacity
from stageflow.engine.retry import NOT_RETRYABLE
from stageflow.engine.scheduler import EnginePlan, Scheduler, Transition
from stageflow.engine.states import FINAL_TASK_STATES, RunState, TaskState
from stageflow.errors import (
    ControlRefused,
    DoesNotFitHere,
    InvalidSpec,
    LeaseLost,
    RunIdTaken,
    UsageError,
)
from stageflow.graph import critical_path, downstream
from stageflow.operators.metadata import read_metadata
from stageflow.runtime.artifacts import ArtifactStore, load_output, store_output
from stageflow.runtime.attempt import AttemptResult, Job, Usage
from stageflow.runtime.claim import (
    check_claimable,
    default_owner,
    lease_terms,
    take_run,
    under_lease,
)
from stageflow.runtime.committer import Committer
from stageflow.runtime.control import RunControl, default_requester
from stageflow.runtime.cycle import Cycle
from stageflow.runtime.executors.base import Executor
from stageflow.runtime.host import EXECUTORS, Host, collector_paused, default_host
from stageflow.runtime.interrupt import Interrupt
from stageflow.runtime.lineage import RunRecorder, start_recording
from stageflow.runtime.loading import pipeline_of_run
from stageflow.runtime.notify import run_hooks
from stageflow.runtime.observers import RunEvent
from stageflow.runtime.plan import check, resolve_params, task_parameters
from stageflow.runtime.pools import POLL_SECONDS as POOL_POLL_SECONDS
from stageflow.runtime.pools import bind_run, uses_pools
from stageflow.runtime.resilience import TIMEOUT_TYPES, Resilience
from stageflow.runtime.resources import attempt_env, request_json
from stageflow.runtime.result import RunResult, TaskResult, iso, rows_by_task
from stageflow.runtime.settings import Settings, load_settings
from stageflow.runtime.store.base import (
    CACHED_SKIPPED_DOWNSTREAM,
    SKIPPED_DOWNSTREAM,
    SKIPPING_NOTES,
    AttemptRecord,
    Batch,
    EventRecord,
    Fence,
    OutputRef,
    PipelineRecord,
    RunRecord,
    RunUpdate,
    Store,
    TaskRunRecord,
    Tick,
)
from stageflow.spec.models import Pipeline, input_source

if TYPE_CHECKING:
    from stageflow.operators.sensor import Poke
    from stageflow.runtime.sensing import Pokes

__all__ = [
    "EXECUTORS",
    "Listener",
    "Prepared",
    "RunStarted",
    "Runner",
    "new_run_id",
    "queue_saved",
    "resume_run",
    "retry_run",
    "run_pipeline",
    "with_downstream",
]

logger = logging.getLogger(__name__)

Listener = Callable[[Transition], None]


@dataclass(frozen=True, slots=True)
class RunStarted:
    """What a run's observers learn before its first step: which run, of what."""

    run_id: str
    pipeline: str
    task_ids: list[str]
    resumed: bool


#: Called once a run is claimed, before its first step (e.g. the live view's header).
OnStart = Callable[[RunStarted], None]
_MAX_WAIT = 1.0
#: New run ids drawn before giving up (a repeat within one second is rare already).
_RUN_ID_TRIES = 5
BACKFILL_LIMIT = 8  # tasks admitted around one waiting for resources (engine.admission)
_S = TaskState
_WHY_STATES = frozenset({_S.FAILED, _S.UP_FOR_RETRY, _S.UPSTREAM_FAILED, _S.CANCELLED, _S.SKIPPED})


def queue_saved(
    settings: Settings,
    store: Store,
    record: PipelineRecord,
    params: Mapping[str, Any],
    *,
    priority: int = 0,
    triggered_by: str | None = None,
    tick: Tick | None = None,
    schedule_object: tuple[str, str] | None = None,
) -> RunRecord:
    """Queue a run of the saved pipeline version ``record`` for a worker, validated
    without importing any ``call:`` target; it belongs to the pipeline's owner (see
    ``Runner.prepare``). The API's submit, a schedule's tick, and an object schedule's
    new object (``schedule_object``: (schedule, object key), ``TickTaken`` when it
    fired already)."""
    import json

    from stageflow.spec.load import pipeline_from_data

    pipeline = pipeline_from_data(json.loads(record.spec_json))
    prepared = Runner(pipeline, store=store, settings=settings, import_calls=False).prepare(
        dict(params),
        priority=priority,
        hold=False,
        team=record.owner,
        triggered_by=triggered_by,
        tick=tick,
        schedule_object=schedule_object,
    )
    return prepared.run


@dataclass(frozen=True, slots=True)
class QueueTemplate:
    """What ``queue_saved`` checks, checked once for many queued runs of one saved
    version with the same parameters (a scheduler's pass): ``new_run`` makes each run's
    record; ``Store.create_tick_runs`` writes them."""

    pipeline: PipelineRecord
    params: dict[str, Any]
    task_ids: tuple[str, ...]
    priority: int
    executor: str
    source: str | None

    def new_run(self, now: float, *, triggered_by: str | None) -> RunRecord:
        """A queued run of the template, created ``now``, with a fresh id."""
        return RunRecord(
            new_run_id(now),
            self.pipeline.name,
            self.pipeline.version,
            RunState.QUEUED,
            self.params,
            now,
            executor=self.executor,
            source=self.source,
            priority=self.priority,
            owner=self.pipeline.owner,
            triggered_by=triggered_by,
        )


def queue_template(
    settings: Settings,
    store: Store,
    record: PipelineRecord,
    params: Mapping[str, Any],
    *,
    priority: int = 0,
) -> QueueTemplate:
    """Check the saved pipeline version ``record`` with ``params`` as ``queue_saved``
    does (``InvalidSpec``, ``UsageError``), once, for many runs; nothing recorded."""
    import json

    from stageflow.spec.load import pipeline_from_data

    pipeline = pipeline_from_data(json.loads(record.spec_json))
    runner = Runner(pipeline, store=store, settings=settings, import_calls=False)
    checked = resolve_params(pipeline, params)
    runner._plan(checked, fit=False)  # queued: this machine's size is not its limit
    spec, version = pipeline.versioned_spec()
    return QueueTemplate(
        PipelineRecord(pipeline.name, version, spec, record.created_at, owner=record.owner),
        checked,
        tuple(t.id for t in pipeline.tasks),
        priority,
        runner.executor_name,
        _source_of(pipeline),
    )


def new_run_id(now: float) -> str:
    """A sortable, unique, path-safe run id: ``20261125-190501-3fa9c1``."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def run_pipeline(
    pipeline: Pipeline,
    *,
    params: Mapping[str, Any] | None = None,
    executor: str = "thread",
    max_parallel: int | None = None,
    home: str | os.PathLike[str] | None = None,
    store_url: str | None = None,
    settings: Settings | None = None,
    listener: Listener | None = None,
    on_start: OnStart | None = None,
    interrupt: Interrupt | None = None,
    use_cache: bool = True,
    host: Host | None = None,
) -> RunResult:
    """Validate, record and run ``pipeline``; return its ``RunResult`` (any final state).

    ``use_cache=False`` (``--no-cache``) runs cached tasks anyway and refreshes
    their cache entries. Raises ``InvalidSpec`` before anything runs, ``StoreError``
    if the store cannot be opened, ``UsageError`` for a bad executor name or parallelism.
    """
    settings = resolve_settings(settings, home, store_url)
    host = host or default_host()
    with host.store(settings) as store:  # opened once per process, not per run
        runner = Runner(
            pipeline,
            store=store,
            settings=settings,
            executor=executor,
            max_parallel=max_parallel,
            listener=listener,
            on_start=on_start,
            interrupt=interrupt,
            use_cache=use_cache,
            host=host,
        )
        return runner.run_new(params or {})


def resume_run(
    run_id: str,
    *,
    executor: str = "thread",
    max_parallel: int | None = None,
    home: str | os.PathLike[str] | None = None,
    store_url: str | None = None,
    settings: Settings | None = None,
    listener: Listener | None = None,
    on_start: OnStart | None = None,
    interrupt: Interrupt | None = None,
    host: Host | None = None,
) -> RunResult:
    """Finish run ``run_id``: re-run exactly its tasks without a committed success.

    Raises ``RunNotFound``, ``RunOwned`` (another process holds its lease, or won the
    claim), ``LeaseLost`` (taken over while it ran), or ``InvalidSpec``/``StageflowError``
    when its pipeline can no longer be loaded.
    """
    settings = resolve_settings(settings, home, store_url)
    host = host or default_host()
    with host.store(settings) as store:
        run = store.get_run(run_id)
        check_claimable(run, time.time())  # before loading anything; claimed in resume()
        pipeline = pipeline_of_run(store, run, importable=True)
        runner = Runner(
            pipeline,
            store=store,
            settings=settings,
            executor=executor,
            max_parallel=max_parallel,
            listener=listener,
            on_start=on_start,
            interrupt=interrupt,
            host=host,
        )
        return runner.resume(run)


def retry_run(
    run_id: str,
    *,
    from_task: str | None = None,
    by: str | None = None,
    executor: str = "thread",
    max_parallel: int | None = None,
    home: str | os.PathLike[str] | None = None,
    store_url: str | None = None,
    settings: Settings | None = None,
    listener: Listener | None = None,
    on_start: OnStart | None = None,
    interrupt: Interrupt | None = None,
    use_cache: bool = True,
    host: Host | None = None,
) -> RunResult:
    """Run the tasks of run ``run_id`` that did not succeed again, in the same run.

    Committed successes are reused (as ``resume`` does); with ``from_task``, that
    task and everything downstream of it run again even if they succeeded. Attempt
    numbers go on; an event says why each task was reset. Raises ``RunNotFound``,
    ``RunOwned`` (another process holds its lease), ``LeaseLost``, ``ControlRefused``
    (it succeeded and no ``from_task`` was given), ``UsageError`` (no such ``from_task``).
    """
    settings = resolve_settings(settings, home, store_url)
    host = host or default_host()
    with host.store(settings) as store:
        run = store.get_run(run_id)
        check_claimable(run, time.time())  # before loading anything; claimed in resume()
        if run.state == RunState.SUCCESS and from_task is None:
            raise ControlRefused(
                f"run '{run_id}' succeeded; nothing to retry (`stageflow retry {run_id} "
                "--from TASK` runs a task and everything downstream of it again)"
            )
        pipeline = pipeline_of_run(store, run, importable=True)
        rerun: set[str] = set()
        if from_task is not None:
            rerun = with_downstream(pipeline, from_task, run_id)
        reason = "retry" + (f" --from {from_task}" if from_task else "")
        runner = Runner(
            pipeline,
            store=store,
            settings=settings,
            executor=executor,
            max_parallel=max_parallel,
            listener=listener,
            on_start=on_start,
            interrupt=interrupt,
            use_cache=use_cache,
            host=host,
        )
        return runner.resume(run, rerun=rerun, reason=f"{reason} (by {by or default_requester()})")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A new run, validated, planned and recorded as ``queued``; ``held``: under the
    preparing runner's lease (epoch 1), which ``start`` trusts without claiming again."""

    run: RunRecord
    params: dict[str, Any]
    plan: EnginePlan
    held: bool = False


class Runner:
    """Runs one pipeline's runs against one store; see the module docstring."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        store: Store,
        settings: Settings,
        executor: str = "thread",
        max_parallel: int | None = None,
        listener: Listener | None = None,
        on_start: OnStart | None = None,
        interrupt: Interrupt | None = None,
        clock: Callable[[], float] = time.time,
        use_cache: bool = True,
        capacity: Capacity | None = None,
        admission: Admission | None = None,
        owner: str | None = None,
        host: Host | None = None,
        import_calls: bool = True,
    ) -> None:
        """``capacity``: what tasks' requests are admitted against (default: this
        machine's, detected when a task asks for resources); ``admission``: a
        budget shared with other runs (a ``LocalRuntime``'s), instead; ``owner``:
        the name this process holds leases under (default ``host:pid``); ``host``:
        the process's executor pools and observers (default: ``default_host()``);
        ``import_calls``: false in a process that must never import a user's module
        (the API: ``call:`` targets are checked by their form only, ``plan.check``)."""
        if executor not in EXECUTORS:
            raise UsageError(
                f"unknown executor '{executor}'; use one of: {', '.join(EXECUTORS)}",
                field="executor",
            )
        if max_parallel is not None and max_parallel < 1:
            raise UsageError(
                f"--max-parallel is {max_parallel}; it must be at least 1", field="max_parallel"
            )
        self.pipeline = pipeline
        self.store = store
        self.settings = settings
        self.executor_name = executor
        self.parallel = max_parallel or pipeline.max_parallel_tasks or settings.parallelism()
        if pipeline.execution_mode == "sequential":
            self.parallel = 1  # one task at a time, in priority/topological order
        self.capacity = capacity
        self.admission = admission
        self.shared = admission is not None  # other runs use it too: wake on release
        self.listener = listener
        self.on_start = on_start
        self.interrupt = interrupt
        self.clock = clock
        self.use_cache = use_cache
        self.artifacts = ArtifactStore(settings.artifacts_root)
        self.owner = owner or default_owner()
        self.lease = lease_terms(settings)
        self.host = host or default_host()
        self.import_calls = import_calls

    # -- entry points ------------------------------------------------------------

    def run_new(self, overrides: Mapping[str, Any]) -> RunResult:
        return self.start(self.prepare(overrides))

    def prepare(
        self,
        overrides: Mapping[str, Any],
        *,
        priority: int = 0,
        hold: bool = True,
        team: str | None = None,
        triggered_by: str | None = None,
        tick: Tick | None = None,
        schedule_object: tuple[str, str] | None = None,
    ) -> Prepared:
        """Validate and plan a new run and record it as ``queued``; ``InvalidSpec``
        (nothing recorded) when the pipeline or its parameters are wrong, or a
        request can never fit the capacity.

        ``hold``: the run is recorded under this runner's lease (it is about to run
        it: no worker may take it meanwhile); without, it waits in the store's queue
        for a worker (``stageflow submit``), in ``priority`` order. ``team``: the owner
        the run belongs to (its pipeline's, over the API); ``triggered_by``: who asked;
        ``tick``: the (schedule, logical time) firing it (``TickTaken``, nothing recorded,
        when that tick made a run already)."""
        params = resolve_params(self.pipeline, overrides)
        # A queued run is for whichever worker it fits: this machine's size is not its limit.
        plan = self._plan(params, fit=hold)
        now = self.clock()
        spec, version = self.pipeline.versioned_spec()
        for tries in range(1, _RUN_ID_TRIES + 1):
            try:
                run = self._create_run(
                    new_run_id(now),
                    version,
                    spec,
                    params,
                    now,
                    hold=hold,
                    priority=priority,
                    team=team,
                    triggered_by=triggered_by,
                    tick=tick,
                    schedule_object=schedule_object,
                )
                break
            except RunIdTaken:  # ids drawn alike within a second (24 random bits): again
                if tries == _RUN_ID_TRIES:
                    raise
        logger.info("run %s of pipeline %s (version %s) created", run.run_id, run.pipeline, version)
        return Prepared(run, params, plan, held=hold)

    def _create_run(
        self,
        run_id: str,
        version: str,
        spec: str,
        params: dict[str, Any],
        now: float,
        *,
        hold: bool,
        priority: int,
        team: str | None,
        triggered_by: str | None,
        tick: Tick | None,
        schedule_object: tuple[str, str] | None = None,
    ) -> RunRecord:
        """Record a new run ``run_id`` (``prepare``); ``RunIdTaken`` when it exists."""
        run = RunRecord(
            run_id,
            self.pipeline.name,
            version,
            RunState.QUEUED,
            params,
            now,
            executor=self.executor_name,
            source=_source_of(self.pipeline),
            priority=priority,
            owner=team,
            triggered_by=triggered_by,
        )
        if hold:  # created under this process's lease (epoch 1): `start` claims nothing
            run = under_lease(run, owner=self.owner, epoch=1, now=now, terms=self.lease)
        # The pipeline version (if new), the run and its pending task runs: one transaction.
        self.store.create_run(
            run,
            [t.id for t in self.pipeline.tasks],
            pipeline=PipelineRecord(self.pipeline.name, version, spec, now, owner=team),
            tick=tick,
            schedule_object=schedule_object,
        )
        return run

    def start(self, prepared: Prepared) -> RunResult:
        """Run a prepared run to its end: one ``prepare`` created under this process's
        lease (``hold``) as it stands; a queued one is claimed first (``RunOwned`` when
        another process claimed it first)."""
        run = prepared.run
        return self._execute(
            run,
            prepared.params,
            prepared.plan,
            restored={},
            attempts={},
            resumed=False,
            lease=self._claim(run, run.lease_epoch if prepared.held else None),
        )

    def start_queued(self, run: RunRecord, *, epoch: int | None = None) -> RunResult:
        """Claim a run that waits in the store's queue (``prepare(hold=False)``, by
        another process) and run it to its end; ``RunOwned`` when another claimed it
        first. ``InvalidSpec`` when its parameters no longer fit this pipeline.
        ``epoch``: the caller claimed it already (``Store.claim_next``; see ``_claim``)."""
        plan = self._plan(run.params)
        return self._execute(
            run,
            run.params,
            plan,
            restored={},
            attempts={},
            resumed=False,
            lease=self._claim(run, epoch),
        )

    def resume(
        self,
        run: RunRecord,
        *,
        rerun: Collection[str] = (),
        reason: str | None = None,
        epoch: int | None = None,
    ) -> RunResult:
        """Continue ``run``: its committed successes are kept, except the ``rerun`` ids
        (``retry --from``); ``reason`` goes into the events (default: resume).
        ``epoch``: the caller claimed it already (``Store.claim_next``; see ``_claim``)."""
        if run.state == RunState.SUCCESS and not rerun:
            raise UsageError(
                f"run '{run.run_id}' already succeeded; nothing to resume "
                "(start a new run with `stageflow run`)"
            )
        plan = self._plan(run.params)
        # Claimed before the committed state is read: its former owner can commit
        # nothing after the claim (fencing), so nothing committed is missed.
        lease = self._claim(run, epoch)
        refs = self.store.outputs(run.run_id)
        rows = self.store.task_runs(run.run_id)
        restored = {
            r.task_id: refs[r.task_id]
            for r in rows
            if r.state == _S.SUCCESS and r.task_id in refs and r.task_id not in rerun
        }
        attempts = {r.task_id: r.attempts for r in rows}
        return self._execute(
            run,
            run.params,
            plan,
            restored=restored,
            attempts=attempts,
            resumed=True,
            reason=reason,
            lease=lease,
            stored=rows,
        )

    def _claim(self, run: RunRecord, epoch: int | None = None) -> Fence:
        """Take ``run``'s lease (``claim.take_run``: decide, then compare-and-set the
        epoch read); the fence its commits carry. Raises ``RunOwned``.

        ``epoch``: already won by the caller (a worker's ``Store.claim_next``), so
        nothing is claimed again. When ``run`` shows that lease, its expiry is the
        one trusted for starting attempts; otherwise the lease is renewed now
        (``RunOwned`` when the epoch moved on meanwhile)."""
        now = self.clock()
        if epoch is None:
            epoch = take_run(self.store, run, now=now, terms=self.lease, owner=self.owner)
            expires = self.lease.expiry(now)
        elif run.lease_epoch == epoch and run.lease_expires_at is not None:
            expires = run.lease_expires_at
        elif self.store.renew_lease(run.run_id, epoch, now, self.lease.seconds):
            expires = self.lease.expiry(now)
        else:
            from stageflow.errors import RunOwned  # the one place the runner raises it

            raise RunOwned(
                f"run '{run.run_id}' was taken by another process (its lease epoch is no "
                f"longer {epoch}) before this one could start it",
                owner=None,
            )
        return Fence(epoch, now, expires)

    def _plan(self, params: Mapping[str, Any], *, fit: bool = True) -> EnginePlan:
        """Check the pipeline (``InvalidSpec`` with every problem; ``DoesNotFitHere``
        for requests that can never fit this capacity, unless ``fit`` is false) and
        plan it, with critical-path estimates."""
        from stageflow.runtime import resources

        defaults = resources.operator_defaults()
        with collector_paused():  # only where the entry point tuned the collector
            plan = check(
                self.pipeline, params, operator_defaults=defaults, import_calls=self.import_calls
            )
        if plan.needs_admission():
            from stageflow.runtime import pools

            if self.admission is None:
                capacity = self.capacity or resources.detect_capacity(self.settings.home)
                self.admission = Admission(
                    capacity, backfill_limit=BACKFILL_LIMIT, gate=pools.GlobalPools(self.clock)
                )
            capacity = self.admission.capacity
            if pools.uses_pools(plan) and self.admission.gate is not None:
                # Pools are the store's (deployment-wide), not this machine's.
                capacity = pools.with_global_pools(self.store, capacity, self.clock())
            problems = resources.resource_problems(self.pipeline, plan, capacity)
            unknown = [p for p in problems if p.field == "pool"]
            if unknown:  # no pool of that name anywhere: no machine can run it
                raise InvalidSpec(unknown, pipeline=self.pipeline.name)
            if problems and fit:
                raise DoesNotFitHere(problems, pipeline=self.pipeline.name)
            if self.executor_name == "thread" and any(
                self.pipeline.enforce_limits_of(t) for t in self.pipeline.tasks
            ):
                logger.warning(
                    "enforce_limits: the thread executor can limit only bash tasks' processes; "
                    "python tasks run in this process (use --executor process to limit them)"
                )
        estimates = self.host.history_estimates(self.store, self.pipeline, plan)
        if estimates:
            plan = replace(plan, estimates=estimates)
        return plan

    # -- the loop ------------------------------------------------------------------

    def _execute(
        self,
        run: RunRecord,
        params: dict[str, Any],
        plan: EnginePlan,
        *,
        restored: dict[str, OutputRef],
        attempts: dict[str, int],
        resumed: bool,
        lease: Fence,
        reason: str | None = None,
        stored: Sequence[TaskRunRecord] = (),
    ) -> RunResult:
        """Run ``run`` to its end; ``stored``: its task runs as the store had them when
        it was claimed (a resume: read once, by ``resume``)."""
        run_id = run.run_id
        batch = Batch()  # the run's first commit: its start record, its start, its tasks'
        recorder = start_recording(
            self.store, self.settings, self.pipeline, run, params, resumed=resumed, batch=batch
        )
        watching = self._watch(run_id, recorder)
        ended: list[RunResult] = []  # the run's end, once published (the record's cue)
        try:
            return self._run_watched(
                run,
                params,
                plan,
                restored=restored,
                attempts=attempts,
                resumed=resumed,
                lease=lease,
                reason=reason,
                batch=batch,
                ended=ended,
                stored=stored,
            )
        finally:  # however it ended: no subscription outlives the run's events
            self._unwatch(run_id, watching, ended=bool(ended))

    def _schedule_values(self, run: RunRecord) -> dict[str, str]:
        """The run's ``${schedule.*}`` values: for a schedule's tick, its data interval
        (the schedule's previous fire time to the tick's logical time, ISO 8601 UTC) and
        the schedule's name; for any other run, its creation time as both ends and no
        name. The store is read only for a run a schedule made."""
        tick = found = None
        if run.triggered_by is not None and run.triggered_by.startswith("schedule:"):
            tick = self.store.tick_of_run(run.run_id)
            # An object schedule's run: no tick, its object (``${schedule.object}``).
            found = None if tick is not None else self.store.object_of_run(run.run_id)
        if tick is None:
            at = iso(run.created_at) or ""
            name, url = found if found is not None else ("", "")
            return {"name": name, "start": at, "end": at, "object": url}
        name, logical_time, begins = tick
        return {
            "name": name,
            "start": iso(begins) or "",
            "end": iso(logical_time) or "",
            "object": "",
        }

    def _run_watched(
        self,
        run: RunRecord,
        params: dict[str, Any],
        plan: EnginePlan,
        *,
        restored: dict[str, OutputRef],
        attempts: dict[str, int],
        resumed: bool,
        lease: Fence,
        reason: str | None,
        batch: Batch,
        ended: list[RunResult],
        stored: Sequence[TaskRunRecord],
    ) -> RunResult:
        """``_execute`` once its observers are subscribed: the run, to its end (appended
        to ``ended`` once published)."""
        pipeline = self.pipeline
        run_id = run.run_id
        now = started = self.clock()
        observers = self.host.observers
        tasks = _ByTask({t.id: t for t in pipeline.tasks})
        timeouts = _ByTask(
            {t.id: pipeline.timeout_of(t) or self.settings.task_timeout for t in pipeline.tasks}
        )
        loop = _Loop(self, run_id, tasks, params, restored, lease)
        loop.schedule = self._schedule_values(run)
        loop.schedule_env = {
            f"STAGEFLOW_SCHEDULE_{key.upper()}": value for key, value in loop.schedule.items()
        }
        sched = Scheduler(
            plan,
            failure_strategy=pipeline.failure_strategy,
            restored=restored.keys(),
            attempts=attempts,
            condition=loop.condition,
            branch=loop.branch_choice,
            jitter_seed=run_id,
            map_size=loop.map_size,
            skipped_downstream=loop.skipping.get,
            # A shared budget sees every task of every run (an exclusive task of
            # another run holds them back too); alone, only tasks that ask.
            admission=self.admission if plan.needs_admission() or self.shared else None,
            # Sensors that were waiting when the run stopped: their timeout goes on.
            sensing_since={
                r.task_id: r.started_at
                for r in stored
                if r.state == _S.SENSING and r.started_at is not None
            },
        )
        loop.sched = sched
        if resumed:
            loop.reset_for_resume(stored, now, batch, f"reset by {reason or 'resume'}")
        batch.runs.append(
            RunUpdate(
                run_id, state=RunState.RUNNING, started_at=run.started_at or now, heartbeat_at=now
            )
        )
        batch.events.append(
            EventRecord(
                run_id,
                None,
                run.state,
                RunState.RUNNING,
                now,
                message=(reason or "resumed") if resumed else None,
            )
        )
        info = RunStarted(run_id, pipeline.name, list(loop.rows), resumed)
        if self.on_start is not None:  # on this thread, before any event: the view's header
            self.on_start(info)
        observers.publish(RunEvent("started", run_id, info=info))  # before any transition
        loop.record(sched.start(now), batch)
        approvers = {t.id: t.approval.approvers for t in pipeline.tasks if t.approval is not None}
        control = (  # cancel/pause/unpause/approve requests from other processes
            RunControl.for_run(self.store, run_id, approvers, now)
            if resumed
            else RunControl(self.store, run_id, approvers, now)
        )
        pooled = uses_pools(plan)  # no task asks for a pool: nothing to bind, or stamp
        drive = _Drive(self, loop, sched, control, timeouts, batch, now, pooled=pooled)
        cycle = Cycle(drive.step, self.clock, drive.submit)
        if plan.sensors:  # checked off the workers (runtime.sensing)
            from stageflow.runtime.sensing import Pokes

            drive.pokes = Pokes(
                tasks,
                lambda t: task_parameters(t.parameters, params, loop.schedule),
                pipeline_dir=loop.pipeline_dir,
                store=self.store,
                clock=self.clock,
                wake=cycle.wake,
            )
        loop.committer.on_error = cycle.wake  # a refused commit (LeaseLost) stops the run now
        drive.executor = self.host.executor_pool(self.executor_name).attach(
            run_id, cycle.deliver, self.parallel
        )
        shared = self.admission is not None and sched.uses_admission and self.shared
        if shared:
            assert self.admission is not None
            self.admission.subscribe(cycle.wake)  # another run released resources
        if self.interrupt is not None:
            self.interrupt.subscribe(cycle.wake)  # Ctrl-C: the next step cancels
        cancelled = False
        try:
            cycle.run_step(now)
            while True:
                with cycle.lock:
                    if cycle.error is not None:
                        raise cycle.error
                    loop.committer.check()  # LeaseLost: another process took the run over
                    if sched.finished:
                        break
                    now = self.clock()
                    look = drive.look(now)
                    cycle.look_at = look
                cycle.sleep(look - now)
                now = self.clock()
                cycle.run_step(now)
        except KeyboardInterrupt:
            cancelled = True
            with cycle.lock:
                now = self.clock()
                loop.record(sched.cancel(now, "cancelled: interrupted (Ctrl-C)"), drive.batch)
                drive.stop_cancelled()
        except LeaseLost as exc:  # taken over: stop, commit nothing more
            logger.error("run %s: %s", run_id, exc)
            with contextlib.suppress(LeaseLost):
                loop.committer.close()  # its thread is let go; queued batches are dropped
            raise
        finally:
            cycle.close()
            drive.executor.shutdown()
            sched.close()  # no grant outlives the run, however it ended
            if shared:
                assert self.admission is not None
                self.admission.unsubscribe(cycle.wake)
            if self.interrupt is not None:
                self.interrupt.unsubscribe(cycle.wake)
        now = max(now, drive.now)
        batch = drive.batch
        state = sched.run_state()
        if cancelled or control.cancelled or drive.interrupted:
            state = RunState.CANCELLED
        batch.runs.append(RunUpdate(run_id, state=state, ended_at=now, heartbeat_at=now))
        batch.events.append(
            EventRecord(
                run_id,
                None,
                control.state,
                state,
                now,
                message=sched.aborted
                or control.message
                or (self.interrupt.reason if drive.interrupted and self.interrupt else None),
            )
        )
        try:
            loop.commit(batch, now, final=True)  # the final state clears the lease
            # Built while the committer writes the final batch (it is not reported before).
            finished = loop.result(state, run.started_at or started, now)
        finally:
            loop.committer.close()  # everything committed before the run is reported finished
        logger.info("run %s finished: %s", run_id, state)
        if state == RunState.FAILED:
            self._queue_retry(run_id, now)
        # The reproducibility record, lineage and tracking are written by an observer;
        # the caller gets the result once they (and the live view) have seen the end.
        observers.publish(RunEvent("finished", run_id, result=finished, refs=dict(loop.refs)))
        ended.append(finished)
        return finished

    def _queue_retry(self, run_id: str, now: float) -> None:
        """The end-of-run hook of run-level retries (``runtime.run_retries``): the failed
        run's own process queues its retry when its policy leaves one. The background
        duty is the other creator; the retry's key makes it one either way, and a hook
        that fails leaves the retry to the duty (the run's end stands)."""
        from stageflow.runtime.run_retries import retry_failed_run

        try:
            retry_failed_run(self.store, self.store.get_run(run_id), now)
        except Exception as exc:  # the run ended; the duty tries again within a second
            logger.warning("run %s: its retry was not queued here: %s", run_id, exc)

    def _watch(self, run_id: str, recorder: RunRecorder) -> Callable[[], None]:
        """Subscribe this run's observers: its record (on ``finished``) and the listener it
        was given (``on_start`` is called on the run's thread before its first event, so
        that a view is up before anything it shows happens). Returns the unsubscribe
        function; the subscription also ends itself once the record has the run's end."""
        listener = self.listener
        subscription: list[Callable[[], None]] = []
        # The pipeline's on_failure/on_success/on_retry channels (None: it has none).
        hooks = run_hooks(self.settings, self.store, self.pipeline, run_id)

        def observe(event: RunEvent) -> None:
            if hooks is not None:
                hooks[0](event)  # records the notifications; sent in the background
            if event.kind == "task":
                if listener is not None and event.transition is not None:
                    listener(event.transition)
            elif event.kind == "finished" and event.result is not None:
                try:
                    recorder.finish(event.result, event.refs)
                finally:
                    subscription[0]()

        tasks = listener is not None or (hooks is not None and hooks[1])
        subscription.append(self.host.observers.subscribe(observe, run_id=run_id, tasks=tasks))
        return subscription[0]

    def _unwatch(self, run_id: str, unsubscribe: Callable[[], None], *, ended: bool) -> None:
        """Wait until this run's events were handled, then unsubscribe its observers. A run
        whose end (``ended``) is still queued after 30 s keeps its subscription until the
        record has it: the record is written late, not lost."""
        if self.host.observers.drain(run_id):
            unsubscribe()
        elif ended:
            logger.warning(
                "run %s: its observers did not catch up within 30 s; its record is written "
                "when they do",
                run_id,
            )
        else:
            unsubscribe()


# -- helpers ---------------------------------------------------------------------


class _Drive:
    """One run's step (``runtime.cycle``): what the loop does per tick, run by
    whichever thread holds the cycle's lock — a worker that just finished an
    attempt, or the run's own thread when a timer is due.

    A step records finished attempts, re-queues due retries, fails attempts past
    their deadline, applies the run's deadline, control requests and heartbeat,
    starts ready tasks up to ``max_parallel`` and group-commits the batch once its
    oldest change is ``commit_interval`` old (module docstring: causal order)."""

    def __init__(
        self,
        runner: Runner,
        loop: _Loop,
        sched: Scheduler,
        control: RunControl,
        timeouts: Mapping[str, float | None],
        batch: Batch,
        now: float,
        *,
        pooled: bool,
    ) -> None:
        self.loop = loop
        self.sched = sched
        self.control = control
        self.timeouts = timeouts
        self.batch = batch
        self.executor: Executor
        self.parallel = runner.parallel
        self.interval = runner.settings.commit_interval
        self.renew_every = runner.lease.renew_every
        self.committer = loop.committer
        self.deadlines: list[tuple[float, str, int]] = []  # (deadline, task id, attempt)
        self.run_timeout = runner.pipeline.run_timeout_seconds
        self.run_deadline = now + self.run_timeout if self.run_timeout else None
        self.last_heartbeat = now
        self.dirty_since: float | None = None
        self.now = now
        self.interrupt = runner.interrupt
        self.interrupted = False  # the run was cancelled by ``interrupt`` (Ctrl-C)
        self.pokes: Pokes | None = None  # the run's sensor checks, when it has sensors
        self.pools = bind_run(  # global pool slots: taken in the store (runtime.pools)
            runner.admission if sched.uses_admission and pooled else None,
            sched,
            run_id=loop.run_id,
            epoch=loop.epoch,
            store=runner.store,
            clock=runner.clock,
        )

    def submit(self, job: Job) -> None:
        self.executor.submit(job)

    def stop_cancelled(self) -> None:
        """Stop the running attempts the engine cancelled (fail_fast, cancel, abort)."""
        to_stop = self.loop.to_stop
        while to_stop:
            self.executor.cancel(to_stop.pop())

    def step(self, results: list[AttemptResult], now: float) -> tuple[list[Job], float]:
        loop, sched, batch = self.loop, self.sched, self.batch
        self.now = now = max(now, self.now)
        for result in results:
            loop.finish(sched, result, now, batch)
        pokes = self.pokes
        if pokes is not None:  # sensors: record the checks made, start those due
            for tid, found in pokes.take():
                loop.sensed(sched, tid, found, now, batch)
        due = sched.next_due()
        if due is not None and due <= now:
            loop.record(sched.due(now), batch)
        if pokes is not None and not self.control.paused:  # a paused run checks none
            for tid in sched.pokes_due(now):
                pokes.submit(tid)
        if self.deadlines and self.deadlines[0][0] <= now:
            self._time_out(now)
        if self.run_deadline is not None and now >= self.run_deadline:
            self.run_deadline = None
            loop.record(
                sched.abort(
                    now,
                    f"run timed out after {self.run_timeout:g}s (run_timeout_seconds); "
                    "running attempts were stopped and the rest cancelled",
                ),
                batch,
            )
        interrupt = self.interrupt
        if interrupt is not None and interrupt.requested and not self.interrupted:
            self.interrupted = True
            loop.record(sched.cancel(now, interrupt.reason), batch)
        control = self.control
        if now >= control.next_poll:
            control.poll(sched, now, batch, loop.record)
        renew = now - self.last_heartbeat >= self.renew_every
        if renew:  # committed now, whatever commit_interval says: renews the lease
            batch.runs.append(RunUpdate(loop.run_id, heartbeat_at=now))
            self.last_heartbeat = now
        # No new attempt past the lease expiry the last commit confirmed: another
        # process may have taken the run over meanwhile (a renewal moves it on).
        jobs = self._dispatch(now) if sched.has_ready and now < self.committer.lease_until else []
        self.stop_cancelled()
        if batch:
            # Group commit: changes wait at most commit_interval; batches keep the
            # order of events, so causal order holds (module docstring).
            if self.dirty_since is None:
                self.dirty_since = now
            if now - self.dirty_since >= self.interval or sched.finished or renew:
                loop.commit(batch, now)
                self.batch = Batch()
                self.dirty_since = None
        return jobs, self.look(now)

    def look(self, now: float) -> float:
        """When the run's thread must look next (``-inf``: the run finished).

        Raises ``RuntimeError`` (a bug) when nothing runs, waits or is due but the
        run is not finished."""
        sched = self.sched
        if sched.finished:
            return -math.inf
        next_due = sched.next_due(pokes=not self.control.paused)
        if (
            sched.running == 0
            and next_due is None
            and not sched.awaiting_approval
            and not sched.sensing
            and not sched.has_ready
        ):
            raise RuntimeError(
                f"run {self.loop.run_id}: no task running, ready or due, "
                f"but not finished: {sched.states()}"
            )
        look = now + _MAX_WAIT
        for due in (
            next_due,
            self.deadlines[0][0] if self.deadlines else None,
            self.dirty_since + self.interval if self.dirty_since is not None else None,
            self.control.next_poll,
            self.run_deadline,
            self.last_heartbeat + self.renew_every,
        ):
            if due is not None and due < look:
                look = due
        if self.pools is not None and self.pools.waiting():
            # A slot held by another process frees without waking this run: ask again.
            look = min(look, now + POOL_POLL_SECONDS)
        return look

    def _dispatch(self, now: float) -> list[Job]:
        loop, sched, batch = self.loop, self.sched, self.batch
        jobs: list[Job] = []
        if self.control.paused:
            sched.withdraw()  # hold nothing back for a paused run
            return jobs
        guarded = loop.guard.guarded
        while True:
            free = self.parallel - sched.running
            if free <= 0 or not sched.has_ready:
                return jobs
            loop.shortcuts = False
            for t in sched.pop_ready(free, now):
                if self.pools is not None:  # a pooled start is stamped after its slot
                    t = t._replace(at=self.pools.started_at(t.task_id, t.at))
                loop.record([t], batch)
                if guarded and t.task_id in guarded and loop.short_circuit(sched, t, batch):
                    continue  # a cache hit or an open circuit: it does not run
                timeout = self.timeouts[t.task_id]
                deadline = now + timeout if timeout else None
                if deadline is not None:
                    heapq.heappush(self.deadlines, (deadline, t.task_id, t.attempt))
                jobs.append(loop.job(t.task_id, t.attempt, deadline))
            if not loop.shortcuts:  # cache hits may have made more tasks ready
                return jobs

    def _time_out(self, now: float) -> None:
        loop, sched = self.loop, self.sched
        while self.deadlines and self.deadlines[0][0] <= now:
            _, tid, attempt = heapq.heappop(self.deadlines)
            if sched.state(tid) is _S.RUNNING and sched.attempt(tid) == attempt:
                self.executor.cancel((loop.run_id, tid, attempt))
                loop.fail(
                    sched,
                    tid,
                    attempt,
                    now,
                    f"timed out after {self.timeouts[tid]:g}s (timeout_seconds); "
                    "the attempt was stopped",
                    TIMEOUT_TYPES,
                    self.batch,
                )


@dataclass(slots=True)
class _Row:
    state: str
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    attempt_started: float | None = None
    note: str | None = None  # "cached" or "fallback"
    queued_at: float | None = None  # when it last became ready
    # The running attempt's grant, repeated in its final record (one whole record
    # per attempt in a commit: the store merges nothing).
    request_json: str | None = None
    gpu_devices: str | None = None


class _Loop:
    """The per-run bookkeeping the loop needs: rows, outputs, jobs, commits."""

    def __init__(
        self,
        runner: Runner,
        run_id: str,
        tasks: Mapping[str, Any],
        params: dict[str, Any],
        restored: dict[str, OutputRef],
        lease: Fence,
    ) -> None:
        self.runner = runner
        self.run_id = run_id
        self.epoch = lease.epoch  # every commit carries it (fencing)
        self.lease_seconds = runner.lease.seconds
        self.tasks = tasks
        self.sched: Scheduler | None = None
        self.params = params
        self.rows = {tid: _Row(_S.PENDING) for tid in tasks}
        self.refs: dict[str, OutputRef] = dict(restored)
        self.values: dict[str, Any] = {}
        self.tracebacks: dict[tuple[str, int], str] = {}
        self.usage: dict[tuple[str, int], Usage] = {}  # measured, until the attempt's row
        self.counted: dict[tuple[str, int], tuple[int | None, int | None]] = {}  # table rows
        self.task_rows: dict[str, tuple[int | None, int | None]] = {}  # last attempt's rows
        self.restored = frozenset(restored)  # succeeded in an earlier process (resume)
        self.dirty: set[str] = set()
        self.to_stop: list[tuple[str, str, int]] = []  # attempts cancelled by the engine
        self.gpus: dict[str, float] = {}  # GPUs held by running attempts (GPU seconds)
        self.fallback_error: str | None = None
        self.failures: dict[str, str] = {}  # task -> error, for TaskContext.failures
        self.skipping: dict[str, str] = {}  # task -> why its success skips its downstream
        self.metrics: dict[tuple[str, int], dict[str, float]] = {}  # recorded, by attempt
        self.shortcuts = False  # a task was decided at dispatch this tick (short_circuit)
        self.in_thread = runner.host.executor_pool(runner.executor_name).shares_memory
        # Mapped tasks (``map_over``): their success stores their children's outputs.
        self.mapped = frozenset(tid for tid, t in tasks.items() if t.map_over is not None)
        settings = runner.settings
        self.logs_dir = settings.logs_dir.absolute()
        self.artifacts_root = settings.artifacts_root
        self.inline = settings.inline_output_bytes
        self.observers = runner.host.observers
        self.committer = Committer(runner.store, lease_until=lease.expires_at or 0.0)
        # Where the run's tasks start and relative paths resolve (operators/paths.py).
        self.pipeline_dir = _pipeline_dir(runner.pipeline)
        # ``${schedule.start|end|name}`` and their STAGEFLOW_SCHEDULE_* variables
        # (``Runner._schedule_values``; set before the first task starts).
        self.schedule: dict[str, str] | None = None
        self.schedule_env: dict[str, str] = {}
        self.guard = Resilience(
            runner.pipeline,
            runner.store,
            run_id,
            params,
            use_cache=runner.use_cache,
            logs_dir=self.logs_dir,
            pipeline_dir=self.pipeline_dir,
        )

    def reset_for_resume(
        self, rows: Sequence[TaskRunRecord], now: float, batch: Batch, why: str = "reset by resume"
    ) -> None:
        for r in rows:
            row = self.rows.get(r.task_id)
            if row is None:
                continue
            row.attempts = r.attempts
            if r.task_id in self.refs:
                row.state, row.started_at, row.ended_at = _S.SUCCESS, r.started_at, r.ended_at
                row.error, row.note = r.error, r.note
                if r.note in SKIPPING_NOTES:  # decided again at start (Scheduler)
                    self.skipping[r.task_id] = r.error or "no reason recorded"
                continue
            # A waiting sensor keeps when it began to wait (its timeout counts from
            # then: ``Scheduler(sensing_since=...)``), also across another crash.
            row.started_at = r.started_at if r.state == _S.SENSING else None
            if r.state != _S.PENDING:
                batch.events.append(
                    EventRecord(
                        self.run_id,
                        r.task_id,
                        r.state,
                        _S.PENDING,
                        now,
                        r.attempts,
                        why,
                    )
                )
                self.dirty.add(r.task_id)

    def record(self, transitions: list[Transition], batch: Batch) -> None:
        """Mirror ``transitions`` in the rows and add their events and attempt
        records to ``batch`` (the run loop's hottest path: a few per task)."""
        run_id, rows, events = self.run_id, self.rows, batch.events
        sched, observers = self.sched, self.observers
        admission = sched is not None and sched.uses_admission
        info = logger.isEnabledFor(logging.INFO)
        for t in transitions:
            tid, old, new = t.task_id, t.old, t.new
            row = rows.get(tid)
            if row is None:  # a child of a mapped task, created at run time
                row = rows[tid] = _Row(_S.PENDING)
            if new is _S.QUEUED:
                row.queued_at = t.at
            elif new is _S.RUNNING or new is _S.SENSING:
                row.attempts = t.attempt
                row.attempt_started = t.at
                if row.started_at is None:
                    row.started_at = t.at
                row.error = None
                grant = sched.grant(tid) if admission and sched is not None else None
                row.request_json = request_json(grant)
                row.gpu_devices = (
                    ",".join(map(str, grant.gpu_devices))
                    if grant is not None and grant.gpu_devices
                    else None
                )
                batch.attempts.append(
                    AttemptRecord(
                        run_id,
                        tid,
                        t.attempt,
                        new,
                        t.at,
                        queued_at=row.queued_at,
                        request_json=row.request_json,
                        gpu_devices=row.gpu_devices,
                    )
                )
            elif old is _S.RUNNING or old is _S.SENSING:
                if new is _S.SUCCESS and tid in self.mapped:
                    self._store_mapped_output(tid, t.attempt, batch)
                    row.note, row.error = "mapped", t.message  # "4 of 5 elements succeeded"
                elif old is _S.SENSING:
                    row.error = t.message  # what the sensor found (or why it timed out)
                elif new is _S.CANCELLED:
                    self.to_stop.append((run_id, tid, t.attempt))
                detail = self.tracebacks.pop((tid, t.attempt), None) if self.tracebacks else None
                error = t.message if detail is None else f"{t.message}\n\n{detail}"
                used = self.usage.pop((tid, t.attempt), None) if self.usage else None
                gpus = self.gpus.pop(tid, 0.0) if self.gpus else 0.0
                started = row.attempt_started
                rows_in, rows_out = self.task_rows[tid] = (
                    self.counted.pop((tid, t.attempt), (None, None))
                    if self.counted
                    else (None, None)
                )
                batch.attempts.append(
                    AttemptRecord(
                        run_id,
                        tid,
                        t.attempt,
                        new,
                        started,
                        t.at,
                        error,
                        row.queued_at,
                        row.request_json,
                        row.gpu_devices,
                        used.cpu_seconds if used is not None else None,
                        used.peak_rss_mb if used is not None else None,
                        gpus * (t.at - started) if gpus and started else None,
                        rows_in,
                        rows_out,
                    )
                )
            if new in FINAL_TASK_STATES:
                row.ended_at = t.at
            if new in _WHY_STATES or new is _S.SENSING:  # why it failed, did not run, waits
                row.error = t.message
                if new is _S.FAILED:
                    self.failures[tid] = t.message or "failed"
            row.state = new
            events.append(EventRecord(run_id, tid, old, new, t.at, t.attempt, t.message))
            self.dirty.add(tid)
            if new is _S.UP_FOR_RETRY:
                logger.warning(
                    "run %s task %s attempt %d failed, retry due in %.1fs: %s",
                    run_id,
                    tid,
                    t.attempt,
                    (t.due_at or t.at) - t.at,
                    t.message,
                )
            elif new is _S.AWAITING_APPROVAL:
                logger.warning(
                    "run %s task %s awaits approval: %s; decide with `stageflow approve %s %s` "
                    "(or --reject)",
                    run_id,
                    tid,
                    t.message,
                    run_id,
                    tid,
                )
            elif info:
                logger.info("run %s task %s: %s -> %s", run_id, tid, old, new)
            if observers:
                observers.publish(RunEvent("task", run_id, transition=t))

    def finish(self, sched: Scheduler, result: AttemptResult, now: float, batch: Batch) -> None:
        tid = result.task_id
        if result.usage is not None:
            self.usage[(tid, result.attempt)] = result.usage
        if result.rows_in is not None or result.rows_out is not None:
            self.counted[(tid, result.attempt)] = (result.rows_in, result.rows_out)
        if result.ok and result.output is not None:
            if sched.state(tid) is not _S.RUNNING or sched.attempt(tid) != result.attempt:
                return  # a late result of a timed-out or cancelled attempt
            self.refs[tid] = result.output
            batch.outputs.append(result.output)
            if self.in_thread:
                self.values[tid] = result.value
            if tid in self.guard.guarded:
                entry = self.guard.cache_entry(self.tasks[tid], result.output, now)
                if entry is not None:
                    batch.cache.append(entry)  # committed with the success, atomically
                self.guard.circuit_result(tid, result.attempt, True, now)
        elif not result.ok:
            if result.traceback:
                self.tracebacks[(tid, result.attempt)] = result.traceback
            self.fail(sched, tid, result.attempt, now, result.error, result.error_types, batch)
            return
        skip = result.skip_downstream
        self.record(
            sched.record(tid, result.attempt, result.ok, now, result.error, skip_downstream=skip),
            batch,
        )
        if skip is not None and sched.state(tid) is _S.SUCCESS:
            row = self.rows[tid]
            row.note, row.error = SKIPPED_DOWNSTREAM, skip
            self.skipping[tid] = skip

    def sensed(self, sched: Scheduler, tid: str, found: Poke, now: float, batch: Batch) -> None:
        """A sensor's check: record it in the engine; a met one's output (what it
        found) is stored first, in the same batch as its success (durability rule)."""
        if sched.state(tid) is not _S.SENSING:
            return  # cancelled meanwhile: a late check
        met, message = found.met, found.message or None
        if met:
            try:
                ref = store_output(
                    found.value,
                    run_id=self.run_id,
                    task_id=tid,
                    attempt=sched.attempt(tid),
                    artifacts=self.runner.artifacts,
                    inline_limit=self.inline,
                )
            except Exception as exc:  # e.g. the artifact store is unreachable: check again
                met, message = False, f"{message}, but its output was not stored: {exc}"
            else:
                self.refs[tid] = ref
                self.values[tid] = found.value
                batch.outputs.append(ref)
        self.record(sched.sensed(tid, met, now, message), batch)

    def fail(
        self,
        sched: Scheduler,
        tid: str,
        attempt: int,
        now: float,
        error: str | None,
        types: tuple[str, ...],
        batch: Batch,
    ) -> None:
        """An attempt failed (raised, timed out, its worker died, or its circuit is
        open): count it in its circuit, classify it (``retry_on``/``fatal_on``) and,
        when it is the task's final failure, use the task's fallback if it has one."""
        if sched.state(tid) is not _S.RUNNING or sched.attempt(tid) != attempt:
            return  # a late report of a timed-out or cancelled attempt
        task = self.tasks[tid]
        guard = self.guard
        if tid in guard.guarded:
            guard.circuit_result(tid, attempt, False, now)
        retryable, fatal = guard.classify(task, types)
        if fatal:
            error = f"{error} (fatal: matches fatal_on, the run stops)"
        elif NOT_RETRYABLE in types:
            if sched.will_retry(tid, attempt):  # say so only where a retry was due
                error = f"{error} (not retried: another attempt cannot change it)"
        elif not retryable:
            error = f"{error} (not retried: not in retry_on)"
        # A fatal error stops the run: no fallback for it.
        if (
            task.fallback is not None
            and not fatal
            and not sched.will_retry(tid, attempt, retryable=retryable)
        ):
            message = self._use_fallback(task, tid, attempt, error or "the task failed", batch)
            if message is not None:
                self.record(sched.record(tid, attempt, True, now, message), batch)
                row = self.rows[tid]
                row.note, row.error = "fallback", message
                return
            error = self.fallback_error
        self.record(
            sched.record(tid, attempt, False, now, error, retryable=retryable, fatal=fatal), batch
        )

    def short_circuit(self, sched: Scheduler, t: Transition, batch: Batch) -> bool:
        """Decide a task at dispatch without running it: a cache hit ends it
        ``success`` with the cached output, the metrics its producing attempt
        recorded and its decision to skip its downstream (``runtime.cache``); an
        open circuit fails the attempt. Returns False when the task must run."""
        tid, now = t.task_id, t.at
        task = self.tasks[tid]
        inputs = [self.refs.get(u) for u in task.upstream]
        shortcut = self.guard.at_dispatch(
            task,
            t.attempt,
            task_parameters(task.parameters, self.params, self.schedule),
            inputs,
            now,
        )
        if shortcut is None:
            return False
        self.shortcuts = True
        if shortcut.output is None:
            self.fail(sched, tid, t.attempt, now, shortcut.message, shortcut.error_types, batch)
            return True
        self.refs[tid] = shortcut.output
        batch.outputs.append(shortcut.output)
        self.metrics[(tid, t.attempt)] = dict(shortcut.metrics)  # read before the success
        skip = shortcut.skip_downstream
        self.record(
            sched.record(tid, t.attempt, True, now, shortcut.message, skip_downstream=skip),
            batch,
        )
        row = self.rows[tid]
        if skip is not None and sched.state(tid) is _S.SUCCESS:  # as ``finish`` records it
            row.note, row.error = CACHED_SKIPPED_DOWNSTREAM, skip
            self.skipping[tid] = skip
        else:
            row.note = "cached"
        return True

    def _use_fallback(
        self, task: Any, tid: str, attempt: int, error: str, batch: Batch
    ) -> str | None:
        """Store the fallback output of ``task`` as task run ``tid``'s (``id[k]`` for a
        mapped task's child); return the success message, or ``None`` with
        ``self.fallback_error`` saying why the fallback failed too."""
        try:
            value = self.guard.fallback_value(
                task,
                attempt,
                task_parameters(task.parameters, self.params, self.schedule),
                lambda: {u: self._value(u) for u in task.upstream},
                error,
            )
            ref = store_output(
                value,
                run_id=self.run_id,
                task_id=tid,
                attempt=attempt,
                artifacts=self.runner.artifacts,
                inline_limit=self.inline,
                fallback=True,  # not attempt-N: that attempt may still be running (a thread)
            )
        except Exception as exc:  # the fallback's own failure: reported with the task's
            self.fallback_error = f"{error}; the fallback failed too: {type(exc).__name__}: {exc}"
            return None
        self.refs[tid] = ref
        batch.outputs.append(ref)
        if self.in_thread:
            self.values[tid] = value
        logger.warning("run %s task %s failed; its fallback output is used", self.run_id, tid)
        first = error.splitlines()[0] if error else "the task failed"
        return f"fallback used: the task failed: {first}"

    def job(self, task_id: str, attempt: int, deadline: float | None) -> Job:
        task = self.tasks[task_id]
        job = Job(
            run_id=self.run_id,
            task=task,
            attempt=attempt,
            parameters=task_parameters(task.parameters, self.params, self.schedule),
            run_params=self.params,
            artifacts_root=self.artifacts_root,
            logs_dir=self.logs_dir,
            inline_limit=self.inline,
            deadline=deadline,
            pipeline_dir=self.pipeline_dir,
            pipeline=self.runner.pipeline.name,
        )
        if self.failures:
            job.failures = dict(self.failures)
        if task_id != task.id:  # a child of a mapped task: its own id, one element
            job.task_id = task_id
        job.env = dict(self.schedule_env)
        grant = self.sched.grant(task_id) if self.sched is not None else None
        if grant is not None:
            job.env.update(attempt_env(grant))
            if grant.request.gpu:
                self.gpus[task_id] = grant.request.gpu
            if grant.request.memory_gb and self.runner.pipeline.enforce_limits_of(task):
                job.memory_limit_gb = grant.request.memory_gb
        element = self._element(task_id, task)
        if self.in_thread:
            job.inputs = {u: self._value(u) for u in task.upstream}
        else:
            job.input_refs = {
                u: self.refs[u] for u in task.upstream if u in self.refs and u != task.map_over
            }
        if element is not _NO_ELEMENT:
            job.inputs[task.map_over or ""] = element
        if task.inputs:
            self._bind_metrics(task.inputs, job.inputs)
        return job

    def _bind_metrics(self, bindings: Mapping[str, str], inputs: dict[str, Any]) -> None:
        """``inputs: {drifted: check.metrics.drifted_columns}``: the metric ``check``
        recorded (``None`` when it recorded none by that name), or all of them."""
        for source in bindings.values():
            task_id, metric = input_source(source)
            if metric is None:
                continue
            recorded = self._recorded_metrics(task_id)
            inputs[source] = dict(recorded) if metric == "" else recorded.get(metric)

    # -- dynamic fan-out (map_over) ---------------------------------------------------

    def map_size(self, task_id: str) -> int | str:
        """How many elements the mapped task's input has, or why it has none."""
        task = self.tasks[task_id]
        source = task.map_over or ""
        value = self._output_so_far(source)
        if not isinstance(value, list | tuple):
            return (
                f"map_over: the output of '{source}' is "
                f"{'missing' if value is None else type(value).__name__}, not a list; "
                "a mapped task runs once per element of a list"
            )
        return len(value)

    def _output_so_far(self, task_id: str) -> Any:
        """``task_id``'s output, ``None`` when it has none. A mapped task that has
        just succeeded has no stored output yet: the engine expands (or decides
        the condition of) its downstream in the same step that ends it, before
        ``record`` stores the output; here it is built from its children."""
        if task_id in self.refs:
            return self._value(task_id)
        sched = self.sched
        if self._is_mapped(task_id) and sched is not None and sched.state(task_id) is _S.SUCCESS:
            return [self._value(c) for c, state in sched.children(task_id) if state is _S.SUCCESS]
        return None

    def _element(self, task_id: str, task: Any) -> Any:
        if task_id == task.id or self.sched is None:
            return _NO_ELEMENT
        found = self.sched.parent(task_id)
        if found is None:
            return _NO_ELEMENT
        return self._value(task.map_over)[found[1]]

    def _is_mapped(self, task_id: str) -> bool:
        return task_id in self.mapped  # a mapped task itself, not one of its children

    def _store_mapped_output(self, task_id: str, attempt: int, batch: Batch) -> None:
        """A mapped task's output: its successful children's outputs, in element
        order; stored before its success is committed, like any output."""
        assert self.sched is not None
        outputs = [
            self._value(child)
            for child, state in self.sched.children(task_id)
            if state is _S.SUCCESS
        ]
        ref = store_output(
            outputs,
            run_id=self.run_id,
            task_id=task_id,
            attempt=attempt,  # the mapped task's own: no attempt of it runs code
            artifacts=self.runner.artifacts,
            inline_limit=self.inline,
        )
        self.refs[task_id] = ref
        self.values[task_id] = outputs
        batch.outputs.append(ref)

    def condition(self, task_id: str) -> bool | str:
        """Evaluate ``task_id``'s ``when:``: True/False, or why it cannot be evaluated."""
        from stageflow.spec.expr import ExpressionError, parse_expression  # conditions only

        task = self.tasks[task_id]
        try:
            expression = parse_expression(task.when or "", task.all_upstream)
            outputs = {
                r.name: self._output_so_far(r.name)
                for r in expression.references
                if r.kind == "task" and (r.name in self.refs or self._is_mapped(r.name))
            }
            metrics = {
                r.name: self._recorded_metrics(r.name)
                for r in expression.references
                if r.kind == "task" and r.path[:1] == ("metrics",)
            }
            return bool(expression.evaluate(self.params, outputs, metrics))
        except ExpressionError as exc:
            return f"condition could not be evaluated: {exc}"
        except Exception as exc:  # an output that has no truth value (an array), or fails to load
            return f"condition could not be evaluated: {type(exc).__name__}: {exc}"

    def _recorded_metrics(self, task_id: str) -> dict[str, float]:
        """The metrics ``task_id``'s last attempt recorded (``operators.metadata``)."""
        attempt = self.rows[task_id].attempts if task_id in self.rows else 0
        if attempt < 1:
            return {}
        key = (task_id, attempt)  # an ended attempt's file no longer changes: read once
        if key not in self.metrics:
            found = read_metadata(self.logs_dir, self.run_id, task_id, attempt)["metrics"]
            self.metrics[key] = dict(found)
        return self.metrics[key]

    def branch_choice(self, task_id: str) -> list[str]:
        """The downstream ids a branch task's output names (``None``: none of them)."""
        value = self._value(task_id)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, list | tuple | set) and all(isinstance(v, str) for v in value):
            return list(value)
        return [repr(value)[:80]]  # not ids: the engine fails the branch task, naming it

    def _value(self, task_id: str) -> Any:
        if task_id not in self.values:
            ref = self.refs.get(task_id)
            self.values[task_id] = (
                load_output(ref, self.runner.artifacts) if ref is not None else None
            )
        return self.values[task_id]

    def commit(self, batch: Batch, now: float, *, final: bool = False) -> None:
        """Queue ``batch`` for commit, fenced by this process's lease epoch and
        renewing the lease to ``now`` + its length (``final``: clearing it)."""
        expires = None if final else now + self.lease_seconds
        batch.fences[self.run_id] = Fence(self.epoch, now, expires)
        for tid in self.dirty:
            row = self.rows[tid]
            batch.task_runs.append(
                TaskRunRecord(
                    self.run_id,
                    tid,
                    row.state,
                    row.attempts,
                    row.started_at,
                    row.ended_at,
                    row.error,
                    row.note,
                )
            )
        self.dirty.clear()
        self.committer.submit(batch)

    def result(self, state: str, started_at: float, ended_at: float) -> RunResult:
        tasks = {}
        task_rows = self.task_rows
        if self.restored:  # their attempts ran in an earlier process: rows from the store
            task_rows = {**rows_by_task(self.runner.store.attempts(self.run_id)), **task_rows}
        for tid, row in self.rows.items():
            output = self.values.get(tid)
            if tid not in self.values and tid in self.refs:  # e.g. cached, or process executor
                output = _OutputLoader(self.refs[tid], self.runner.artifacts)
            tasks[tid] = TaskResult(
                tid,
                row.state,
                row.attempts,
                row.started_at,
                row.ended_at,
                row.error,
                output,
                row.note,
                *task_rows.get(tid, (None, None)),
            )
        rows, pipeline = self.rows, self.runner.pipeline

        def path() -> list[str]:  # computed when first read (RunResult.critical_path)
            durations = {
                tid: (r.ended_at - r.started_at)
                for tid, r in rows.items()
                if r.started_at is not None and r.ended_at is not None
            }
            return critical_path(pipeline.upstream_map(), durations, default=0.0).tasks

        result = RunResult(self.run_id, pipeline.name, state, started_at, ended_at, tasks, path)
        for tid, task in tasks.items():
            if isinstance(task.output, _OutputLoader):
                task.output = task.output.load()
            result.tasks[tid] = task
        return result


@dataclass
class _OutputLoader:
    ref: OutputRef
    artifacts: ArtifactStore

    def load(self) -> Any:
        try:
            return load_output(self.ref, self.artifacts)
        except Exception:  # e.g. a class only importable in the worker: leave it stored
            return None


def resolve_settings(settings: Settings | None, home: Any, store_url: str | None) -> Settings:
    from dataclasses import replace

    settings = settings or load_settings()
    if home is not None:
        settings = replace(settings, home=Path(home))
    if store_url is not None:
        settings = replace(settings, database_url=store_url)
    return settings


def with_downstream(pipeline: Pipeline, task_id: str, run_id: str) -> set[str]:
    """``task_id`` and every task downstream of it (data or ordering edges)."""
    upstream = pipeline.upstream_map()
    if task_id not in upstream:
        from stageflow.spec.suggest import did_you_mean

        hint = did_you_mean(task_id, sorted(upstream))
        raise UsageError(
            f"--from {task_id}: run '{run_id}' has no task '{task_id}'"
            + (f"; did you mean '{hint}'?" if hint else ""),
            task=task_id,
            field="from",
        )
    below = downstream(upstream)
    found, work = {task_id}, [task_id]
    while work:
        for d in below[work.pop()]:
            if d not in found:
                found.add(d)
                work.append(d)
    return found


def _source_of(pipeline: Pipeline) -> str | None:
    return getattr(pipeline, "_source", None)


def _pipeline_dir(pipeline: Pipeline) -> str:
    """The folder the pipeline's tasks work in (``operators/paths.py``): its file's
    folder, else the current directory (a pipeline built and run in Python)."""
    source = _source_of(pipeline)
    return os.path.dirname(source) if source else os.getcwd()


_NO_ELEMENT = object()


class _ByTask(dict[str, Any]):
    """Per-task values where a mapped task's child ``id[k]`` reads its parent's."""

    def __missing__(self, key: str) -> Any:
        if key.endswith("]") and "[" in key:
            return self[key[: key.rindex("[")]]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default
