"""The ``process`` executor: the process's worker processes, shared by its runs, reused.

Each slot owns one worker process (started on first use, from a forkserver)
and a thread in this process that feeds it jobs over a pipe and waits for
either the result or the worker's death; the result goes to ``deliver``, and a
job it returns runs next on the same worker. A task that kills its process
(``os._exit``, SIGKILL, a segfault) fails that attempt only: the slot reports
the exit code or signal and starts a fresh worker for the next job. ``cancel``
(timeouts, run cancellation) kills the worker running that attempt and the
processes it started (a cancel that comes before a worker took the job skips it).
A worker dies with the runner, even a ``kill -9``'d one (``operators.lifeline``),
rather than run its current task on beside a resumed run.

While a job runs, its slot samples the resident memory of the worker and its
processes (summed) every ``SAMPLE_SECONDS``: the peak goes into the attempt's
usage, with the CPU time the worker measures itself. With a memory limit
(``Job.memory_limit_gb``, from ``enforce_limits``) the slot kills them all once
the sum goes over it, and the attempt fails saying so. The limit is sampled,
not an address-space rlimit: libraries reserve far more address space than they
use (thread arenas, BLAS, CUDA), so an rlimit would fail ordinary tasks; a
burst between two samples can go past the limit unseen.

Jobs are sent with cloudpickle (functions defined in ``__main__`` or in a
closure travel by value); upstream outputs travel as ``OutputRef``s that the
worker loads from the store's inline bytes or the artifact store.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from stageflow.operators.lifeline import die_with_parent
from stageflow.operators.process_tree import SAMPLE_SECONDS, TreeSampler, memory_limit_message
from stageflow.runtime.attempt import AttemptResult, Job, Usage, execute
from stageflow.runtime.executors.base import Deliver, Executor, RunView

__all__ = ["ProcessExecutor"]

_KILL_WAIT_SECONDS = 1.0  # at most, for a killed worker to be gone


class ProcessExecutor:
    """The process's worker processes (``executors.base``); ``workers``/``deliver``: a
    pool used by one caller directly (results of runs not attached go to ``deliver``,
    and ``workers`` slots are wanted besides the attached runs')."""

    name = "process"
    shares_memory = False

    def __init__(self, workers: int = 0, deliver: Deliver | None = None) -> None:
        import cloudpickle

        self._dumps = cloudpickle.dumps
        self._ctx = multiprocessing.get_context("forkserver")
        self._default = deliver
        self._routes: dict[str, Deliver] = {}  # run id -> its deliver (attached runs)
        self._demand: dict[str, int] = {}  # run id -> its parallelism
        self._base = workers
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str, int], _Slot] = {}
        self._cancelled: set[tuple[str, str, int]] = set()
        self._slots: list[_Slot] = []
        self._closed = False
        self._grow(workers)

    def _grow(self, wanted: int) -> None:
        """Slots (a thread each; its worker process starts with its first job) up to
        ``wanted``; slots are never taken away: an idle one keeps its warm worker."""
        with self._lock:
            while len(self._slots) < wanted and not self._closed:
                slot = _Slot(self, len(self._slots))
                self._slots.append(slot)
                slot.thread.start()

    @property
    def workers(self) -> int:
        return len(self._slots)

    def attach(self, run_id: str, deliver: Deliver, parallel: int) -> Executor:
        with self._lock:
            self._routes[run_id] = deliver
            self._demand[run_id] = parallel
            wanted = self._base + sum(self._demand.values())
        self._grow(wanted)
        return RunView(self, run_id)

    def detach(self, run_id: str) -> None:
        """Forget the run and kill its attempts still going (and skip its queued jobs)."""
        with self._lock:
            self._routes.pop(run_id, None)
            self._demand.pop(run_id, None)
            # Killed with the lock held: a slot registers and drops its job under it,
            # so each one killed is still running this run's attempt, never one it
            # took from another run since (a job of this run that a slot takes from
            # now on is skipped: ``_Slot.run`` sees its route gone, under the lock).
            for key, slot in list(self._running.items()):
                if key[0] == run_id:
                    slot.kill()
            # Cancels of this run's jobs that no slot will consume (skipped, or sent
            # after their attempt ended): the pool outlives the run.
            self._cancelled.difference_update([k for k in self._cancelled if k[0] == run_id])

    def route(self, run_id: str) -> Deliver | None:
        return self._routes.get(run_id, self._default)

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def cancel(self, key: tuple[str, str, int]) -> None:
        with self._lock:
            slot = self._running.get(key)
            if slot is not None:
                # Under the lock, so the slot is still on this attempt (it drops
                # the key under the lock before it takes another job).
                slot.kill()
            if self.route(key[0]) is not None:
                # Remembered until the slot takes the job: a cancel may come before
                # that. A detached run's jobs are skipped anyway: nothing to remember.
                self._cancelled.add(key)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            slots = list(self._slots)
        for _ in slots:
            self._jobs.put(None)
        for slot in slots:
            slot.kill()
            slot.stop_worker()


