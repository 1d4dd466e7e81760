"""The run loop's leader/follower step runner (``runtime.cycle.Cycle``).

Real threads throughout; they meet on ``threading.Event``s, never on sleeps.
Timeouts are generous and only bound a test that would otherwise hang.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stageflow import Task
from stageflow.runtime.attempt import AttemptResult, Job
from stageflow.runtime.cycle import Cycle

WAIT = 10.0  # seconds: only ever reached when something is broken
NOW = 42.0


def noop() -> None:
    return None


def result(task_id: str, attempt: int = 1) -> AttemptResult:
    return AttemptResult("run", task_id, attempt, True, 1.0, 2.0)


def job(task_id: str) -> Job:
    return Job(
        run_id="run",
        task=Task(task_id, noop),
        attempt=1,
        parameters={},
        run_params={},
        artifacts_root="artifacts",
        logs_dir=Path("logs"),
        inline_limit=0,
    )


class Recorder:
    """A step that records every call's results and answers with scripted jobs."""

    def __init__(self, jobs: list[list[Job]] | None = None, look: float = math.inf) -> None:
        self.calls: list[tuple[list[AttemptResult], float]] = []
        self.jobs = list(jobs or [])
        self.look = look
        self.inside = 0
        self.overlapped = False  # two threads were ever inside the step at once

    def __call__(self, results: list[AttemptResult], now: float) -> tuple[list[Job], float]:
        self.inside += 1
        if self.inside > 1:
            self.overlapped = True
        try:
            self.calls.append((list(results), now))
            return (self.jobs.pop(0) if self.jobs else []), self.look
        finally:
            self.inside -= 1

    @property
    def recorded(self) -> list[AttemptResult]:
        return [r for results, _ in self.calls for r in results]


def make_cycle(step: Recorder) -> tuple[Cycle, list[Job]]:
    submitted: list[Job] = []
    return Cycle(step, lambda: NOW, submitted.append), submitted


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``fn`` in a new thread; its return value lands in the returned list."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


# -- deliver ----------------------------------------------------------------------------


def test_deliver_with_the_lock_free_leads_and_keeps_the_first_job() -> None:
    first, second, third = job("a"), job("b"), job("c")
    step = Recorder(jobs=[[first, second, third]])
    cycle, submitted = make_cycle(step)
    done = result("x")

    kept = cycle.deliver(done)

    assert kept is first
    assert submitted == [second, third]  # the others go to the pool, in order
    assert step.calls == [([done], NOW)]  # one step, with the result, at the clock's time
    assert not cycle.lock.locked()


def test_deliver_with_nothing_started_returns_none() -> None:
    step = Recorder()
    cycle, submitted = make_cycle(step)

    assert cycle.deliver(result("x")) is None
    assert submitted == []
    assert step.recorded == [result("x")]


def test_deliver_while_the_lock_is_held_leaves_the_result_pending() -> None:
    step = Recorder(jobs=[[job("next")]])
    cycle, submitted = make_cycle(step)
    done = result("x")

    with cycle.lock:  # another thread (here: the test's) holds the step
        worker, returned = in_thread(lambda: cycle.deliver(done))
        worker.join(WAIT)
        assert not worker.is_alive()  # a worker never blocks on the lock
        assert returned == [None]
        assert step.calls == []  # not run: the result waits for the holder

    cycle.run_step(50.0)  # the holder looks again: the result is recorded, once

    assert step.recorded == [done]
    assert len(submitted) == 1  # the run's thread keeps no job: it submits them all
    cycle.run_step(51.0)
    assert step.recorded == [done]  # not a second time


def test_the_run_thread_does_not_sleep_on_a_result_left_while_it_held_the_lock() -> None:
    # The run's thread holds the lock to compute how long to sleep; a worker that
    # finishes then leaves its result pending: the thread must not sleep on it.
    step = Recorder()
    cycle, _ = make_cycle(step)
    done = result("x")

    with cycle.lock:
        worker, returned = in_thread(lambda: cycle.deliver(done))
        worker.join(WAIT)
        assert returned == [None]
    started = time.monotonic()
    cycle.sleep(WAIT)
    assert time.monotonic() - started < WAIT / 2  # it looked at once
    cycle.run_step(NOW)

    assert step.recorded == [done]


def test_a_result_delivered_during_run_step_is_recorded_after_it() -> None:
    """The holder (``run_step``) checks ``pending`` after releasing: nothing is stranded."""
    entered, release = threading.Event(), threading.Event()
    later_job = job("later")
    calls: list[list[AttemptResult]] = []

    def step(results: list[AttemptResult], now: float) -> tuple[list[Job], float]:
        calls.append(list(results))
        if len(calls) == 1:
            entered.set()
            assert release.wait(WAIT)
            return [], math.inf
        return [later_job], math.inf

    submitted: list[Job] = []
    cycle = Cycle(step, lambda: NOW, submitted.append)
    holder, _ = in_thread(lambda: cycle.run_step(NOW))
    assert entered.wait(WAIT)

    done = result("x")
    worker, returned = in_thread(lambda: cycle.deliver(done))
    worker.join(WAIT)
    assert returned == [None]  # the lock was held: the worker went on without leading
    release.set()
    holder.join(WAIT)

    assert not holder.is_alive()
    assert calls == [[], [done]]
    assert submitted == [later_job]  # run_step's own follow-up step keeps nothing


