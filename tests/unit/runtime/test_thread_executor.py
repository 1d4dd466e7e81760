"""The ``thread`` executor (``runtime.executors.thread.ThreadExecutor``).

Real ``Job``s of tiny Python tasks run on real threads; the tasks and the test
meet on queues and ``threading.Event``s. Timeouts only bound a broken test.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stageflow import Task
from stageflow.operators.base import TaskContext
from stageflow.runtime.attempt import AttemptResult, Job
from stageflow.runtime.executors.base import Deliver
from stageflow.runtime.executors.thread import ThreadExecutor

WAIT = 10.0  # seconds: only ever reached when something is broken


# -- task functions ---------------------------------------------------------------------


def record_thread(sink: list[int]) -> int:
    ident = threading.get_ident()
    sink.append(ident)
    return ident


def block(started: queue.SimpleQueue[int], gate: threading.Event) -> bool:
    started.put(threading.get_ident())
    return gate.wait(WAIT)


def wait_for_cancel(context: TaskContext, started: threading.Event) -> bool:
    started.set()
    return context.cancelled.wait(WAIT)


def mark_ran(ran: list[str]) -> None:
    ran.append("ran")


# -- helpers ----------------------------------------------------------------------------


class Jobs:
    """Builds jobs of one run, with their files under ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, task_id: str, fn: Callable[..., Any], **parameters: Any) -> Job:
        return Job(
            run_id="run",
            task=Task(task_id, fn),
            attempt=1,
            parameters=parameters,
            run_params={},
            artifacts_root=str(self.home / "artifacts"),
            logs_dir=self.home / "logs",
            inline_limit=1 << 20,
        )


@pytest.fixture
def jobs(tmp_path: Path) -> Jobs:
    return Jobs(tmp_path)


class Pool:
    """An executor whose results land on a queue; ``then`` picks the job to run next."""

    def __init__(self, workers: int, then: Callable[[AttemptResult], Job | None]) -> None:
        self.results: queue.SimpleQueue[tuple[AttemptResult, int]] = queue.SimpleQueue()
        self._then = then
        deliver: Deliver = self._deliver
        self.executor = ThreadExecutor(workers, deliver)

    def _deliver(self, result: AttemptResult) -> Job | None:
        self.results.put((result, threading.get_ident()))
        return self._then(result)

    def take(self, n: int) -> list[AttemptResult]:
        return [self.results.get(timeout=WAIT)[0] for _ in range(n)]


@pytest.fixture
def pools() -> Iterator[Callable[..., Pool]]:
    made: list[Pool] = []

    def make(workers: int, then: Callable[[AttemptResult], Job | None] = lambda r: None) -> Pool:
        made.append(Pool(workers, then))
        return made[-1]

    yield make
    for pool in made:
        pool.executor.shutdown()


def alive(executor: ThreadExecutor) -> list[threading.Thread]:
    return [t for t in executor._threads if t.is_alive()]


def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (internal state no event signals) for up to ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


# -- tests ------------------------------------------------------------------------------


def test_a_chain_led_by_its_worker_runs_on_one_thread(
    jobs: Jobs, pools: Callable[..., Pool]
) -> None:
    length = 20
    seen: list[int] = []
    chain = [jobs(f"t{i}", record_thread, sink=seen) for i in range(length)]
    following = {job.task_id: nxt for job, nxt in itertools.pairwise(chain)}
    pool = pools(4, lambda r: following.get(r.task_id))

    pool.executor.submit(chain[0])
    delivered = [pool.results.get(timeout=WAIT) for _ in range(length)]

    assert [r.task_id for r, _ in delivered] == [j.task_id for j in chain]
    assert all(r.ok for r, _ in delivered), [r.error for r, _ in delivered]
    assert len(set(seen)) == 1  # every task of the chain on the same thread...
    assert {ident for _, ident in delivered} == set(seen)  # ...which delivered each result
    assert [r.value for r, _ in delivered] == seen
    assert len(pool.executor._threads) == 1  # and no second thread was started


def test_an_idle_thread_takes_the_next_job_without_a_new_one(
    jobs: Jobs, pools: Callable[..., Pool]
) -> None:
    seen: list[int] = []
    pool = pools(4)
    executor = pool.executor

    def all_idle() -> bool:
        return len(executor._idle) == len(executor._threads)

    for i in range(5):
        wait_until(all_idle)  # the thread went back to waiting for a job
        executor.submit(jobs(f"t{i}", record_thread, sink=seen))
        pool.take(1)

    assert len(set(seen)) == 1
    assert len(pool.executor._threads) == 1


