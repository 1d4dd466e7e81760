"""The run loop: turns the engine's decisions into work, records every change.

Policy (DESIGN.md, durability rule). One loop iteration is one scheduling
tick: collect finished attempts (their outputs are already stored by the
worker, so an output is durable before its success can be committed), feed
them to the engine, re-queue due retries, fail timed-out attempts and hand as
many ready tasks to the executor as there are free slots. State changes
accumulate in one ``Batch`` in the order they happened and are committed in
ONE transaction once the oldest of them is ``commit_interval`` old (10 ms by
default), and always before the run is reported finished. Batches are applied
in order, so a task's ``success`` is never committed after the success of a
task that consumed its output (causal order). A crash at any instant loses
only uncommitted changes, and ``resume`` re-runs exactly the tasks without a
committed ``success``: at least once, never one that has it.

State: the engine (``Scheduler``), the executor and its completion queue,
per-task rows mirroring the store (``_Row``), the outputs by task (objects for
the thread executor, ``OutputRef``s always), and a heap of attempt deadlines.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import json
import logging
import os
import queue
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stageflow.engine.scheduler import EnginePlan, Scheduler, Transition
from stageflow.engine.states import FINAL_TASK_STATES, RunState, TaskState
from stageflow.errors import RunOwned, StageflowError, UsageError
from stageflow.graph import critical_path
from stageflow.runtime.artifacts import ArtifactStore, load_output
from stageflow.runtime.attempt import AttemptResult, Job
from stageflow.runtime.committer import Committer
from stageflow.runtime.executors.base import Completions, Executor
from stageflow.runtime.plan import check, resolve_params, task_parameters
from stageflow.runtime.result import RunResult, TaskResult
from stageflow.runtime.settings import Settings, load_settings
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import (
    AttemptRecord,
    Batch,
    EventRecord,
    OutputRef,
    PipelineRecord,
    RunRecord,
    RunUpdate,
    Store,
    TaskRunRecord,
)
from stageflow.spec.load import pipeline_from_data
from stageflow.spec.models import Pipeline

__all__ = ["Listener", "Runner", "new_run_id", "resume_run", "run_pipeline"]

logger = logging.getLogger(__name__)

Listener = Callable[[Transition], None]
EXECUTORS = ("thread", "process")
_HEARTBEAT_SECONDS = 5.0
_MAX_WAIT = 1.0
_S = TaskState


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
) -> RunResult:
    """Validate, record and run ``pipeline``; return its ``RunResult`` (any final state).

    Raises ``InvalidSpec`` before anything runs, ``StoreError`` if the store cannot
    be opened, ``UsageError`` for a bad executor name or parallelism.
    """
    settings = _settings(settings, home, store_url)
    store = open_store(settings.database_url, settings.home)
    try:
        runner = Runner(
            pipeline,
            store=store,
            settings=settings,
            executor=executor,
            max_parallel=max_parallel,
            listener=listener,
        )
        return runner.run_new(params or {})
    finally:
        store.close()


def resume_run(
    run_id: str,
    *,
    executor: str = "thread",
    max_parallel: int | None = None,
    home: str | os.PathLike[str] | None = None,
    store_url: str | None = None,
    settings: Settings | None = None,
    listener: Listener | None = None,
) -> RunResult:
    """Finish run ``run_id``: re-run exactly its tasks without a committed success.

    Raises ``RunNotFound``, ``RunOwned`` (a live process still runs it), or
    ``InvalidSpec``/``StageflowError`` when its pipeline can no longer be loaded.
    """
    settings = _settings(settings, home, store_url)
    store = open_store(settings.database_url, settings.home)
    try:
        run = store.get_run(run_id)
        _refuse_if_owned(run)
        record = store.get_pipeline(run.pipeline, run.pipeline_version)
        pipeline = _reload(record, run)
        runner = Runner(
            pipeline,
            store=store,
            settings=settings,
            executor=executor,
            max_parallel=max_parallel,
            listener=listener,
        )
        return runner.resume(run)
    finally:
        store.close()


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
        clock: Callable[[], float] = time.time,
    ) -> None:
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
        self.listener = listener
        self.clock = clock
        self.artifacts = ArtifactStore(settings.artifacts_root)

    # -- entry points ------------------------------------------------------------

    def run_new(self, overrides: Mapping[str, Any]) -> RunResult:
        params = resolve_params(self.pipeline, overrides)
        with gc_paused():
            plan = check(self.pipeline, params)
        now = self.clock()
        spec = json.dumps(self.pipeline.canonical(), sort_keys=True, default=str)
        version = self.pipeline.content_hash()
        self.store.save_pipeline(PipelineRecord(self.pipeline.name, version, spec, now))
        run_id = new_run_id(now)
        run = RunRecord(
            run_id,
            self.pipeline.name,
            version,
            RunState.QUEUED,
            params,
            now,
            executor=self.executor_name,
            source=_source_of(self.pipeline),
        )
        self.store.create_run(run, [t.id for t in self.pipeline.tasks])
        logger.info("run %s of pipeline %s (version %s) created", run_id, run.pipeline, version)
        return self._execute(run, params, plan, restored={}, attempts={}, resumed=False)

    def resume(self, run: RunRecord) -> RunResult:
        if run.state == RunState.SUCCESS:
            raise UsageError(
                f"run '{run.run_id}' already succeeded; nothing to resume "
                "(start a new run with `stageflow run`)"
            )
        with gc_paused():
            plan = check(self.pipeline, run.params)
        refs = self.store.outputs(run.run_id)
        rows = self.store.task_runs(run.run_id)
        restored = {
            r.task_id: refs[r.task_id] for r in rows if r.state == _S.SUCCESS and r.task_id in refs
        }
        attempts = {r.task_id: r.attempts for r in rows}
        return self._execute(
            run, run.params, plan, restored=restored, attempts=attempts, resumed=True
        )

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
    ) -> RunResult:
        pipeline = self.pipeline
        run_id = run.run_id
        now = started = self.clock()
        self.store.claim_run(
            run_id, host=socket.gethostname(), pid=os.getpid(), started_at=_process_start(), now=now
        )
        with gc_paused():
            sched = Scheduler(
                plan,
                failure_strategy=pipeline.failure_strategy,
                restored=restored.keys(),
                attempts=attempts,
            )
            tasks = {t.id: t for t in pipeline.tasks}
            timeouts = {
                t.id: pipeline.timeout_of(t) or self.settings.task_timeout for t in pipeline.tasks
            }
            loop = _Loop(self, run_id, tasks, params, restored)
        # The run's long-lived structures (pipeline, plan, rows) would be rescanned
        # by every full collection; freeze them for the run (see docs/architecture.md).
        gc.freeze()
        batch = Batch()
        if resumed:
            loop.reset_for_resume(self.store.task_runs(run_id), now, batch)
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
                message="resumed" if resumed else None,
            )
        )
        loop.record(sched.start(now), batch)
        completions: Completions = queue.SimpleQueue()
        executor = _make_executor(self.executor_name, self.parallel, completions)
        deadlines: list[tuple[float, str, int]] = []
        last_heartbeat = now
        cancelled = False
        interval = self.settings.commit_interval
        dirty_since: float | None = None
        try:
            while not sched.finished:
                to_start: list[Job] = []
                free = self.parallel - sched.running
                if free > 0 and sched.has_ready:
                    for t in sched.pop_ready(free, now):
                        loop.record([t], batch)
                        timeout = timeouts[t.task_id]
                        deadline = now + timeout if timeout else None
                        if deadline is not None:
                            heapq.heappush(deadlines, (deadline, t.task_id, t.attempt))
                        to_start.append(loop.job(t.task_id, t.attempt, deadline))
                for job in to_start:
                    executor.submit(job)
                while loop.to_stop:  # e.g. fail_fast cancelled running attempts
                    executor.cancel(loop.to_stop.pop())
                if batch:
                    # Group commit: changes wait at most commit_interval; batches keep
                    # the order of events, so causal order holds (module docstring).
                    if dirty_since is None:
                        dirty_since = now
                    if now - dirty_since >= interval or sched.finished:
                        loop.commit(batch)
                        batch = Batch()
                        dirty_since = None
                if sched.finished:
                    break
                wait = _MAX_WAIT
                next_due = sched.next_due()
                for due in (
                    next_due,
                    deadlines[0][0] if deadlines else None,
                    dirty_since + interval if dirty_since is not None else None,
                ):
                    if due is not None and due - now < wait:
                        wait = max(0.0, due - now)
                if sched.running == 0 and not sched.has_ready and next_due is None:
                    raise RuntimeError(
                        f"run {run_id}: no task running, ready or due, "
                        f"but not finished: {sched.states()}"
                    )
                results = _drain(completions, wait)
                now = self.clock()
                for result in results:
                    loop.finish(sched, result, now, batch)
                loop.record(sched.due(now), batch)
                while deadlines and deadlines[0][0] <= now:
                    _, tid, attempt = heapq.heappop(deadlines)
                    if sched.state(tid) is _S.RUNNING and sched.attempt(tid) == attempt:
                        executor.cancel((run_id, tid, attempt))
                        loop.record(
                            sched.record(
                                tid,
                                attempt,
                                False,
                                now,
                                f"timed out after {timeouts[tid]:g}s (timeout_seconds); "
                                "the attempt was stopped",
                            ),
                            batch,
                        )
                if now - last_heartbeat >= _HEARTBEAT_SECONDS:
                    batch.runs.append(RunUpdate(run_id, heartbeat_at=now))
                    last_heartbeat = now
        except KeyboardInterrupt:
            cancelled = True
            now = self.clock()
            loop.record(sched.cancel(now, "cancelled: interrupted (Ctrl-C)"), batch)
            while loop.to_stop:
                executor.cancel(loop.to_stop.pop())
        finally:
            executor.shutdown()
            gc.unfreeze()
        state = sched.run_state()
        if cancelled:
            state = RunState.CANCELLED
        batch.runs.append(RunUpdate(run_id, state=state, ended_at=now, heartbeat_at=now))
        batch.events.append(EventRecord(run_id, None, RunState.RUNNING, state, now))
        loop.commit(batch)
        loop.committer.close()  # everything committed before the run is reported finished
        logger.info("run %s finished: %s", run_id, state)
        return loop.result(state, run.started_at or started, now)


# -- helpers ---------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    state: str
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    attempt_started: float | None = None


class _Loop:
    """The per-run bookkeeping the loop needs: rows, outputs, jobs, commits."""

    def __init__(
        self,
        runner: Runner,
        run_id: str,
        tasks: Mapping[str, Any],
        params: dict[str, Any],
        restored: dict[str, OutputRef],
    ) -> None:
        self.runner = runner
        self.run_id = run_id
        self.tasks = tasks
        self.params = params
        self.rows = {tid: _Row(_S.PENDING) for tid in tasks}
        self.refs: dict[str, OutputRef] = dict(restored)
        self.values: dict[str, Any] = {}
        self.tracebacks: dict[tuple[str, int], str] = {}
        self.dirty: set[str] = set()
        self.to_stop: list[tuple[str, str, int]] = []  # attempts cancelled by the engine
        self.in_thread = runner.executor_name == "thread"
        settings = runner.settings
        self.logs_dir = settings.logs_dir.absolute()
        self.artifacts_root = settings.artifacts_root
        self.inline = settings.inline_output_bytes
        self.listener = runner.listener
        self.committer = Committer(runner.store)

    def reset_for_resume(self, rows: list[TaskRunRecord], now: float, batch: Batch) -> None:
        for r in rows:
            row = self.rows.get(r.task_id)
            if row is None:
                continue
            row.attempts = r.attempts
            if r.task_id in self.refs:
                row.state, row.started_at, row.ended_at = _S.SUCCESS, r.started_at, r.ended_at
                continue
            row.started_at = None
            if r.state != _S.PENDING:
                batch.events.append(
                    EventRecord(
                        self.run_id,
                        r.task_id,
                        r.state,
                        _S.PENDING,
                        now,
                        r.attempts,
                        "reset by resume",
                    )
                )
                self.dirty.add(r.task_id)

    def record(self, transitions: list[Transition], batch: Batch) -> None:
        run_id = self.run_id
        for t in transitions:
            row = self.rows[t.task_id]
            if t.new is _S.RUNNING:
                row.attempts = t.attempt
                row.attempt_started = t.at
                if row.started_at is None:
                    row.started_at = t.at
                row.error = None
                batch.attempts.append(AttemptRecord(run_id, t.task_id, t.attempt, _S.RUNNING, t.at))
            elif t.old is _S.RUNNING:
                if t.new is _S.CANCELLED:
                    self.to_stop.append((run_id, t.task_id, t.attempt))
                detail = self.tracebacks.pop((t.task_id, t.attempt), None)
                error = t.message if detail is None else f"{t.message}\n\n{detail}"
                batch.attempts.append(
                    AttemptRecord(
                        run_id, t.task_id, t.attempt, t.new, row.attempt_started, t.at, error
                    )
                )
            if t.new in FINAL_TASK_STATES:
                row.ended_at = t.at
            if t.new in (_S.FAILED, _S.UP_FOR_RETRY, _S.UPSTREAM_FAILED, _S.CANCELLED):
                row.error = t.message
            row.state = t.new
            batch.events.append(
                EventRecord(run_id, t.task_id, t.old, t.new, t.at, t.attempt, t.message)
            )
            self.dirty.add(t.task_id)
            if t.new is _S.UP_FOR_RETRY:
                logger.warning(
                    "run %s task %s attempt %d failed, retry due in %.1fs: %s",
                    run_id,
                    t.task_id,
                    t.attempt,
                    (t.due_at or t.at) - t.at,
                    t.message,
                )
            elif logger.isEnabledFor(logging.INFO):
                logger.info("run %s task %s: %s -> %s", run_id, t.task_id, t.old, t.new)
            if self.listener is not None:
                self.listener(t)

    def finish(self, sched: Scheduler, result: AttemptResult, now: float, batch: Batch) -> None:
        tid = result.task_id
        if result.ok and result.output is not None:
            if sched.state(tid) is not _S.RUNNING or sched.attempt(tid) != result.attempt:
                return  # a late result of a timed-out or cancelled attempt
            self.refs[tid] = result.output
            batch.outputs.append(result.output)
            if self.in_thread:
                self.values[tid] = result.value
        elif result.traceback:
            self.tracebacks[(tid, result.attempt)] = result.traceback
        self.record(sched.record(tid, result.attempt, result.ok, now, result.error), batch)

    def job(self, task_id: str, attempt: int, deadline: float | None) -> Job:
        task = self.tasks[task_id]
        job = Job(
            run_id=self.run_id,
            task=task,
            attempt=attempt,
            parameters=task_parameters(task.parameters, self.params),
            run_params=self.params,
            artifacts_root=self.artifacts_root,
            logs_dir=self.logs_dir,
            inline_limit=self.inline,
            deadline=deadline,
        )
        if self.in_thread:
            job.inputs = {u: self._value(u) for u in task.upstream}
        else:
            job.input_refs = {u: self.refs[u] for u in task.upstream if u in self.refs}
        return job

    def _value(self, task_id: str) -> Any:
        if task_id not in self.values:
            ref = self.refs.get(task_id)
            self.values[task_id] = (
                load_output(ref, self.runner.artifacts) if ref is not None else None
            )
        return self.values[task_id]

    def commit(self, batch: Batch) -> None:
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
                )
            )
        self.dirty.clear()
        self.committer.submit(batch)

    def result(self, state: str, started_at: float, ended_at: float) -> RunResult:
        tasks = {}
        for tid, row in self.rows.items():
            output = self.values.get(tid) if self.in_thread else None
            if output is None and tid in self.refs and not self.in_thread:
                output = _OutputLoader(self.refs[tid], self.runner.artifacts)
            tasks[tid] = TaskResult(
                tid, row.state, row.attempts, row.started_at, row.ended_at, row.error, output
            )
        durations = {
            tid: (r.ended_at - r.started_at)
            for tid, r in self.rows.items()
            if r.started_at is not None and r.ended_at is not None
        }
        path = critical_path(self.runner.pipeline.upstream_map(), durations, default=0.0)
        result = RunResult(
            self.run_id, self.runner.pipeline.name, state, started_at, ended_at, tasks, path.tasks
        )
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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection inside: planning 100,000 tasks allocates 100,000s of
    long-lived objects, and each collection pass would rescan all of them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _drain(completions: Completions, wait: float) -> list[AttemptResult]:
    try:
        first = completions.get(timeout=wait) if wait > 0 else completions.get_nowait()
    except queue.Empty:
        return []
    results = [first]
    while True:
        try:
            results.append(completions.get_nowait())
        except queue.Empty:
            return results


def _make_executor(name: str, workers: int, completions: Completions) -> Executor:
    if name == "process":
        from stageflow.runtime.executors.process import ProcessExecutor

        return ProcessExecutor(workers, completions)
    from stageflow.runtime.executors.thread import ThreadExecutor

    return ThreadExecutor(workers, completions)


def _settings(settings: Settings | None, home: Any, store_url: str | None) -> Settings:
    from dataclasses import replace

    settings = settings or load_settings()
    if home is not None:
        settings = replace(settings, home=Path(home))
    if store_url is not None:
        settings = replace(settings, database_url=store_url)
    return settings


def _process_start() -> float:
    """This process's start time (guards against pid reuse when checking the owner)."""
    import psutil  # imported here: only a run that records an owner needs it

    return float(psutil.Process().create_time())


