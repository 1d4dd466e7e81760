"""The live view's frames and the in-process cancel request behind Ctrl-C.

``LiveProgress`` is drawn into a recording console (no terminal, no timer): a
frame is what its refresh thread would draw at that moment. The interrupt test
runs a real pipeline on the thread executor in this process.
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

import pytest

from stageflow import Pipeline, Task
from stageflow.engine.scheduler import Transition
from stageflow.engine.states import TaskState
from stageflow.operators.base import TaskContext
from stageflow.runtime.interrupt import Interrupt
from stageflow.runtime.runner import RunStarted, run_pipeline
from stageflow.service.progress import LiveProgress, _rows

S = TaskState


def wait_cancelled(context: TaskContext) -> str:
    context.cancelled.wait(20)
    return "waited"


def frame(view: LiveProgress) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(view._render())
    return console.export_text()


def t(task: str, old: TaskState, new: TaskState, at: float, msg: str | None = None) -> Transition:
    return Transition(task, old, new, 1, at, msg)


def test_the_first_frame_names_the_run_and_the_pipeline() -> None:
    view = LiveProgress(io.StringIO())
    view.states["a"] = "pending"  # before `started`, nothing names the run
    view.run_id = "20261205-070710-e138fc"
    view.pipeline = "demo"
    text = frame(view)
    assert "run 20261205-070710-e138fc · pipeline 'demo' · 0/1 done" in text
    assert "Ctrl-C cancels" in text


def test_a_running_task_ticks_and_a_failed_one_shows_its_last_lines() -> None:
    view = LiveProgress(io.StringIO())
    view.run_id, view.pipeline = "r", "p"
    view.states = {"a": "pending", "b": "pending"}
    view(t("a", S.QUEUED, S.RUNNING, at=0.0))
    view(t("b", S.QUEUED, S.RUNNING, at=0.0))
    failure = "bash command exited with code 2; last output:\none\ntwo\nthree\nfour"
    view(t("b", S.RUNNING, S.FAILED, at=1.0, msg=failure))
    text = frame(view)
    assert "1/2 done · 1 failed" in text
    assert "b failed: two\n  three\n  four" in text  # the last three lines, not the first
    first = next(line for line in text.splitlines() if "│ a" in line)
    assert "running" in first and first.rstrip(" │").endswith("s")


def test_warnings_logged_while_live_are_kept_once_not_printed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    view = LiveProgress(io.StringIO())
    try:
        view.started(RunStarted("r", "p", ["a"], resumed=False))
        log = logging.getLogger("stageflow.runtime.runner")
        log.warning("run r task a attempt 1 failed, retry due in 1.0s: boom")
        log.warning("run r task a attempt 1 failed, retry due in 1.0s: boom")
        view.__exit__(None, None, None)
    finally:
        root.removeHandler(handler)
    assert stream.getvalue() == ""  # diverted from the terminal handler
    assert view.messages == ["run r task a attempt 1 failed, retry due in 1.0s: boom"]
    assert frame(view).count("retry due in 1.0s") == 1
    logging.getLogger("stageflow.x").warning("after the view")
    assert view.messages[-1] != "after the view"  # the filter is gone with the view


def test_rows_keep_busy_tasks_first_when_there_are_too_many() -> None:
    states = {f"t{i}": "success" for i in range(100)} | {"t77": "running", "t99": "failed"}
    shown = _rows(states)
    assert len(shown) == 40
    assert "t77" in shown and "t99" in shown
    assert shown == sorted(shown, key=lambda tid: int(tid[1:]))  # pipeline order


def test_an_interrupt_cancels_the_run_it_is_given(tmp_path: Path) -> None:
    interrupt = Interrupt()
    started = threading.Event()
    pipeline = Pipeline(
        "interrupted",
        tasks=[Task("wait", wait_cancelled), Task("after", wait_cancelled, upstream=["wait"])],
    )

    def on_start(info: RunStarted) -> None:
        assert info.pipeline == "interrupted" and info.task_ids == ["wait", "after"]
        started.set()

    timer = threading.Thread(target=lambda: started.wait(10) and interrupt.request())
    timer.start()
    result = run_pipeline(pipeline, home=tmp_path, on_start=on_start, interrupt=interrupt)
    timer.join()
    assert result.state == "cancelled"
    assert {tid: r.state for tid, r in result.tasks.items()} == {
        "wait": "cancelled",
        "after": "cancelled",
    }
    assert result.tasks["after"].error == "cancelled: interrupted (Ctrl-C)"