def test_the_leader_steps_again_for_results_left_while_it_held_the_lock() -> None:
    first_job, second_job = job("first"), job("second")
    early, late = result("early"), result("late")
    calls: list[list[AttemptResult]] = []
    follower_returned: list[object] = []
    submitted: list[Job] = []
    cycle: Cycle

    def step(results: list[AttemptResult], now: float) -> tuple[list[Job], float]:
        calls.append(list(results))
        if len(calls) == 1:  # another worker finishes while this one leads
            follower, out = in_thread(lambda: cycle.deliver(late))
            follower.join(WAIT)
            follower_returned.extend(out)
            return [first_job], math.inf
        return [second_job], math.inf

    cycle = Cycle(step, lambda: NOW, submitted.append)

    kept = cycle.deliver(early)

    assert follower_returned == [None]
    assert calls == [[early], [late]]
    assert kept is first_job  # the leader keeps the first job of its first step
    assert submitted == [second_job]  # and submits the rest


def test_results_delivered_concurrently_are_each_recorded_exactly_once() -> None:
    threads_count, per_thread = 8, 500
    step = Recorder()
    cycle, submitted = make_cycle(step)
    start = threading.Barrier(threads_count)
    returned: list[object] = []

    def worker(n: int) -> None:
        start.wait(WAIT)
        for i in range(per_thread):
            returned.append(cycle.deliver(result(f"t{n}", i)))

    threads = [
        threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads_count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    assert not any(t.is_alive() for t in threads)
    cycle.run_step(NOW)  # whatever the last leader left behind

    counts = collections.Counter((r.task_id, r.attempt) for r in step.recorded)
    expected = {(f"t{n}", i) for n in range(threads_count) for i in range(per_thread)}
    assert set(counts) == expected
    assert max(counts.values()) == 1
    assert not step.overlapped  # one thread at a time inside the step
    assert returned == [None] * (threads_count * per_thread)
    assert submitted == []


# -- a failing step ---------------------------------------------------------------------


def test_a_step_that_raises_in_deliver_closes_the_cycle_and_wakes_the_sleeper() -> None:
    boom = RuntimeError("boom")
    calls: list[list[AttemptResult]] = []

    def step(results: list[AttemptResult], now: float) -> tuple[list[Job], float]:
        calls.append(list(results))
        raise boom

    cycle = Cycle(step, lambda: NOW, lambda job: None)

    def sleep() -> float:
        started = time.monotonic()
        cycle.sleep(WAIT)
        return time.monotonic() - started

    sleeper, slept = in_thread(sleep)

    assert cycle.deliver(result("x")) is None  # not raised on the worker's thread
    sleeper.join(WAIT)

    assert not sleeper.is_alive()
    assert slept[0] < WAIT / 2  # woken, not timed out
    assert cycle.error is boom
    assert cycle.closed
    assert not cycle.lock.locked()

    assert cycle.deliver(result("y")) is None
    cycle.run_step(NOW)
    assert len(calls) == 1  # no step after the failure


def test_close_stops_deliver_and_run_step_from_stepping() -> None:
    step = Recorder(jobs=[[job("a")]])
    cycle, submitted = make_cycle(step)

    cycle.close()

    assert cycle.closed
    assert cycle.deliver(result("x")) is None
    cycle.run_step(NOW)
    assert step.calls == []
    assert submitted == []
    assert cycle.error is None


# -- waking the run's thread ------------------------------------------------------------


@pytest.mark.parametrize(
    ("look_at", "look", "woken"),
    [
        pytest.param(100.0, 50.0, True, id="earlier-wakes"),
        pytest.param(100.0, 100.0, False, id="same-time-does-not"),
        pytest.param(100.0, 150.0, False, id="later-does-not"),
        pytest.param(math.inf, 150.0, True, id="any-time-beats-never"),
        pytest.param(math.inf, math.inf, False, id="never-does-not"),
    ],
)
def test_a_step_wakes_the_run_thread_only_when_its_timer_moved_earlier(
    look_at: float, look: float, woken: bool
) -> None:
    step = Recorder(look=look)
    cycle, _ = make_cycle(step)
    cycle.look_at = look_at

    cycle.deliver(result("x"))

    assert cycle._wakeup.is_set() is woken
    started = time.monotonic()
    cycle.sleep(0.2)
    slept = time.monotonic() - started
    if woken:
        assert slept < 0.15
    else:
        assert slept >= 0.19  # the whole timeout
    assert not cycle._wakeup.is_set()  # sleeping consumes the wake-up


def test_run_step_does_not_wake_the_run_thread() -> None:
    step = Recorder(look=0.0)  # the run's thread sets look_at itself after its own step
    cycle, _ = make_cycle(step)
    cycle.look_at = 100.0

    cycle.run_step(NOW)

    assert step.calls == [([], NOW)]
    assert not cycle._wakeup.is_set()


def test_wake_makes_a_sleeping_run_thread_look_now() -> None:
    cycle, _ = make_cycle(Recorder())
    entered = threading.Event()

    def sleep() -> float:
        entered.set()
        started = time.monotonic()
        cycle.sleep(WAIT)
        return time.monotonic() - started

    sleeper, slept = in_thread(sleep)
    assert entered.wait(WAIT)
    cycle.wake()
    sleeper.join(WAIT)

    assert not sleeper.is_alive()
    assert slept[0] < WAIT / 2


def test_sleep_of_zero_seconds_clears_a_pending_wake_up_without_waiting() -> None:
    cycle, _ = make_cycle(Recorder())
    cycle.wake()

    cycle.sleep(0)

    assert not cycle._wakeup.is_set()
