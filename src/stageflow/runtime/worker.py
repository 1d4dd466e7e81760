"""A worker: a long-lived process that claims runs from the store's queue and runs them.

Policy. ``stageflow submit`` records a run as ``queued`` with no lease
(``Runner.prepare(hold=False)``). A worker polls the store every
``poll_seconds`` and, while it has free slots, claims the next run in queue order
(run ``priority``, then age) with ``Store.claim_next``: one transaction that picks
a claimable run (queued and nobody holds it, or queued/running with an expired
lease: its owner went silent) and takes its lease, so of several workers on one
store each run goes to exactly one. It runs up to ``concurrency`` runs at once,
each on a thread of its own with its own store connection, all admitted against
ONE capacity (``engine.admission``: the machine's CPU/memory/GPU and pools); the
run's thread starts it under the epoch already won (it claims nothing again). A
queued run starts fresh; a taken-over one resumes (its committed successes are
kept: the durability rule). A run whose pipeline cannot be loaded here (a module
this host lacks, a spec that no longer validates) is recorded ``failed`` with the
reason, so no worker spins on it; one whose requests are larger than this machine
(``DoesNotFitHere``) is handed back at once (``Store.release_lease``: another
worker may take it now) and not claimed here again for a while.

While it serves, the worker also fires the store's schedules (``schedules``, on by
default: ``runtime.schedule_loop``, on a thread of its own), and records itself in
the store (``Store.register_worker``: its owner name, host, capacity and
concurrency), renewing that record as often as a lease (``LeaseTerms.renew_every``)
and removing it when it stops. The service's metrics read the capacity of the live
workers from there, on any host.

A store that stops answering (``StoreError`` while polling: a lost connection, a
locked file) does not stop the worker: it tries again with backoff
(``committer.retry_delay``), one line per try, and says when the store answers
again; its runs meanwhile go on, their commits retried by their committers until
their leases expire (``runtime.committer``).

Draining (SIGTERM, Ctrl-C: ``drain``): the worker claims nothing more and waits
up to ``grace_seconds`` for its runs to end; a run still going then is handed
back to the queue (``Store.release_lease`` moves its epoch on, so this process
can commit nothing more to it, and expires its lease, so any worker takes it
over at once) and its attempts are stopped when its next commit is refused.

State: the runs in progress (id -> runner, thread, lease epoch), runs this worker
could not start recently (not claimed again for a while), counters, the draining
flag.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stageflow.engine.admission import Admission, Capacity
from stageflow.engine.states import RunState
from stageflow.errors import (
    DoesNotFitHere,
    InvalidSpec,
    LeaseLost,
    RunOwned,
    StageflowError,
    StoreError,
    UsageError,
)
from stageflow.runtime.claim import lease_terms, process_start, under_lease
from stageflow.runtime.committer import retry_delay
from stageflow.runtime.host import default_host
from stageflow.runtime.loading import pipeline_of_run
from stageflow.runtime.runner import (
    BACKFILL_LIMIT,
    EXECUTORS,
    Runner,
    RunStarted,
)
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import (
    Batch,
    EventRecord,
    Fence,
    RunRecord,
    RunUpdate,
    Store,
    WorkerRecord,
)

__all__ = ["Worker", "WorkerReport", "capacity_of", "worker_owner"]

logger = logging.getLogger(__name__)

#: A run this worker could not start is not claimed here again for this long.
RETRY_LATER_SECONDS = 30.0
#: The longest wait between two tries of a store that stopped answering.
STORE_RETRY_CAP_SECONDS = 10.0


def worker_owner(name: str | None) -> str:
    """The lease owner of a worker: ``NAME (host:pid)``, unique per process even when
    two workers are given one name; ``host:pid`` without a name."""
    where = f"{socket.gethostname()}:{os.getpid()}"
    return f"{name} ({where})" if name else where


def capacity_of(capacity: Capacity) -> dict[str, float]:
    """A worker's capacity as recorded in the store: CPUs, memory, GPUs, a finite disk
    and custom resources, by the names task requests use."""
    known = {"cpu": capacity.cpu, "memory_gb": capacity.memory_gb, "gpu": float(capacity.gpu)}
    if capacity.disk_gb != float("inf"):
        known["disk_gb"] = capacity.disk_gb
    return {**known, **{str(k): float(v) for k, v in capacity.custom.items()}}


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
    epoch: int  # the lease epoch this worker won for the run


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
        schedules: bool = True,
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
        self.terms = lease_terms(settings)
        self._host, self._pid = socket.gethostname(), os.getpid()
        self._process_start = process_start()
        self._say = say or (lambda line: logger.info("%s", line))
        self._admission: Admission | None = None
        self._active: dict[str, _Active] = {}
        self._later: dict[str, float] = {}  # run id -> when it may be polled again
        self._lock = threading.Lock()
        self._draining = False
        self._wake = threading.Event()
        self._fires_schedules = schedules

    # -- the loop ---------------------------------------------------------------------

    def serve(self, *, max_runs: int | None = None, idle_exit: float | None = None) -> WorkerReport:
        """Claim and run runs until ``drain`` (or ``max_runs`` started and ended, or
        nothing to do for ``idle_exit`` seconds); return what was done."""
        capacity = self._shared_admission().capacity  # a bad override fails here, first
        store = open_store(self.settings.database_url, self.settings.home)
        stop_schedules = self._fire_schedules() if self._fires_schedules else None
        idle_since = time.monotonic()
        failures = 0  # polls in a row that the store did not answer
        beat_at = 0.0  # when this worker last said it is alive (``workers``)
        try:
            while not self._draining:
                self._reap()
                wait = self.poll_seconds
                try:
                    if time.monotonic() - beat_at >= self.terms.renew_every:
                        self._beat(store, capacity)
                        beat_at = time.monotonic()
                    if max_runs is not None and self.report.started >= max_runs:
                        if not self._active:
                            break
                    elif len(self._active) < self.concurrency:
                        self._poll(store)
                except StoreError as exc:
                    failures += 1
                    wait = retry_delay(failures, STORE_RETRY_CAP_SECONDS)
                    self._say(
                        f"could not poll the store (try {failures}): {exc}; "
                        f"trying again in {wait:.2f}s"
                    )
                else:
                    if failures:
                        self._say(f"the store answers again after {failures} failed poll(s)")
                    failures = 0
                if self._active or failures:
                    idle_since = time.monotonic()
                elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                    break
                self._wake.wait(wait)
                self._wake.clear()
            self._finish_draining(store)
        finally:
            if stop_schedules is not None:
                stop_schedules()
            with contextlib.suppress(StageflowError):  # its heartbeat lapses anyway
                store.remove_worker(self.owner)
            store.close()
        return self.report

    def _fire_schedules(self) -> Callable[[], None]:
        """Fire the store's schedules on a thread of their own, with a store connection of
        their own (``runtime.schedule_loop``: each tick fires once however many loops
        run); returns the function that stops it."""
        from stageflow.runtime.duties import background_duties
        from stageflow.runtime.schedule_loop import ScheduleLoop

        store = open_store(self.settings.database_url, self.settings.home)
        loop = ScheduleLoop(self.settings, store, duties=background_duties(self.settings, store))
        thread = threading.Thread(
            target=loop.serve_forever, name="stageflow-schedules", daemon=True
        )
        thread.start()

        def stop() -> None:
            loop.stop()
            thread.join(timeout=30)
            store.close()

        return stop

    def _beat(self, store: Store, capacity: Capacity) -> None:
        """Say this worker is alive (and its capacity) in the store's ``workers``."""
        now = time.time()
        if store.beat_worker(self.owner, now):
            return
        store.register_worker(
            WorkerRecord(
                self.owner,
                self._host,
                self._pid,
                self._process_start or now,
                now,
                capacity_of(capacity),
                self.concurrency,
            )
        )

    def drain(self) -> None:
        """Stop claiming; let the runs in progress end (module docstring). Safe to call
        from a signal handler: it only sets a flag the loop reads every poll."""
        self._draining = True

    def _poll(self, store: Store) -> bool:
        """Claim runs (``Store.claim_next``) while slots are free and start a thread for
        each; True if any started. ``StoreError`` when the store does not answer."""
        started = False
        while len(self._active) < self.concurrency and not self._draining:
            now = time.time()
            # Its own runs too: one whose lease lapsed while this process was held up
            # (its commits will renew it, or be refused) is not claimed a second time.
            exclude = set(self._active)
            exclude.update(r for r, t in self._later.copy().items() if t > now)
            got = store.claim_next(
                owner=self.owner,
                host=self._host,
                pid=self._pid,
                now=now,
                ttl=self.terms.seconds,
                started_at=self._process_start,
                exclude=exclude,
            )
            if got is None:
                break
            run, epoch = got
            claimed = under_lease(  # the run as the store now holds it: this worker's lease
                run,
                owner=self.owner,
                epoch=epoch,
                now=now,
                terms=self.terms,
                host=self._host,
                pid=self._pid,
                started_at=self._process_start,
            )
            thread = threading.Thread(
                target=self._run_one,
                args=(run, claimed, epoch),
                name=f"stageflow-run-{run.run_id}",
                daemon=True,
            )
            with self._lock:
                self._active[run.run_id] = _Active(None, thread, epoch)
            thread.start()
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

    def _run_one(self, run: RunRecord, claimed: RunRecord, epoch: int) -> None:
        """Run ``run``, which this worker claimed at ``epoch`` (``claimed``: the run
        under that lease; ``run``: as it stood in the queue, its previous owner)."""
        try:
            # A connection from the host's pool: opened once, lent run after run.
            with default_host().store(self.settings) as store:
                self._run_with(store, run, claimed, epoch)
        except StoreError as exc:  # its lease expires and it goes back to the queue
            self._later[run.run_id] = time.time() + RETRY_LATER_SECONDS
            self._say(f"run {run.run_id}: could not open the store to run it: {exc}")
        finally:
            self._wake.set()

    def _run_with(self, store: Store, run: RunRecord, claimed: RunRecord, epoch: int) -> None:
        try:
            try:
                pipeline = pipeline_of_run(store, run, importable=True)
                runner = Runner(
                    pipeline,
                    store=store,
                    settings=self.settings,
                    executor=self.executor,
                    admission=self._shared_admission(),
                    owner=self.owner,
                )
            except StoreError as exc:
                self._hand_back(store, run, epoch, f"could not read its pipeline: {exc}")
                return
            except StageflowError as exc:
                self._fail_unloadable(store, run, epoch, exc)
                return
            with self._lock:
                if run.run_id in self._active:
                    self._active[run.run_id].runner = runner
            # Nothing of a queued run was committed (its first commit makes it running):
            # it starts afresh, even if a worker that died had claimed it before.
            fresh = run.state == RunState.QUEUED

            def claimed_hook(info: RunStarted) -> None:  # said once the run starts
                with self._lock:
                    self.report.started += 1
                before = run.lease_owner
                if not fresh:
                    how = f"taking it over from {before or 'a process that is gone'}"
                elif before and before != self.owner:  # its claimer died before starting it
                    how = f"started (claimed earlier by {before}, whose lease expired)"
                else:
                    how = "started"
                self._say(f"run {run.run_id} of pipeline '{run.pipeline}': {how}")

            runner.on_start = claimed_hook
            try:
                if fresh:
                    result = runner.start_queued(claimed, epoch=epoch)
                else:
                    result = runner.resume(
                        claimed, reason=f"taken over by worker {self.owner}", epoch=epoch
                    )
            except RunOwned:
                logger.debug("run %s: another process took it first", run.run_id)
                return
            except DoesNotFitHere as exc:  # fine, but too big for this worker: hand it back
                first = exc.problems[0].render() if exc.problems else str(exc)
                self._hand_back(
                    store,
                    run,
                    epoch,
                    f"left for a bigger worker; it does not fit this one: {first}",
                )
                return
            except InvalidSpec as exc:  # planned before it started: it no longer validates
                self._fail_unloadable(store, run, epoch, exc)
                return
            except LeaseLost as exc:
                self.report.lost.append(run.run_id)
                self._say(f"run {run.run_id}: {exc}")
                return
            except StageflowError as exc:  # its parameters no longer fit, the store failed
                self.report.failed_to_start[run.run_id] = str(exc)
                self._hand_back(store, run, epoch, f"could not run it here: {exc}")
                return
            self.report.finished[run.run_id] = str(result.state)
            self._say(f"run {run.run_id} of pipeline '{run.pipeline}': {result.state}")
        except Exception:  # a bug: the run keeps its lease until it expires
            logger.exception("run %s: the worker failed while running it", run.run_id)
            self._later[run.run_id] = time.time() + RETRY_LATER_SECONDS

    def _hand_back(self, store: Store, run: RunRecord, epoch: int, why: str) -> None:
        """Give ``run`` back to the queue at once (``Store.release_lease``: another
        worker may take it now) and claim it here again only after a while."""
        self._later[run.run_id] = time.time() + RETRY_LATER_SECONDS
        try:
            back = store.release_lease(run.run_id, epoch, time.time())
        except StoreError as exc:  # then its lease simply expires
            logger.warning("run %s: could not hand it back: %s", run.run_id, exc)
            back = False
        where = "handed back to the queue" if back else "left to its lease's expiry"
        self._say(f"run {run.run_id}: {why} ({where})")

    def _fail_unloadable(
        self, store: Store, run: RunRecord, epoch: int, exc: StageflowError
    ) -> None:
        """Record a run whose pipeline cannot be loaded here as ``failed`` (under the
        lease this worker won, so only one worker does it)."""
        now = time.time()
        message = f"worker {self.owner} could not load or plan the run's pipeline: {exc}"
        batch = Batch()
        batch.runs.append(
            RunUpdate(run.run_id, state=RunState.FAILED, ended_at=now, heartbeat_at=now)
        )
        batch.events.append(
            EventRecord(run.run_id, None, run.state, RunState.FAILED, now, message=message)
        )
        batch.fences[run.run_id] = Fence(epoch, now, None)
        try:
            store.commit(batch)
        except (LeaseLost, StoreError) as error:  # taken over meanwhile, or the store failed
            self._say(f"run {run.run_id}: could not record it failed: {error}")
            return
        self.report.failed_to_start[run.run_id] = message
        self._say(f"run {run.run_id}: failed: {message}")

    def _shared_admission(self) -> Admission:
        with self._lock:
            if self._admission is None:
                from stageflow.runtime.pools import GlobalPools
                from stageflow.runtime.resources import detect_capacity

                self._admission = Admission(
                    detect_capacity(self.settings.home),
                    backfill_limit=BACKFILL_LIMIT,
                    lock=threading.RLock(),
                    gate=GlobalPools(),  # pool slots: the store's, across workers
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
            try:
                back = store.release_lease(run_id, active.epoch, now)
            except StoreError as exc:  # its lease expires, and then it is taken over
                self._say(f"run {run_id}: could not hand it back ({exc}); its lease expires")
                continue
            if back:
                self.report.handed_back.append(run_id)
                self._say(f"run {run_id}: handed back to the queue (draining)")
        for active in left.values():
            active.thread.join(10.0)
