"""One long-lived runtime for many runs: a shared capacity and a run queue.

Policy. ``LocalRuntime.submit`` validates and plans a run at once (a mistake
or a request that can never fit raises ``InvalidSpec`` then, and nothing is
recorded) and records it as ``queued``. At most ``max_concurrent_runs``
(``MAX_CONCURRENT_RUNS``) run at a time, each on its own thread with its own
store connection; queued runs start in order of run ``priority`` (higher
first), then submission. Every run's tasks are admitted against ONE
``Admission`` (one global CPU/memory/GPU/pool budget, thread-locked): a run
whose task waits for resources is woken when any run releases some, and the
bounded reservation of ``engine.admission`` keeps a big task from starving
behind a stream of small ones from other runs.

State: the shared admission, a heap of queued submissions, the number of
active runs, and a ``RunHandle`` (a future) per submission. ``close`` waits for
every submitted run to end.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from stageflow.engine.admission import Admission, Capacity
from stageflow.errors import UsageError
from stageflow.runtime.pools import GlobalPools
from stageflow.runtime.resources import detect_capacity
from stageflow.runtime.result import RunResult
from stageflow.runtime.runner import (
    BACKFILL_LIMIT,
    Listener,
    Prepared,
    Runner,
    resolve_settings,
)
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import Store
from stageflow.spec.models import Pipeline

__all__ = ["LocalRuntime", "RunHandle"]


@dataclass(eq=False)
class RunHandle:
    """A submitted run: its id at once, its ``RunResult`` when it ends."""

    run_id: str
    pipeline: str
    priority: int
    future: Future[RunResult] = field(default_factory=Future)

    def result(self, timeout: float | None = None) -> RunResult:
        """Wait for the run to end (any final state) and return its result."""
        return self.future.result(timeout)

    def done(self) -> bool:
        return self.future.done()


@dataclass(eq=False)
class _Queued:
    handle: RunHandle
    runner: Runner
    prepared: Prepared
    store: Store


class LocalRuntime:
    """Runs many pipelines' runs in this process; see the module docstring."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        home: str | os.PathLike[str] | None = None,
        store_url: str | None = None,
        capacity: Capacity | None = None,
        max_concurrent_runs: int | None = None,
        executor: str = "thread",
    ) -> None:
        self.settings = resolve_settings(settings, home, store_url)
        limit = (
            max_concurrent_runs
            if max_concurrent_runs is not None
            else self.settings.max_concurrent_runs
        )
        if limit < 1:
            raise UsageError(
                f"max_concurrent_runs is {limit}; it must be at least 1 (MAX_CONCURRENT_RUNS)",
                field="max_concurrent_runs",
            )
        self.max_concurrent_runs = limit
        self.executor = executor
        self.capacity = capacity or detect_capacity(self.settings.home)
        self.admission = Admission(
            self.capacity,
            backfill_limit=BACKFILL_LIMIT,
            lock=threading.RLock(),
            gate=GlobalPools(),  # pool slots are the store's, shared with other processes
        )
        self._lock = threading.Lock()
        self._queue: list[tuple[int, int, _Queued]] = []  # (-priority, sequence, run)
        self._sequence = itertools.count()
        self._active = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    # -- submitting --------------------------------------------------------------

    def submit(
        self,
        pipeline: Pipeline,
        params: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        max_parallel: int | None = None,
        listener: Listener | None = None,
        use_cache: bool = True,
    ) -> RunHandle:
        """Validate ``pipeline`` and queue a run of it; returns at once.

        Raises ``InvalidSpec`` (nothing recorded) for a mistake in the pipeline or
        its parameters, or a request that can never fit this runtime's capacity."""
        if self._closed:
            raise UsageError("this runtime is closed; create a new LocalRuntime")
        store = open_store(self.settings.database_url, self.settings.home)
        try:
            runner = Runner(
                pipeline,
                store=store,
                settings=self.settings,
                executor=self.executor,
                max_parallel=max_parallel,
                listener=listener,
                use_cache=use_cache,
                admission=self.admission,
            )
            prepared = runner.prepare(params or {})
        except BaseException:
            store.close()
            raise
        handle = RunHandle(prepared.run.run_id, pipeline.name, priority)
        with self._lock:
            heapq.heappush(
                self._queue,
                (-priority, next(self._sequence), _Queued(handle, runner, prepared, store)),
            )
        self._dispatch()
        return handle

    def run(
        self, pipeline: Pipeline, params: Mapping[str, Any] | None = None, **options: Any
    ) -> RunResult:
        """Submit a run and wait for it."""
        return self.submit(pipeline, params, **options).result()

    @property
    def active(self) -> int:
        """Runs running now."""
        return self._active

    @property
    def queued(self) -> int:
        """Runs waiting for a slot (``max_concurrent_runs``)."""
        return len(self._queue)

    # -- running -------------------------------------------------------------------

    def _dispatch(self) -> None:
        with self._lock:
            while self._queue and self._active < self.max_concurrent_runs:
                _, _, item = heapq.heappop(self._queue)
                self._active += 1
                thread = threading.Thread(
                    target=self._run,
                    args=(item,),
                    name=f"stageflow-run-{item.handle.run_id}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()

    def _run(self, item: _Queued) -> None:
        try:
            if item.handle.future.set_running_or_notify_cancel():
                try:
                    item.handle.future.set_result(item.runner.start(item.prepared))
                except BaseException as exc:  # reported to whoever waits on the handle
                    item.handle.future.set_exception(exc)
        finally:
            item.store.close()
            with self._lock:
                self._active -= 1
            self._dispatch()

    def close(self) -> None:
        """Wait for every submitted run to end; no new submissions after this."""
        self._closed = True
        while True:
            with self._lock:
                threads = [t for t in self._threads if t.is_alive()]
                self._threads = threads
                pending = bool(self._queue)
            if not threads and not pending:
                return
            for t in threads:
                t.join()

    def __enter__(self) -> LocalRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
