"""The ``thread`` executor: the process's threads, shared by its runs and reused.

Fast (no serialization of inputs; outputs passed by reference) and the default.
Workers take jobs from one queue and hand results to ``deliver``; when that
returns the next job (the worker led the loop's step, ``runtime.cycle``), the
same thread runs it at once. No future or thread is created per task; threads
start on demand (a chain needs one), up to the pool's size. A timed-out or cancelled attempt
cannot be stopped from outside a thread: the runner marks it failed at once and
abandons it; its thread finishes in the background and its late result is
ignored. Operators that wait (``bash``) watch the attempt's cancellation flag
and deadline, so they do stop. An abandoned attempt occupies its thread until
it returns, so the pool grows by one thread per abandoned attempt to keep the
promised parallelism.

An attempt's usage is its thread's CPU time plus that of the commands its
operator ran (``bash``), and those commands' peak memory; a Python task's own
memory cannot be told from its process's, so it has no peak (nor a memory
limit), and CPU time spent in other threads or processes it starts itself is
not counted.
"""

from __future__ import annotations

import queue
import threading
import time

from stageflow.runtime.attempt import Job, execute
from stageflow.runtime.executors.base import Deliver, Executor, RunView

__all__ = ["ThreadExecutor"]

_STOP_GRACE_SECONDS = 1.0  # at most, at shutdown, for attempts to stop when told to


class ThreadExecutor:
    """The process's thread pool (``executors.base``); ``workers``/``deliver``: a pool
    used by one caller directly (results of runs not attached go to ``deliver``, and
    ``workers`` threads are wanted besides the attached runs')."""

    name = "thread"
    shares_memory = True

    def __init__(self, workers: int = 0, deliver: Deliver | None = None) -> None:
        self._jobs: queue.SimpleQueue[tuple[Job, threading.Event] | None] = queue.SimpleQueue()
        self._default = deliver
        self._routes: dict[str, Deliver] = {}  # run id -> its deliver (attached runs)
        self._demand: dict[str, int] = {}  # run id -> its parallelism
        self._base = workers
        # Single dict operations are atomic under the interpreter lock: the hot path
        # takes no lock of its own (a lock here convoys the workers behind whichever
        # one the interpreter preempted while holding it). ``_lock`` guards only the
        # rare paths: attaching, starting threads, cancel, shutdown.
        self._flags: dict[tuple[str, str, int], threading.Event] = {}
        self._early: set[tuple[str, str, int]] = set()  # cancelled before they got here
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._abandoned: set[tuple[str, str, int]] = set()  # cancelled, a thread added each
        self._wanted = workers
        self._closed = False
        # Counters as lists: append and pop are atomic, ``+=`` on an int is not.
        self._idle: list[None] = []  # threads waiting for a job
        self._queued: list[None] = []  # jobs put on the queue and not yet taken

    @property
    def workers(self) -> int:
        return len(self._threads)

    # -- runs ----------------------------------------------------------------------

    def attach(self, run_id: str, deliver: Deliver, parallel: int) -> Executor:
        with self._lock:
            self._routes[run_id] = deliver
            self._demand[run_id] = parallel
            self._wanted = self._base + sum(self._demand.values()) + len(self._abandoned)
        return RunView(self, run_id)

    def detach(self, run_id: str) -> None:
        """Forget the run; its attempts still going are told to stop and get up to a
        second to do so (``bash`` kills its process group) — a process may exit next."""
        with self._lock:
            self._routes.pop(run_id, None)
            self._demand.pop(run_id, None)
            self._wanted = self._base + sum(self._demand.values()) + len(self._abandoned)
            going = [flag for key, flag in list(self._flags.items()) if key[0] == run_id]
            for flag in going:
                flag.set()
            # Keys ``cancel`` left for jobs of this run that never came: the pool
            # outlives the run. (``_flag`` discards without the lock: iterate a copy.)
            for key in [k for k in list(self._early) if k[0] == run_id]:
                self._early.discard(key)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        while going and time.monotonic() < deadline:
            time.sleep(0.005)
            going = [f for k, f in list(self._flags.items()) if k[0] == run_id]

    # -- the workers -------------------------------------------------------------------

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"stageflow-worker-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        item: tuple[Job, threading.Event] | None = None
        flags = self._flags
        routes = self._routes
        while True:
            if item is None:
                self._idle.append(None)
                item = self._jobs.get()
                self._idle.pop()
                self._queued.pop()
                if item is None:
                    return
            job, flag = item
            item = None
            if flag.is_set():  # cancelled (or timed out) before a thread took it
                flags.pop(job.key, None)
                if self._abandoned and self._settle(job.key):
                    return
                continue
            result = execute(job, flag)
            flags.pop(job.key, None)
            if flag.is_set():  # cancelled while it ran (its late result is ignored)
                if self._abandoned and self._settle(job.key):
                    return  # the pool had grown for it: this thread goes
                if self._closed:
                    continue
            deliver = routes.get(job.run_id, self._default)
            if deliver is None:  # its run is done with the pool
                continue
            following = deliver(result)
            if following is not None:  # this thread led the step: run the next one now
                item = (following, self._flag(following.key))

    def _settle(self, key: tuple[str, str, int]) -> bool:
        """A cancelled job's thread is free again: the pool shrinks back by the thread
        ``cancel`` added for it; true when the calling thread is the one to go."""
        with self._lock:
            if key not in self._abandoned:
                return False
            self._abandoned.discard(key)
            self._wanted -= 1
            if self._closed or len(self._threads) <= self._wanted:
                return False
            self._threads.remove(threading.current_thread())
            return True

    def _flag(self, key: tuple[str, str, int]) -> threading.Event:
        """The cancellation flag of a job reaching this executor; already set when a
        step cancelled the job before it got here (``cancel`` left its key)."""
        flag = threading.Event()
        self._flags[key] = flag
        if self._early and key in self._early:
            self._early.discard(key)
            flag.set()
        return flag

    def submit(self, job: Job) -> None:
        flag = self._flag(job.key)
        self._queued.append(None)
        self._jobs.put((job, flag))
        # Start a thread only when no idle one will take the job: a chain of tasks,
        # led by its worker, never needs a second one.
        if len(self._queued) > len(self._idle) and len(self._threads) < self._wanted:
            with self._lock:
                if len(self._threads) < self._wanted:
                    self._spawn()

    def cancel(self, key: tuple[str, str, int]) -> None:
        with self._lock:
            flag = self._flags.get(key)
            if flag is None:
                # A step started this job and another one cancels it before the job
                # reached this executor (jobs are handed over after the step lets go
                # of the run's lock): leave the key for ``_flag``, then look again,
                # since it may have registered the job meanwhile. Either this sees
                # the flag or ``_flag`` sees the key; the job then never runs.
                self._early.add(key)
                flag = self._flags.get(key)
                if flag is not None:
                    self._early.discard(key)
                    flag.set()
                return
            if flag.is_set():
                return
            flag.set()
            # The abandoned attempt keeps its thread busy: add one so the others
            # still get the parallelism they were promised (until it returns).
            self._abandoned.add(key)
            self._wanted += 1
            self._spawn()

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            for flag in list(self._flags.values()):
                flag.set()
        for _ in range(len(self._threads)):
            self._queued.append(None)
            self._jobs.put(None)
        # Attempts told to stop get a moment to do so (``bash`` kills its process
        # group) before this process may exit: exiting ends daemon threads at once
        # and would leave a cancelled command running, orphaned.
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