def _refuse_if_owned(run: RunRecord) -> None:
    if run.state not in (RunState.RUNNING, RunState.QUEUED, RunState.PAUSED):
        return
    if run.owner_pid is None or run.owner_host != socket.gethostname():
        if (
            run.owner_host not in (None, socket.gethostname())
            and run.heartbeat_at
            and (time.time() - run.heartbeat_at < 3 * _HEARTBEAT_SECONDS)
        ):
            raise RunOwned(
                f"run '{run.run_id}' is still running on host {run.owner_host} "
                f"(heartbeat {time.time() - run.heartbeat_at:.0f}s ago); "
                "wait for it or stop it first"
            )
        return
    import psutil

    try:
        proc = psutil.Process(run.owner_pid)
        alive = abs(proc.create_time() - (run.owner_started_at or 0)) < 1.0 and (
            proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        alive = False
    if alive and run.owner_pid != os.getpid():
        raise RunOwned(
            f"run '{run.run_id}' is still running in process {run.owner_pid}; "
            "wait for it to finish, or stop that process, then resume"
        )


def _source_of(pipeline: Pipeline) -> str | None:
    return getattr(pipeline, "_source", None)


def _reload(record: PipelineRecord, run: RunRecord) -> Pipeline:
    import sys

    if run.source:
        folder = str(Path(run.source).parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        return pipeline_from_data(json.loads(record.spec_json))
    except StageflowError:
        raise
