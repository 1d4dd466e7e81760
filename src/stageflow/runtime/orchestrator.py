"""One object to drive runs from a program: submit, wait, query, control, statistics.

Policy. ``Orchestrator`` adds no scheduling and no SQL of its own; it joins the
pieces that exist. Runs go to one ``LocalRuntime`` (its ``max_concurrent_runs``,
its run queue ordered by ``priority``, its one shared admission); queries read
the store the runtime writes; ``pause``/``unpause``/``cancel`` are the requests
of ``runtime.control`` (the same ones ``stageflow cancel`` sends), ``resume``
is ``runner.resume_run`` (for a run whose process died), and ``stats`` is
``runtime.stats.stats_report`` (what ``stageflow stats`` prints).

The blocking face (``submit``, ``execute``, ``status``...) suits scripts; the
asyncio face (``await execute_async(...)``, ``await wait(handle)``) suits a
FastAPI app or a notebook: a run's result is awaited through its handle's
``concurrent.futures.Future`` (``asyncio.wrap_future``) and store reads go to
the loop's default executor, so the event loop is never blocked while runs run.
``execute`` serves both: with no event loop running in the calling thread it
blocks and returns the result; inside a running loop (a coroutine, a notebook
cell) blocking would freeze the loop, so it returns an awaitable of the same
result instead, and ``await orchestrator.execute(pipeline)`` works as written.

State: the ``LocalRuntime``, one store connection for queries (guarded by a
lock: an app may call from several threads), the ``RunHandle`` of every run
submitted here and not yet ended, and the ``asyncio.Task`` of every ``execute``
called from an event loop and not yet done. ``close`` (or leaving ``with``) waits for
every submitted run to end, then closes the store.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Mapping
from typing import Any

from stageflow.engine.states import FINAL_RUN_STATES
from stageflow.errors import UsageError
from stageflow.runtime.control import cancel_run, pause_run, unpause_run
from stageflow.runtime.local import LocalRuntime, RunHandle
from stageflow.runtime.result import RunResult
from stageflow.runtime.runner import resume_run
from stageflow.runtime.settings import Settings
from stageflow.runtime.stats import PipelineStats, stats_report
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import RunRecord
from stageflow.spec.models import Pipeline

__all__ = ["Orchestrator"]


class Orchestrator:
    """Submits, awaits, queries and controls runs; see the module docstring."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        home: str | os.PathLike[str] | None = None,
        store_url: str | None = None,
        max_concurrent_runs: int | None = None,
        executor: str = "thread",
    ) -> None:
        self.runtime = LocalRuntime(
            settings=settings,
            home=home,
            store_url=store_url,
            max_concurrent_runs=max_concurrent_runs,
            executor=executor,
        )
        self.settings = self.runtime.settings
        self.executor = executor
        self.store = open_store(self.settings.database_url, self.settings.home)
        self._store_lock = threading.Lock()
        self._handles: dict[str, RunHandle] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[RunResult]] = set()  # execute() from an event loop

    # -- running (blocking) ------------------------------------------------------------

    def submit(
        self, pipeline: Pipeline, params: Mapping[str, Any] | None = None, *, priority: int = 0
    ) -> RunHandle:
        """Queue a run of ``pipeline``; returns its handle at once.

        Raises ``InvalidSpec`` (nothing recorded) for a mistake in the pipeline or its
        parameters, ``UsageError`` after ``close``."""
        handle = self.runtime.submit(pipeline, params, priority=priority)
        with self._lock:
            self._handles[handle.run_id] = handle
        handle.future.add_done_callback(lambda _: self._forget(handle.run_id))
        return handle

    def execute(
        self, pipeline: Pipeline, params: Mapping[str, Any] | None = None, *, priority: int = 0
    ) -> Any:
        """Submit a run and return its result once it ends (any final state).

        Called with no running event loop in this thread, it blocks and returns the
        ``RunResult``. Called from inside a running event loop, where blocking would
        freeze the loop, it returns an awaitable of that ``RunResult``: an
        ``asyncio.Task`` of ``execute_async``, started at once (the run is submitted
        whether or not it is awaited), so ``await orchestrator.execute(pipeline)``
        works as written. Raises ``InvalidSpec`` (nothing recorded) for a mistake in
        the pipeline or its parameters, ``UsageError`` after ``close``; from a loop,
        the awaitable raises them.

        Typed ``Any`` because the returned kind depends on the caller's thread:
        ``RunResult`` or ``Awaitable[RunResult]``.
        """
        if _loop_running():
            task: asyncio.Task[RunResult] = asyncio.ensure_future(
                self.execute_async(pipeline, params, priority=priority)
            )
            self._tasks.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._tasks.discard)
            awaitable: Awaitable[RunResult] = task
            return awaitable
        return self.submit(pipeline, params, priority=priority).result()

    # -- running (asyncio) -------------------------------------------------------------

    async def execute_async(
        self, pipeline: Pipeline, params: Mapping[str, Any] | None = None, *, priority: int = 0
    ) -> RunResult:
        """``await`` a new run's result without blocking the event loop."""
        loop = asyncio.get_running_loop()
        # submit validates, plans and records the run: store work, off the loop
        handle = await loop.run_in_executor(
            None, lambda: self.submit(pipeline, params, priority=priority)
        )
        return await self.wait(handle)

    async def wait(self, run: RunHandle | str) -> RunResult:
        """``await`` the result of a run submitted here (its handle or run id).

        A run id this orchestrator no longer tracks is answered from the store when
        the run has ended; otherwise ``UsageError`` (it runs in another process:
        poll ``status``)."""
        handle = run if isinstance(run, RunHandle) else self._handle(run)
        if handle is not None:
            return await asyncio.wrap_future(handle.future)
        run_id = run if isinstance(run, str) else run.run_id
        result = await asyncio.get_running_loop().run_in_executor(None, self.status, run_id)
        if result.state not in FINAL_RUN_STATES:
            raise UsageError(
                f"run '{run_id}' is {result.state} and was not submitted by this "
                "orchestrator; poll `status(run_id)` to follow it"
            )
        return result

    # -- queries -----------------------------------------------------------------------

    def status(self, run_id: str) -> RunResult:
        """The run's state and its tasks' as stored now, with their table rows and
        the run's ``total_records_processed`` (``runtime.result``), whichever process
        ran it. Raises ``RunNotFound``."""
        with self._store_lock:
            record = self.store.get_run(run_id)
            return RunResult.from_records(
                record, self.store.task_runs(run_id), self.store.attempts(run_id)
            )

    def history(self, pipeline: str | None = None, limit: int = 10) -> list[RunRecord]:
        """The latest ``limit`` runs, newest first; of one pipeline when named."""
        with self._store_lock:
            return self.store.list_runs(limit=limit, pipeline=pipeline)

    def stats(self, pipeline: str, days: int = 30) -> PipelineStats:
        """Per-task statistics over ``pipeline``'s runs of the last ``days`` UTC days.

        Raises ``StageflowError`` when the store holds no pipeline of that name."""
        with self._store_lock:
            return stats_report(self.store, pipeline, days=days, now=time.time())

    # -- control -----------------------------------------------------------------------

    def pause(self, run_id: str, *, by: str | None = None) -> str:
        """Start no new task of the run (running ones finish); returns what was done."""
        return pause_run(run_id, by=by, settings=self.settings)

    def unpause(self, run_id: str, *, by: str | None = None) -> str:
        """Let the paused run start tasks again; returns what was done."""
        return unpause_run(run_id, by=by, settings=self.settings)

    def cancel(self, run_id: str, *, by: str | None = None) -> str:
        """Stop the run's running attempts; every unfinished task ends ``cancelled``."""
        return cancel_run(run_id, by=by, settings=self.settings)

    def resume(self, run_id: str) -> RunResult:
        """Finish a run whose process died (blocking): re-run its tasks without a
        committed success. Raises ``RunOwned`` while a live process holds it."""
        return resume_run(run_id, executor=self.executor, settings=self.settings)

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Wait for every submitted run to end, then close the store."""
        try:
            self.runtime.close()
        finally:
            with self._store_lock:
                self.store.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- private -----------------------------------------------------------------------

    def _handle(self, run_id: str) -> RunHandle | None:
        with self._lock:
            return self._handles.get(run_id)

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._handles.pop(run_id, None)


def _loop_running() -> bool:
    """Whether an asyncio event loop is running in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
