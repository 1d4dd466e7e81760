"""The process executor shut down while an attempt is still being watched.

A run that ends (cancelled, timed out) shuts its executor down while a slot's
thread may still wait on the worker's pipe; the shutdown closes that pipe. The
slot's thread must end quietly, not die with ``OSError: handle is closed``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import usage_tasks as u
from helpers_tasks import wait_until

from stageflow import Task
from stageflow.runtime.attempt import AttemptResult, Job
from stageflow.runtime.executors.process import ProcessExecutor

pytestmark = pytest.mark.slow


def test_shutdown_during_a_watched_attempt_leaves_no_thread_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stageflow.runtime.executors import process

    errors: list[BaseException | None] = []
    sample = process.TreeSampler.sample
    closing = threading.Event()

    def sample_then_lose_the_race(self: Any) -> Any:
        # The losing order, made certain: shutdown closes the pipe while the slot's
        # thread is between two waits on it (sampling the worker's memory).
        value = sample(self)
        if closing.is_set():
            slot.stop_worker()
            closing.clear()
        return value

    monkeypatch.setattr(process.TreeSampler, "sample", sample_then_lose_the_race)
    previous = threading.excepthook

    def hook(args: Any) -> None:
        errors.append(args.exc_value)

    threading.excepthook = hook
    delivered: list[AttemptResult] = []
    try:
        executor = ProcessExecutor(1, lambda result: delivered.append(result) or None)
        job = Job(
            "r1",
            Task("sleepy", u.child_holds, parameters={"mb": 1, "seconds": 30}),
            1,
            {"mb": 1, "seconds": 30},
            {},
            str(tmp_path / "artifacts"),
            tmp_path / "logs",
            65536,
        )
        executor.submit(job)
        slot = executor._slots[0]
        wait_until(lambda: slot.proc is not None and slot.proc.is_alive(), "the worker runs")
        closing.set()
        wait_until(lambda: bool(delivered), "the slot reports the attempt", timeout=10)
        executor.shutdown()
        slot.thread.join(10)
    finally:
        threading.excepthook = previous
    assert not slot.thread.is_alive()
    assert errors == []
    assert not delivered[0].ok  # the attempt failed (its worker is gone), and said so
