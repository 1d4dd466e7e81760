"""The ``thread`` executor: a reused pool of threads in this process.

Fast (no serialization of inputs; outputs passed by reference) and the default.
A timed-out or cancelled attempt cannot be stopped from outside a thread: it
is marked failed at once and abandoned; its thread finishes in the background
and its late result is ignored. Operators that wait (``bash``) watch the
attempt's cancellation flag and deadline, so they do stop.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from stageflow.runtime.attempt import Job, execute
from stageflow.runtime.executors.base import Completions

__all__ = ["ThreadExecutor"]


class ThreadExecutor:
    name = "thread"

    def __init__(self, workers: int, completions: Completions) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stageflow")
        self._completions = completions
        self._flags: dict[tuple[str, str, int], threading.Event] = {}
        self._lock = threading.Lock()

    def submit(self, job: Job) -> None:
        flag = threading.Event()
        with self._lock:
            self._flags[job.key] = flag
        self._pool.submit(self._run, job, flag)

    def _run(self, job: Job, flag: threading.Event) -> None:
        result = execute(job, flag)
        with self._lock:
            self._flags.pop(job.key, None)
        self._completions.put(result)

    def cancel(self, key: tuple[str, str, int]) -> None:
        with self._lock:
            flag = self._flags.get(key)
        if flag is not None:
            flag.set()

    def shutdown(self) -> None:
        with self._lock:
            for flag in self._flags.values():
                flag.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