@pytest.mark.parametrize(
    ("workers", "threads"),
    [
        pytest.param(3, 3, id="one-thread-per-job"),
        pytest.param(2, 2, id="capped-at-workers"),
        pytest.param(8, 3, id="no-more-than-jobs"),
    ],
)
def test_jobs_submitted_together_start_threads_up_to_the_pool_size(
    jobs: Jobs, pools: Callable[..., Pool], workers: int, threads: int
) -> None:
    started: queue.SimpleQueue[int] = queue.SimpleQueue()
    gate = threading.Event()
    pool = pools(workers)

    for i in range(3):
        pool.executor.submit(jobs(f"t{i}", block, started=started, gate=gate))
    running = {started.get(timeout=WAIT) for _ in range(threads)}

    assert len(running) == threads  # each on a thread of its own, at the same time
    assert len(pool.executor._threads) == threads
    if threads < 3:  # the last job waits for a free thread
        with pytest.raises(queue.Empty):
            started.get(timeout=0.2)

    gate.set()
    results = pool.take(3)

    assert sorted(r.task_id for r in results) == ["t0", "t1", "t2"]
    assert all(r.ok and r.value is True for r in results)
    assert len(pool.executor._threads) == threads  # never more than that


def test_cancel_of_a_job_its_worker_kept_sets_its_cancellation_flag(
    jobs: Jobs, pools: Callable[..., Pool]
) -> None:
    started = threading.Event()
    second = jobs("waits", wait_for_cancel, started=started)
    pool = pools(2, lambda r: second if r.task_id == "first" else None)

    pool.executor.submit(jobs("first", record_thread, sink=[]))
    assert started.wait(WAIT)  # the worker runs the job deliver handed it
    pool.executor.cancel(second.key)
    first, cancelled = pool.take(2)

    assert first.task_id == "first"
    assert cancelled.task_id == "waits"
    assert cancelled.ok and cancelled.value is True  # the task saw its flag set
    # The abandoned attempt kept its thread: the pool grew by one to make up for it,
    # and shrinks back once the attempt returned.
    assert pool.executor._wanted == 2
    assert len(pool.executor._threads) == 2


def test_cancel_of_an_unknown_or_finished_attempt_does_nothing(
    jobs: Jobs, pools: Callable[..., Pool]
) -> None:
    pool = pools(1)
    job = jobs("t", record_thread, sink=[])
    pool.executor.submit(job)
    pool.take(1)

    pool.executor.cancel(job.key)
    pool.executor.cancel(("run", "nope", 1))

    assert pool.executor._wanted == 1
    assert len(pool.executor._threads) == 1


def test_a_job_cancelled_before_a_thread_took_it_never_runs(
    jobs: Jobs, pools: Callable[..., Pool]
) -> None:
    started: queue.SimpleQueue[int] = queue.SimpleQueue()
    gate = threading.Event()
    ran: list[str] = []
    pool = pools(1)
    pool.executor.submit(jobs("busy", block, started=started, gate=gate))
    started.get(timeout=WAIT)
    queued = jobs("queued", mark_ran, ran=ran)
    pool.executor.submit(queued)

    pool.executor.cancel(queued.key)
    gate.set()
    (busy,) = pool.take(1)
    pool.executor.shutdown()  # the queue is first in, first out: "queued" was taken first

    assert busy.task_id == "busy"
    assert ran == []
    assert pool.results.empty()  # no result for the cancelled job


def test_a_job_cancelled_before_it_reached_the_executor_never_runs(
    jobs: Jobs, pools: Callable[..., Pool]
) -> None:
    # A step starts a job and, before the job is handed over (after the run's lock
    # is let go), another step cancels it: the cancel must not be lost.
    ran: list[str] = []
    pool = pools(2)
    early = jobs("early", mark_ran, ran=ran)

    pool.executor.cancel(early.key)  # before submit: nothing knows the key yet
    pool.executor.submit(early)
    pool.executor.submit(jobs("after", record_thread, sink=[]))
    (after,) = pool.take(1)
    pool.executor.shutdown()

    assert after.task_id == "after"
    assert ran == []
    assert pool.results.empty()  # no result for the cancelled job
    assert pool.executor._early == set()  # the key was consumed


def test_a_kept_job_cancelled_before_its_worker_took_it_never_runs(
    jobs: Jobs, pools: Callable[..., Pool]
) -> None:
    ran: list[str] = []
    kept = jobs("kept", mark_ran, ran=ran)
    executor: list[ThreadExecutor] = []

    def then(result: AttemptResult) -> Job | None:
        if result.task_id != "first":
            return None
        executor[0].cancel(kept.key)  # another step cancels it while it is handed over
        return kept

    pool = pools(1, then)
    executor.append(pool.executor)
    pool.executor.submit(jobs("first", record_thread, sink=[]))
    (first,) = pool.take(1)
    pool.executor.submit(jobs("last", record_thread, sink=[]))
    (last,) = pool.take(1)  # the same (only) thread went on past the cancelled job

    assert (first.task_id, last.task_id) == ("first", "last")
    assert ran == []
    assert pool.results.empty()


def test_shutdown_stops_the_threads_and_tells_running_attempts_to_stop(
    jobs: Jobs, pools: Callable[..., Pool]
) -> None:
    started = threading.Event()
    pool = pools(3)
    pool.executor.submit(jobs("quick", record_thread, sink=[]))
    pool.take(1)
    pool.executor.submit(jobs("waits", wait_for_cancel, started=started))
    assert started.wait(WAIT)
    threads = list(pool.executor._threads)
    assert alive(pool.executor)

    pool.executor.shutdown()

    assert not any(t.is_alive() for t in threads)
    assert pool.results.empty()  # a stopped attempt's late result is not delivered
