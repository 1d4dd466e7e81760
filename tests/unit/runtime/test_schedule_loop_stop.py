"""A schedule loop stops at a signal without the deadlock ``Event.set`` risks there.

A signal handler runs on the main thread between two bytecodes, possibly while that
thread's ``Event.wait`` holds the event's lock: a handler calling ``Event.set`` then
waits for a lock its own thread holds, forever (seen once as a ``stageflow scheduler``
that ignored SIGTERM). ``stop_soon`` only sets a flag."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from stageflow.runtime.schedule_loop import ScheduleLoop
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store


def test_stop_soon_takes_no_lock_and_ends_the_loop_within_its_slice(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings.database_url, settings.home)
    try:
        loop = ScheduleLoop(settings, store, poll_seconds=30.0)
        held = loop._stop._cond  # what an interrupted Event.wait of this thread holds
        with held:
            done = threading.Event()
            # As a handler would, on the thread holding the lock: it must not block.
            caller = threading.Thread(target=lambda: (loop.stop_soon(), done.set()))
            caller.start()
            assert done.wait(2), "stop_soon blocked on the event's lock"
            blocked = threading.Thread(target=loop.stop, daemon=True)
            blocked.start()
            blocked.join(0.2)
            assert blocked.is_alive(), "stop takes the lock: not for a signal handler"
        started = time.monotonic()
        loop.serve_forever()  # asked to stop already: one pass, then out
        assert time.monotonic() - started < 1.0
    finally:
        store.close()


def test_a_loop_asked_to_stop_mid_wait_leaves_within_a_tenth_of_a_second(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings.database_url, settings.home)
    try:
        loop = ScheduleLoop(settings, store, poll_seconds=30.0)
        timer = threading.Timer(0.3, loop.stop_soon)
        timer.start()
        started = time.monotonic()
        loop.serve_forever()
        assert 0.25 < time.monotonic() - started < 1.0
    finally:
        store.close()


def test_a_pass_that_fails_is_logged_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings.database_url, settings.home)
    try:
        loop = ScheduleLoop(settings, store, poll_seconds=0.01)
        passes: list[int] = []

        def failing_pass(now: float | None = None) -> None:
            passes.append(1)
            if len(passes) == 1:
                raise RuntimeError("a bug in a pass")
            loop.stop_soon()

        loop.run_pass = failing_pass  # type: ignore[method-assign,assignment]
        loop.serve_forever()
        assert len(passes) == 2  # the second pass came after the failed one
        assert "a pass failed; trying again next pass" in caplog.text
        assert "a bug in a pass" in caplog.text
    finally:
        store.close()
