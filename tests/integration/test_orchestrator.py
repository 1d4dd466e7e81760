"""``Orchestrator``: blocking and asyncio faces over real runs (threads, SQLite).

The asyncio test proves the event loop stays free: a ticker task advances while
two runs are awaited, and the runs' own recorded spans show they overlapped.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from helpers_tasks import wait_cancelled

from stageflow import Orchestrator, Pipeline, Task
from stageflow.errors import RunNotFound
from stageflow.runtime.result import RunResult
from stageflow.runtime.settings import Settings


def nap() -> str:
    time.sleep(0.3)
    return "ok"


def double(a: str) -> str:
    return a * 2


def _pipeline(name: str = "orch") -> Pipeline:
    return Pipeline(name, tasks=[Task("a", nap), Task("b", double, upstream=["a"])])


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def test_submit_two_runs_and_execute_one(tmp_path: Path) -> None:
    with Orchestrator(settings=_settings(tmp_path), max_concurrent_runs=2) as orch:
        first, second = orch.submit(_pipeline()), orch.submit(_pipeline(), priority=1)
        assert first.run_id != second.run_id
        results = [first.result(timeout=60), second.result(timeout=60)]
        third = orch.execute(_pipeline())
    assert [r.state for r in [*results, third]] == ["success"] * 3
    assert third.tasks["b"].state == "success"


def test_execute_async_does_not_block_the_event_loop(tmp_path: Path) -> None:
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def main(orch: Orchestrator) -> list[str]:
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(stop))
        results = await asyncio.gather(
            orch.execute_async(_pipeline()), orch.execute_async(_pipeline())
        )
        stop.set()
        await ticking
        handle = orch.submit(_pipeline())
        awaited = await orch.wait(handle)
        again = await orch.wait(handle.run_id)  # ended: answered from the store
        return [r.state for r in [*results, awaited, again]]

    with Orchestrator(settings=_settings(tmp_path), max_concurrent_runs=2) as orch:
        states = asyncio.run(main(orch))
        runs = orch.history(limit=3)
    assert states == ["success"] * 4
    # each run naps 0.3 s; a loop blocked by them would tick a handful of times at most
    assert ticks >= 10, ticks
    a, b = sorted(runs[1:], key=lambda r: r.started_at or 0.0)
    assert (a.ended_at or 0.0) > (b.started_at or 0.0)  # the two awaited runs overlapped


def test_await_execute_inside_a_running_loop_keeps_the_loop_free(tmp_path: Path) -> None:
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def main(orch: Orchestrator) -> list[str]:
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(stop))
        # seed 000's spelling: inside a loop, execute returns an awaitable
        first = await orch.execute(_pipeline())
        pending = orch.execute(_pipeline("other"))
        assert not isinstance(pending, RunResult)
        second = await pending
        # in a thread with no running loop, the same call blocks and returns the result
        third = await asyncio.get_running_loop().run_in_executor(None, orch.execute, _pipeline())
        stop.set()
        await ticking
        assert isinstance(third, RunResult)
        return [r.state for r in (first, second, third)]

    with Orchestrator(settings=_settings(tmp_path)) as orch:
        states = asyncio.run(main(orch))
        blocking = orch.execute(_pipeline())  # no loop here: blocks, as before
    assert states == ["success"] * 3
    assert isinstance(blocking, RunResult) and blocking.state == "success"
    # three runs of 0.3 s were awaited; a loop blocked by them would barely tick
    assert ticks >= 20, ticks


def test_status_history_and_stats_reflect_the_runs(tmp_path: Path) -> None:
    with Orchestrator(settings=_settings(tmp_path)) as orch:
        done = orch.execute(_pipeline("one"))
        orch.execute(_pipeline("two"))
        status = orch.status(done.run_id)
        history = orch.history()
        of_one = orch.history("one", limit=5)
        stats = orch.stats("one", days=1)
        with pytest.raises(RunNotFound):
            orch.status("no-such-run")
    assert status.state == "success"
    assert {t: r.state for t, r in status.tasks.items()} == {"a": "success", "b": "success"}
    assert [r.pipeline for r in history] == ["two", "one"]
    assert [r.run_id for r in of_one] == [done.run_id]
    assert stats.runs == 1
    assert {t.task_id for t in stats.tasks} == {"a", "b"}


def test_cancel_a_running_run(tmp_path: Path) -> None:
    pipeline = Pipeline("stop", tasks=[Task("blocker", wait_cancelled)])
    with Orchestrator(settings=_settings(tmp_path)) as orch:
        handle = orch.submit(pipeline)
        deadline = time.monotonic() + 30
        while orch.status(handle.run_id).tasks.get("blocker") is None or (
            orch.status(handle.run_id).tasks["blocker"].state != "running"
        ):
            assert time.monotonic() < deadline, "blocker never started"
            time.sleep(0.02)
        message = orch.cancel(handle.run_id, by="dana")
        result = handle.result(timeout=30)
    assert "to cancel run" in message
    assert result.state == "cancelled"
    assert result.tasks["blocker"].state == "cancelled"
