"""What one process owns once, shared by all the runs it executes: the ``Host``.

Policy. A process that runs pipelines — ``stageflow run``, a worker, a program
using the Python API, later the server's workers — has ONE thread pool and ONE
pool of worker processes (``runtime.executors``), created when a run first needs
them and reused by every later run: never a pool per run, nothing spawned per
task. A run attaches to its host's pool for its duration (``Runner`` does it) and
detaches at its end; the pool grows to the parallelism of the runs attached at
once and keeps its threads and warm worker processes for the next. The host also
carries what its runs share: the observers (``runtime.observers``: run and task
events delivered off the runs' locks), a small pool of store connections for the
runs its entry points start (``store``: the schema is checked once, not per run)
and each pipeline's history estimates. A shared CPU/memory/GPU budget stays with
whoever runs several runs at once (a worker, a ``LocalRuntime``: their
``Admission``), and settings are passed per run.

A host changes nothing process-wide: the garbage collector's thresholds,
``sys.path``, ``os.environ`` and signal handlers are the entry points' business
(``service``: the CLI commands tune the collector with ``tune_gc`` and install
their own signal handlers), so a host embedded in another program — a web
server, a notebook — leaves that program as it was.

``default_host()`` is the process's host for callers that name none (the Python
API, tests): created on first use, its pools shut down when the interpreter
exits.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from stageflow.errors import UsageError

if TYPE_CHECKING:
    from stageflow.engine.scheduler import EnginePlan
    from stageflow.runtime.executors.base import ExecutorPool
    from stageflow.runtime.observers import Observers
    from stageflow.runtime.settings import Settings
    from stageflow.runtime.store.base import Store
    from stageflow.spec.models import Pipeline

__all__ = ["EXECUTORS", "Host", "collector_paused", "default_host", "tune_gc"]

EXECUTORS = ("thread", "process")
ESTIMATES_SECONDS = 10.0  # how long a pipeline's history estimates are reused


class Host:
    """One process's executor pools, observers, lent store connections and estimates."""

    def __init__(self) -> None:
        from stageflow.runtime.observers import Observers

        self.observers: Observers = Observers()
        self._pools: dict[str, ExecutorPool] = {}
        # (database URL, home) -> idle store connections and their file's identity.
        self._stores: OrderedDict[tuple[str | None, str], list[tuple[Store, object]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self._closed = False
        # (store URL, pipeline, tasks) -> (when read, task ids, estimates): see below.
        self._estimates: dict[tuple[str, str, int], tuple[float, Any, list[float]]] = {}

    def executor_pool(self, name: str) -> ExecutorPool:
        """The process's pool of executor ``name`` (``thread`` or ``process``), created on
        first use."""
        pool = self._pools.get(name)
        if pool is not None:
            return pool
        with self._lock:
            if self._closed:
                raise RuntimeError("this host is closed; its pools cannot run more attempts")
            pool = self._pools.get(name)
            if pool is None:
                pool = self._pools[name] = _make_pool(name)
            return pool

    @contextlib.contextmanager
    def store(self, settings: Settings) -> Iterator[Store]:
        """A store connection for one run's entry point, from the host's small pool:
        opened (and its schema checked) once, then reused by the next run, so a
        program running pipeline after pipeline pays for neither again. One borrower
        at a time per connection; a connection whose call failed is closed, not
        returned; an SQLite file replaced or removed meanwhile is opened afresh."""
        from stageflow.runtime.store import open_store

        key = (settings.database_url, str(settings.home))
        store: Store | None = None
        with self._lock:
            idle = self._stores.get(key)
            while idle and store is None:
                candidate, identity = idle.pop()
                if _file_identity(settings) == identity:
                    store = candidate
                else:
                    candidate.close(wait=False)
        if store is None:
            store = open_store(settings.database_url, settings.home)
        identity = _file_identity(settings)
        try:
            yield store
        except BaseException:
            store.close(wait=False)  # it may be in any state: not returned
            raise
        with self._lock:
            if self._closed or len(self._stores.get(key, ())) >= _IDLE_STORES_PER_URL:
                keep = False
            else:
                self._stores.setdefault(key, []).append((store, identity))
                self._stores.move_to_end(key)
                keep = True
                while len(self._stores) > _STORE_URLS:  # the least recently used URL goes
                    _, dropped = self._stores.popitem(last=False)
                    for old, _ in dropped:
                        old.close(wait=False)
        if not keep:
            store.close(wait=False)

    def history_estimates(self, store: Store, pipeline: Pipeline, plan: EnginePlan) -> list[float]:
        """``resources.history_estimates`` (each task's expected seconds from its recent
        runs), read from the store at most every ``ESTIMATES_SECONDS`` per pipeline and
        store: they only order ready tasks (critical path first), so a few seconds'
        staleness costs nothing, while the read is the largest part of a small run's
        start (hundreds of rows)."""
        from stageflow.runtime import resources

        key = (store.url, pipeline.name, len(plan.ids))
        now = time.monotonic()
        cached = self._estimates.get(key)
        if cached is not None and now - cached[0] < ESTIMATES_SECONDS and cached[1] == plan.ids:
            return cached[2]
        estimates = resources.history_estimates(store, pipeline, plan)
        with self._lock:
            if len(self._estimates) >= 256:  # many pipelines: forget the oldest
                self._estimates.pop(next(iter(self._estimates)))
            self._estimates[key] = (now, plan.ids, estimates)
        return estimates

    def workers(self) -> int:
        """Threads and worker-process slots its pools hold now (for reports and tests)."""
        return sum(pool.workers for pool in list(self._pools.values()))

    def close(self) -> None:
        """Stop the pools (attempts still going are stopped) and the observers."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
            stores = [store for idle in self._stores.values() for store, _ in idle]
            self._stores.clear()
        for pool in pools:
            pool.shutdown()
        for store in stores:
            store.close(wait=False)
        self.observers.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_IDLE_STORES_PER_URL = 8
_STORE_URLS = 4


def _file_identity(settings: Settings) -> object:
    """What tells an SQLite store's file from one put in its place: device and inode
    (``None`` when it does not exist); ``0`` for a server database."""
    url = settings.database_url
    if url is not None and not url.startswith("sqlite"):
        return 0
    if url is None:
        path = os.path.join(settings.home, "stageflow.db")
    else:
        from stageflow.runtime.store.url import parse_store_url

        path = parse_store_url(url).target
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _make_pool(name: str) -> ExecutorPool:
    if name == "process":
        from stageflow.runtime.executors.process import ProcessExecutor

        return ProcessExecutor()
    if name == "thread":
        from stageflow.runtime.executors.thread import ThreadExecutor

        return ThreadExecutor()
    raise UsageError(
        f"unknown executor '{name}'; use one of: {', '.join(EXECUTORS)}", field="executor"
    )


_default: Host | None = None
_default_lock = threading.Lock()


def default_host() -> Host:
    """The process's host for callers that name none; its pools end with the process."""
    global _default
    host = _default
    if host is not None:
        return host
    with _default_lock:
        if _default is None:
            _default = Host()
            atexit.register(_default.close)
        return _default


_GC_YOUNG_THRESHOLD = 10_000
_gc_tuned = False  # the process's entry point opted in (tune_gc)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection inside, in a process whose entry point called ``tune_gc``
    (planning 100,000 tasks allocates 100,000s of long-lived objects, and every pass
    would rescan them); elsewhere — a program embedding a host — nothing changes."""
    if not _gc_tuned:
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def tune_gc() -> None:
    """For a process that exists to run pipelines (the CLI's commands): collect the
    young generation every 10,000 allocations, not 700, and freeze what was loaded
    so far (the modules imported at start; the CLI calls it before it loads a
    pipeline) out of every later collection.

    Each task allocates a few dozen short-lived objects (records, results, the
    attempt's context) that reference counting frees anyway; at the default
    threshold the collector ran every few tasks and cost ~5-10 % of a no-op task's
    time, and each full pass rescanned the pipeline's long-lived structures.
    Cyclic garbage is still collected, a little later. Process-wide, so never done
    by a ``Host``: a program embedding one keeps its own collector settings."""
    global _gc_tuned
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, _GC_YOUNG_THRESHOLD), *older)
    gc.freeze()
    _gc_tuned = True  # and runs may pause the collector while they plan