class _Slot:
    def __init__(self, owner: ProcessExecutor, index: int) -> None:
        self.owner = owner
        self.proc: BaseProcess | None = None
        self.conn: Connection | None = None
        self.thread = threading.Thread(
            target=self.loop, name=f"stageflow-slot-{index}", daemon=True
        )

    def ensure_worker(self) -> tuple[BaseProcess, Connection]:
        if self.proc is None or not self.proc.is_alive() or self.conn is None:
            parent, child = self.owner._ctx.Pipe()
            proc = self.owner._ctx.Process(target=_worker_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.proc, self.conn = proc, parent
        return self.proc, self.conn

    def loop(self) -> None:
        job: Job | None = None
        while True:
            if job is None:
                job = self.owner._jobs.get()
                if job is None:
                    return
            deliver = self.owner.route(job.run_id)
            if deliver is None:  # its run is done with the pool: skip it
                job = None
                continue
            result = self.run(job)
            deliver = self.owner.route(job.run_id)
            # The slot that led the loop's step keeps the next job for its own worker.
            job = None if deliver is None else deliver(result)

    def run(self, job: Job) -> AttemptResult:
        started = time.time()
        job.keep_value = False  # the output object stays in the worker process
        try:
            payload = self.owner._dumps(job)
        except Exception as exc:  # an unpicklable function or input: this attempt fails
            return _failed(
                job,
                started,
                f"cannot send the task to a worker process: "
                f"{type(exc).__name__}: {exc}; define the function at module level",
            )
        with self.owner._lock:
            if job.key in self.owner._cancelled:  # cancelled (timed out) before it started
                self.owner._cancelled.discard(job.key)
                return _failed(job, started, "cancelled before a worker started it")
            if self.owner.route(job.run_id) is None:  # detached since ``loop`` looked
                return _failed(job, started, "its run ended before a worker started it")
            self.owner._running[job.key] = self
        try:
            try:
                proc, conn = self.ensure_worker()
            except Exception as exc:  # e.g. no forkserver: fail the attempt, keep the slot
                return _failed(
                    job, started, f"cannot start a worker process: {type(exc).__name__}: {exc}"
                )
            with self.owner._lock:
                if job.key in self.owner._cancelled:
                    return _failed(job, started, "cancelled before a worker started it")
                if self.owner.route(job.run_id) is None:  # detached meanwhile
                    return _failed(job, started, "its run ended before a worker started it")
            try:
                conn.send_bytes(payload)
            except (BrokenPipeError, OSError):
                return _failed(job, started, _death(proc))
            assert proc.pid is not None  # started
            sampler = TreeSampler(proc.pid, _labels(job))
            outcome = self.watch(job, proc, conn, sampler)
            if outcome == "done":
                try:
                    result: AttemptResult = pickle.loads(conn.recv_bytes())
                    result.usage = _with_peak(result.usage, sampler.peak_mb)
                    return result
                except (EOFError, OSError):
                    pass
            proc.join(1)
            self.stop_worker()
            usage = None if sampler.peak_mb is None else Usage(peak_rss_mb=sampler.peak_mb)
            if outcome == "memory" and job.memory_limit_gb is not None:
                error = memory_limit_message(sampler.peak_mb or 0.0, job.memory_limit_gb)
            else:
                error = _death(proc)
            return _failed(job, started, error, usage)
        finally:
            with self.owner._lock:
                self.owner._running.pop(job.key, None)
                self.owner._cancelled.discard(job.key)

    def watch(self, job: Job, proc: BaseProcess, conn: Connection, sampler: TreeSampler) -> str:
        """Wait for the attempt's result (``"done"``) or the worker's death (``"died"``),
        sampling the memory of the worker and its processes meanwhile; over
        ``job.memory_limit_gb`` they are all killed (``"memory"``)."""
        limit_mb = None if job.memory_limit_gb is None else job.memory_limit_gb * 1024
        while True:
            try:
                ready = multiprocessing.connection.wait(
                    [conn, proc.sentinel], timeout=SAMPLE_SECONDS
                )
            except (OSError, ValueError):  # shutdown closed the pipe under us: the run ended
                return "died"
            if conn in ready:
                return "done"
            if ready:
                return "died"
            rss = sampler.sample()
            if limit_mb is not None and rss is not None and rss > limit_mb:
                _kill_tree(sampler.pid)
                return "memory"

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.is_alive() and proc.pid is not None:
            _kill_tree(proc.pid)
            # Until it is gone: killed just after it sent its result, the worker must
            # not look alive to this slot's next job (``ensure_worker``), which may
            # be another run's.
            with contextlib.suppress(OSError, ValueError):
                multiprocessing.connection.wait([proc.sentinel], timeout=_KILL_WAIT_SECONDS)

    def stop_worker(self) -> None:
        # The slot's thread (its worker died) and shutdown may both get here at
        # once: only one may close the pipe, or the other's close fails with EBADF.
        with self.owner._lock:
            conn, self.proc, self.conn = self.conn, None, None
        if conn is not None:
            conn.close()


def _kill_tree(pid: int) -> None:
    """SIGKILL a worker and every process it started.

    A ``bash`` task's command runs in a session of its own, so killing the worker
    alone would leave it running. The worker is stopped first so that it cannot
    start more while its descendants are listed.
    """
    import psutil

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            if os.getpgid(child.pid) == child.pid:  # a group leader: its whole group
                os.killpg(child.pid, signal.SIGKILL)
            else:
                child.kill()


def _labels(job: Job) -> dict[str, str]:
    """What the monitor labels this attempt's process tree with (``live_trees``)."""
    return {
        "pipeline": job.pipeline,
        "run_id": job.run_id,
        "task_id": job.task_id,
        "attempt": str(job.attempt),
    }


def _death(proc: BaseProcess) -> str:
    code = proc.exitcode
    if code is None:
        return "the worker process stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the worker process was killed by {name}"
    return f"the worker process exited with code {code}"


def _failed(job: Job, started: float, error: str, usage: Usage | None = None) -> AttemptResult:
    return AttemptResult(
        job.run_id, job.task_id, job.attempt, False, started, time.time(), error=error, usage=usage
    )


def _with_peak(usage: Usage | None, sampled_mb: float | None) -> Usage | None:
    """The worker's own figures, with the larger of its peak and the sampled tree peak."""
    if sampled_mb is None:
        return usage
    if usage is None:
        return Usage(peak_rss_mb=sampled_mb)
    own = usage.peak_rss_mb
    return Usage(usage.cpu_seconds, sampled_mb if own is None else max(own, sampled_mb))


def _let_fork_server_go() -> None:
    """Close this worker's copy of the fork server's "alive" pipe.

    The fork server exits when that pipe's write end is closed everywhere; every
    process it forks inherits a copy (to reach the same server, which a worker
    never does: one it would need it starts its own), so without this the fork
    server outlives a killed runner for as long as its workers, and
    ``die_with_parent`` never fires.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):
        with contextlib.suppress(OSError):
            os.close(fd)
        setattr(server, "_forkserver_alive_fd", None)  # noqa: B010  # a private attribute


def _worker_main(conn: Connection) -> None:
    """A worker: receive a job, execute it, send the result; until the pipe closes."""
    _let_fork_server_go()
    die_with_parent()  # the fork server exits with the runner, even a kill -9'd one
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        job: Any = pickle.loads(payload)
        result = execute(job, in_process=True)
        try:
            data = pickle.dumps(result)
        except Exception as exc:
            result.value = None
            result.ok = False
            result.error = f"the attempt's result cannot be sent back: {exc}"
            data = pickle.dumps(result)
        conn.send_bytes(data)
