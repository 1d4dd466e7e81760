"""Many runs in one runtime: MAX_CONCURRENT_RUNS, run priority, one global budget.

Real runs (threads, SQLite); every claim is proven from the timestamps the
store recorded, never from timing assertions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from stageflow import InvalidSpec, LocalRuntime, Pipeline, Task
from stageflow.engine.admission import Capacity
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import AttemptRecord


def nap() -> str:
    time.sleep(0.05)
    return "ok"


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at one instant."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in points:  # an end sorts before a start at the same instant
        now += step
        best = max(best, now)
    return best


def _attempts(settings: Settings, run_ids: list[str]) -> list[AttemptRecord]:
    store = open_store(settings.database_url, settings.home)
    try:
        return [a for rid in run_ids for a in store.attempts(rid)]
    finally:
        store.close()


def test_twenty_concurrent_runs_all_finish_within_the_run_limit(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with LocalRuntime(
        settings=settings, capacity=Capacity(cpu=4, memory_gb=8), max_concurrent_runs=3
    ) as runtime:
        handles = [
            runtime.submit(
                Pipeline(
                    f"p{k % 4}",
                    tasks=[
                        Task("a", nap, resources={"cpu": 1}),
                        Task("b", nap, upstream=["a"], resources={"cpu": 1, "memory_gb": 3}),
                    ],
                ),
                priority=k % 3,
            )
            for k in range(20)
        ]
        results = [h.result(timeout=120) for h in handles]
    assert [r.state for r in results] == ["success"] * 20  # no run starved
    assert runtime.admission.held == 0  # nothing leaked across 20 runs
    store = open_store(settings.database_url, settings.home)
    try:
        runs = [store.get_run(h.run_id) for h in handles]
    finally:
        store.close()
    spans = [(r.started_at or 0.0, r.ended_at or 0.0) for r in runs]
    assert all(s > 0 and e >= s for s, e in spans)
    assert _most_at_once(spans) <= 3
    # one global budget: memory held by all runs' attempts never exceeds 8 GB
    attempts = _attempts(settings, [h.run_id for h in handles])
    heavy = [
        (a.started_at or 0.0, a.ended_at or 0.0)
        for a in attempts
        if a.request_json and json.loads(a.request_json).get("memory_gb") == 3
    ]
    assert len(heavy) == 20
    assert _most_at_once(heavy) <= 2  # 3 GB each on 8 GB


def test_queued_runs_start_by_priority_then_submission(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with LocalRuntime(
        settings=settings, capacity=Capacity(cpu=2, memory_gb=8), max_concurrent_runs=1
    ) as runtime:
        first = runtime.submit(Pipeline("blocker", tasks=[Task("a", nap)]))
        low = runtime.submit(Pipeline("low", tasks=[Task("a", nap)]), priority=0)
        high = runtime.submit(Pipeline("high", tasks=[Task("a", nap)]), priority=5)
        low2 = runtime.submit(Pipeline("low2", tasks=[Task("a", nap)]), priority=0)
        for h in (first, low, high, low2):
            assert h.result(timeout=60).ok
    store = open_store(settings.database_url, settings.home)
    try:
        started = {h.pipeline: store.get_run(h.run_id).started_at or 0.0 for h in (low, high, low2)}
    finally:
        store.close()
    assert sorted(started, key=started.__getitem__) == ["high", "low", "low2"]


def test_a_big_task_is_not_starved_by_other_runs_small_ones(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    small = Pipeline(
        "small",
        tasks=[Task(f"s{i}", nap, resources={"cpu": 1, "memory_gb": 2}) for i in range(12)],
    )
    big = Pipeline("big", tasks=[Task("huge", nap, resources={"cpu": 1, "memory_gb": 8})])
    with LocalRuntime(
        settings=settings, capacity=Capacity(cpu=8, memory_gb=8), max_concurrent_runs=4
    ) as runtime:
        handles = [runtime.submit(small) for _ in range(3)]
        handles.insert(1, runtime.submit(big))
        results = [h.result(timeout=120) for h in handles]
    assert all(r.ok for r in results)
    attempts = _attempts(settings, [h.run_id for h in handles])
    huge = next(a for a in attempts if a.task_id == "huge")
    others = [a for a in attempts if a.task_id != "huge"]
    # it ran alone (8 of 8 GB), and tasks of other runs did start after it
    assert huge.started_at is not None and huge.ended_at is not None
    for a in others:
        assert a.ended_at is not None and a.started_at is not None
        assert a.ended_at <= huge.started_at or a.started_at >= huge.ended_at
    assert any(a.started_at >= huge.ended_at for a in others if a.started_at is not None)


def test_a_submission_that_cannot_fit_is_refused_and_nothing_is_recorded(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    runtime = LocalRuntime(settings=settings, capacity=Capacity(cpu=2, memory_gb=4))
    with runtime, pytest.raises(InvalidSpec) as info:
        runtime.submit(Pipeline("big", tasks=[Task("train", nap, resources={"gpu": 1})]))
    text = str(info.value)
    assert "task 'train'" in text and "resources.gpu is 1" in text and "0 GPUs" in text
    store = open_store(settings.database_url, settings.home)
    try:
        assert store.list_runs() == []
    finally:
        store.close()


def test_max_concurrent_runs_must_be_positive(tmp_path: Path) -> None:
    from stageflow.errors import UsageError

    with pytest.raises(UsageError, match="max_concurrent_runs is 0"):
        LocalRuntime(settings=_settings(tmp_path), max_concurrent_runs=0)
