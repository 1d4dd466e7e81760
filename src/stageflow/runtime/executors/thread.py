"""The ``thread`` executor: a fixed set of threads in this process, reused.

Fast (no serialization of inputs; outputs passed by reference) and the default.
Workers take jobs from one queue and put results on the completion queue: no
future, lock or thread is created per task. A timed-out or cancelled attempt
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
from stageflow.runtime.executors.base import Completions

__all__ = ["ThreadExecutor"]

_STOP_GRACE_SECONDS = 1.0  # at most, at shutdown, for attempts to stop when told to


class ThreadExecutor:
    name = "thread"

    def __init__(self, workers: int, completions: Completions) -> None:
        self._jobs: queue.SimpleQueue[tuple[Job, threading.Event] | None] = queue.SimpleQueue()
        self._completions = completions
        self._flags: dict[tuple[str, str, int], threading.Event] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._wanted = workers
        self._closed = False
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"stageflow-worker-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, flag = item
            if flag.is_set():  # cancelled (or timed out) before a thread took it
                with self._lock:
                    self._flags.pop(job.key, None)
                continue
            result = execute(job, flag)
            with self._lock:
                self._flags.pop(job.key, None)
            if flag.is_set() and self._closed:
                continue
            self._completions.put(result)

    def submit(self, job: Job) -> None:
        flag = threading.Event()
        with self._lock:
            self._flags[job.key] = flag
        self._jobs.put((job, flag))

    def cancel(self, key: tuple[str, str, int]) -> None:
        with self._lock:
            flag = self._flags.get(key)
            if flag is None or flag.is_set():
                return
            flag.set()
            # The abandoned attempt keeps its thread busy: add one so the others
            # still get the parallelism they were promised.
            self._spawn()
            self._wanted += 1

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            for flag in self._flags.values():
                flag.set()
        for _ in range(self._wanted):
            self._jobs.put(None)
        # Attempts told to stop get a moment to do so (``bash`` kills its process
        # group) before this process may exit: exiting ends daemon threads at once
        # and would leave a cancelled command running, orphaned.
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
