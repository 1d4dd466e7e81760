"""What a run leaves in the process's shared executor pools when it detaches.

The pools outlive the runs: ``detach`` must drop the run's bookkeeping, and kill
only attempts that are still that run's (``executors.process``, ``executors.thread``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stageflow.runtime.attempt import AttemptResult, Job
from stageflow.runtime.executors.process import ProcessExecutor
from stageflow.runtime.executors.thread import ThreadExecutor

Key = tuple[str, str, int]


def nowhere(result: AttemptResult) -> Job | None:
    return None


def test_thread_detach_forgets_the_cancels_of_jobs_that_never_came() -> None:
    pool = ThreadExecutor()
    try:
        pool.attach("a", nowhere, 1)
        pool.attach("b", nowhere, 1)
        # Cancelled before they reached the executor (they never will): kept for ``_flag``.
        pool.cancel(("a", "never", 1))
        pool.cancel(("b", "never", 1))
        assert pool._early == {("a", "never", 1), ("b", "never", 1)}

        pool.detach("a")

        assert pool._early == {("b", "never", 1)}  # the other run's is kept
    finally:
        pool.shutdown()


def test_process_detach_forgets_the_cancels_no_slot_will_consume() -> None:
    pool = ProcessExecutor()  # no slots: nothing runs, no worker starts
    try:
        pool.attach("a", nowhere, 0)
        pool.attach("b", nowhere, 0)
        # Cancels of attempts that ended (or whose jobs a slot skips): nothing takes them.
        pool.cancel(("a", "ended", 1))
        pool.cancel(("b", "ended", 1))
        assert pool._cancelled == {("a", "ended", 1), ("b", "ended", 1)}

        pool.detach("a")
        assert pool._cancelled == {("b", "ended", 1)}  # the other run's is kept

        pool.cancel(("a", "late", 1))  # after the run detached: its jobs never run
        assert pool._cancelled == {("b", "ended", 1)}
    finally:
        pool.shutdown()


class _HandOverLock:
    """The pool's lock, with another thread taking it the moment it is let go: runs
    ``then`` once, right after the next release (a slot that finished one attempt
    registering its next job, which may be another run's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.then: Callable[[], None] | None = None

    def __enter__(self) -> _HandOverLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        then, self.then = self.then, None
        if then is not None:
            then()


class _FakeSlot:
    """A slot that records, at each kill, the attempt it was running then."""

    def __init__(self, pool: ProcessExecutor) -> None:
        self.pool = pool
        self.killed_while_on: list[Key | None] = []

    def kill(self) -> None:
        running: dict[Key, Any] = self.pool._running
        on = next((key for key, slot in running.items() if slot is self), None)
        self.killed_while_on.append(on)


@pytest.mark.parametrize("how", ["detach", "cancel"])
def test_process_kills_a_slot_only_while_it_runs_the_attempt_to_stop(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = ProcessExecutor()
    lock = _HandOverLock()
    monkeypatch.setattr(pool, "_lock", lock)
    mine, theirs = ("a", "t", 1), ("b", "t", 1)
    slot = _FakeSlot(pool)
    running: dict[Key, Any] = pool._running
    try:
        pool.attach("a", nowhere, 0)
        pool.attach("b", nowhere, 0)
        running[mine] = slot

        def take_over() -> None:  # the slot ends run a's attempt and takes run b's job
            del running[mine]
            running[theirs] = slot

        lock.then = take_over
        if how == "detach":
            pool.detach("a")
        else:
            pool.cancel(mine)

        assert running == {theirs: slot}  # the hand-over did happen
        assert slot.killed_while_on == [mine]  # killed on run a's attempt, not on b's
    finally:
        running.clear()
        pool.shutdown()


def answer() -> int:
    return 42


def test_process_slot_skips_a_job_whose_run_detached_after_the_slot_took_it(
    tmp_path: Path,
) -> None:
    from stageflow import Task
    from stageflow.runtime.executors.process import _Slot

    pool = ProcessExecutor()
    slot = _Slot(pool, 0)  # its thread never started: ``run`` is called here directly
    try:
        pool.attach("a", nowhere, 0)
        job = Job(
            run_id="a",
            task=Task("t", answer),
            attempt=1,
            parameters={},
            run_params={},
            artifacts_root=str(tmp_path / "artifacts"),
            logs_dir=tmp_path / "logs",
            inline_limit=1 << 20,
        )
        pool.detach("a")  # after ``loop`` saw the route, before the slot registered the job

        result = slot.run(job)

        assert not result.ok
        assert result.error == "its run ended before a worker started it"
        assert slot.proc is None  # no worker started for it
        assert pool._running == {}
    finally:
        slot.stop_worker()
        pool.shutdown()
