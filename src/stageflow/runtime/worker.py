"""A worker: a long-lived process that claims runs from the store's queue and runs them.

Policy. ``stageflow submit`` records a run as ``queued`` with no lease
(``Runner.prepare(hold=False)``). A worker polls the store every
``poll_seconds`` for runs it may claim (``Store.claimable_runs``: queued runs
nobody holds, and queued or running runs whose lease expired because their
owner went silent), in queue order (run ``priority``, then age), and runs up to
``concurrency`` of them at once, each on a thread of its own with its own store
connection, all admitted against ONE capacity (``engine.admission``: the
machine's CPU/memory/GPU and pools). Reading a candidate is not claiming it: the
run's thread claims it with the lease compare-and-set (``runtime.claim``), so of
several workers polling one store exactly one runs each run; the losers skip it.
A queued run starts fresh; a taken-over one resumes (its committed successes are
kept: the durability rule). A run whose pipeline cannot be loaded here (a module
this host lacks, a spec that no longer validates) is claimed and recorded
``failed`` with the reason, so no worker spins on it; one whose requests are
larger than this machine (``DoesNotFitHere``) is left for a bigger worker and not
polled again here for a while.

Draining (SIGTERM, Ctrl-C: ``drain``): the worker claims nothing more and waits
up to ``grace_seconds`` for its runs to end; a run still going then is handed
back to the queue (``Store.release_lease`` moves its epoch on, so this process
can commit nothing more to it, and expires its lease, so any worker takes it
over at once) and its attempts are stopped when its next commit is refused.

State: the runs in progress (id -> runner, thread), runs this worker could not
start recently (not polled again for a while), counters, the draining flag.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stageflow.engine.admission import Admission
from stageflow.engine.states import RunState
from stageflow.errors import (
    DoesNotFitHere,
    InvalidSpec,
    LeaseLost,
    RunOwned,
    StageflowError,
    UsageError,
)
from stageflow.runtime.claim import lease_terms, take_run
from stageflow.runtime.runner import (
    BACKFILL_LIMIT,
    EXECUTORS,
    Runner,
    RunStarted,
    reload_pipeline,
)
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import Batch, EventRecord, Fence, RunRecord, RunUpdate, Store

__all__ = ["Worker", "WorkerReport", "worker_owner"]

logger = logging.getLogger(__name__)

#: A run this worker could not start is not polled again for this long.
RETRY_LATER_SECONDS = 30.0


def worker_owner(name: str | None) -> str:
    """The lease owner of a worker: ``NAME (host:pid)``, unique per process even when
    two workers are given one name; ``host:pid`` without a name."""
    where = f"{socket.gethostname()}:{os.getpid()}"
    return f"{name} ({where})" if name else where


@dataclass
class WorkerReport:
    """What a worker did, for its last line and for tests."""

    started: int = 0
    finished: dict[str, str] = field(default_factory=dict)  # run id -> final state
    lost: list[str] = field(default_factory=list)  # taken over by another process
    handed_back: list[str] = field(default_factory=list)  # released when draining
    failed_to_start: dict[str, str] = field(default_factory=dict)  # run id -> why


@dataclass
class _Active:
    runner: Runner | None
    thread: threading.Thread


class Worker:
    """Claims queued runs from the store and runs them; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str | None = None,
        concurrency: int = 1,
        executor: str = "thread",
        poll_seconds: float = 0.05,
        grace_seconds: float = 30.0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise UsageError(
                f"--concurrency is {concurrency}; it must be at least 1", field="concurrency"
            )
        if executor not in EXECUTORS:
            raise UsageError(
                f"unknown executor '{executor}'; use one of: {', '.join(EXECUTORS)}",
                field="executor",
            )
        self.settings = settings
        self.owner = worker_owner(name)
        self.concurrency = concurrency
        self.executor = executor
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.report = WorkerReport()
        self._say = say or (lambda line: logger.info("%s", line))
        self._admission: Admission | None = None
        self._active: dict[str, _Active] = {}
        self._later: dict[str, float] = {}  # run id -> when it may be polled again
        self._lock = threading.Lock()
        self._draining = False
        self._wake = threading.Event()

    # -- the loop ---------------------------------------------------------------------

    def serve(self, *, max_runs: int | None = None, idle_exit: float | None = None) -> WorkerReport:
        """Claim and run runs until ``drain`` (or ``max_runs`` started and ended, or
        nothing to do for ``idle_exit`` seconds); return what was done."""
        store = open_store(self.settings.database_url, self.settings.home)
        idle_since = time.monotonic()
        try:
            while not self._draining:
                self._reap()
                if max_runs is not None and self.report.started >= max_runs:
                    if not self._active:
                        break
                elif len(self._active) < self.concurrency:
                    self._poll(store)
                if self._active:
                    idle_since = time.monotonic()
                elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                    break
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
            self._finish_draining(store)
        finally:
            store.close()
        return self.report

    def drain(self) -> None:
        """Stop claiming; let the runs in progress end (module docstring). Safe to call
        from a signal handler: it only sets a flag the loop reads every poll."""
        self._draining = True

    def _poll(self, store: Store) -> bool:
        """Start threads for claimable runs up to the free slots; True if any started
        (a thread that then loses the claim to another worker ends at once)."""
        now = time.time()
        free = self.concurrency - len(self._active)
        started = False
        # Candidates past the ones this worker runs or skips, so those do not hide them.
        limit = free + len(self._active) + len(self._later) + 4
        for run in store.claimable_runs(now, limit):
            if free <= 0:
                break
            if run.run_id in self._active or self._later.get(run.run_id, 0.0) > now:
                continue
            thread = threading.Thread(
                target=self._run_one, args=(run,), name=f"stageflow-run-{run.run_id}", daemon=True
            )
            with self._lock:
                self._active[run.run_id] = _Active(None, thread)
            thread.start()
            free -= 1
            started = True
        return started

    def _reap(self) -> None:
        with self._lock:
            done = [run_id for run_id, a in self._active.items() if not a.thread.is_alive()]
            for run_id in done:
                del self._active[run_id]
        now = time.time()
        # A copy (atomic under the GIL): run threads add to it meanwhile.
        for run_id in [r for r, t in self._later.copy().items() if t <= now]:
            self._later.pop(run_id, None)

    # -- one run --------------------------------------------------------------------------

    def _run_one(self, run: RunRecord) -> None:
        store = open_store(self.settings.database_url, self.settings.home)
        try:
            try:
                record = store.get_pipeline(run.pipeline, run.pipeline_version)
                pipeline = reload_pipeline(record, run)
                runner = Runner(
                    pipeline,
                    store=store,
                    settings=self.settings,
                    executor=self.executor,
                    admission=self._shared_admission(),
                    owner=self.owner,
                )
            except StageflowError as exc:
                self._fail_unloadable(store, run, exc)
                return
            with self._lock:
                if run.run_id in self._active:
                    self._active[run.run_id].runner = runner
            fresh = run.state == RunState.QUEUED and run.lease_epoch == 0

            def claimed(info: RunStarted) -> None:  # said only once the claim is won
                with self._lock:
                    self.report.started += 1
                how = (
                    "started"
                    if fresh
                    else f"taking it over from {run.lease_owner or 'a process that is gone'}"
                )
                self._say(f"run {run.run_id} of pipeline '{run.pipeline}': {how}")

            runner.on_start = claimed
            try:
                if fresh:
                    result = runner.start_queued(run)
                else:
                    result = runner.resume(run, reason=f"taken over by worker {self.owner}")
            except RunOwned:
                logger.debug("run %s: another process claimed it first", run.run_id)
                return
            except DoesNotFitHere as exc:  # fine, but too big for this worker: leave it
                self._later[run.run_id] = time.time() + RETRY_LATER_SECONDS
                first = exc.problems[0].render() if exc.problems else str(exc)
                self._say(
                    f"run {run.run_id}: left for a bigger worker; it does not fit this one: {first}"
                )
                return
            except InvalidSpec as exc:  # planned before any claim: it no longer validates
                self._fail_unloadable(store, run, exc)
                return
            except LeaseLost as exc:
                self.report.lost.append(run.run_id)
                self._say(f"run {run.run_id}: {exc}")
                return
            except StageflowError as exc:  # its parameters no longer fit, the store failed
                self.report.failed_to_start[run.run_id] = str(exc)
                self._later[run.run_id] = time.time() + RETRY_LATER_SECONDS
                self._say(f"run {run.run_id}: could not run it here: {exc}")
                return
            self.report.finished[run.run_id] = str(result.state)
            self._say(f"run {run.run_id} of pipeline '{run.pipeline}': {result.state}")
        except Exception:  # a bug: the run keeps its lease until it expires
            logger.exception("run %s: the worker failed while running it", run.run_id)
            self._later[run.run_id] = time.time() + RETRY_LATER_SECONDS
        finally:
            store.close(wait=False)
            self._wake.set()

    def _fail_unloadable(self, store: Store, run: RunRecord, exc: StageflowError) -> None:
        """Record a run whose pipeline cannot be loaded here as ``failed``, claimed
        first (compare-and-set) so that only one worker does it."""
        now = time.time()
        message = f"worker {self.owner} could not load or plan the run's pipeline: {exc}"
        try:
            epoch = take_run(
                store, run, now=now, terms=lease_terms(self.settings), owner=self.owner
            )
        except RunOwned:
            return
        batch = Batch()
        batch.runs.append(
            RunUpdate(run.run_id, state=RunState.FAILED, ended_at=now, heartbeat_at=now)
        )
        batch.events.append(
            EventRecord(run.run_id, None, run.state, RunState.FAILED, now, message=message)
        )
        batch.fences[run.run_id] = Fence(epoch, now, None)
        store.commit(batch)
        self.report.failed_to_start[run.run_id] = message
        self._say(f"run {run.run_id}: failed: {message}")

    def _shared_admission(self) -> Admission:
        with self._lock:
            if self._admission is None:
                from stageflow.runtime.resources import detect_capacity

                self._admission = Admission(
                    detect_capacity(self.settings.home),
                    backfill_limit=BACKFILL_LIMIT,
                    lock=threading.RLock(),
                )
            return self._admission

    # -- draining ---------------------------------------------------------------------------

    def _finish_draining(self, store: Store) -> None:
        """Wait up to the grace period for the runs in progress, then hand the rest
        back to the queue and wait (bounded) for their threads to stop."""
        deadline = time.monotonic() + self.grace_seconds
        while self._active and time.monotonic() < deadline:
            self._wake.wait(0.05)
            self._wake.clear()
            self._reap()
        with self._lock:
            left = dict(self._active)
        now = time.time()
        for run_id, active in left.items():
            runner = active.runner
            if runner is None or not runner.epoch:
                continue
            if store.release_lease(run_id, runner.epoch, now):
                self.report.handed_back.append(run_id)
                self._say(f"run {run_id}: handed back to the queue (draining)")
        for active in left.values():
            active.thread.join(10.0)
