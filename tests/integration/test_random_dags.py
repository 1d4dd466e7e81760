"""Real runs of random DAGs of Python tasks: each task runs once, after its upstream,
with the upstream outputs passed positionally in ``upstream`` order.

Thread executor: a hypothesis search over random graphs; every task appends
``(task_id, "start"/"end", perf_counter())`` to one list under a lock, so the
list's order is the order things happened. Process executor: one example-based
graph; processes share no memory, so each task returns what it saw and when
(``time.perf_counter`` is the system-wide monotonic clock on Linux, comparable
across processes), and the store's ``started_at``/``ended_at`` are checked too.
No durations are asserted, only orders.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stageflow.engine import RunState, TaskState
from stageflow.operators.base import TaskContext
from stageflow.spec.models import Pipeline, Task

MAX_PARALLEL = 4

Event = tuple[str, str, float]


@st.composite
def random_dags(draw: st.DrawFn) -> list[list[int]]:
    """``upstream[j]``: indices ``i < j`` (so acyclic), in a random order."""
    n = draw(st.integers(1, 24))
    upstream: list[list[int]] = []
    for j in range(n):
        if j == 0:
            upstream.append([])
            continue
        upstream.append(draw(st.lists(st.integers(0, j - 1), max_size=4, unique=True)))
    return upstream


def recording_task(
    tid: str, log: list[Event], lock: threading.Lock, pause: float
) -> Callable[..., Any]:
    def fn(*args: tuple[str, tuple[str, ...]]) -> tuple[str, tuple[str, ...]]:
        with lock:
            log.append((tid, "start", time.perf_counter()))
        if pause:
            time.sleep(pause)  # lets independent tasks overlap in the pool
        with lock:
            log.append((tid, "end", time.perf_counter()))
        return (tid, tuple(a[0] for a in args))

    return fn


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(upstream=random_dags(), pause=st.sampled_from([0.0, 0.002]))
def test_random_dag_on_threads(
    tmp_path_factory: pytest.TempPathFactory, upstream: list[list[int]], pause: float
) -> None:
    home = tmp_path_factory.mktemp("home")
    log: list[Event] = []
    lock = threading.Lock()
    ids = [f"t{i}" for i in range(len(upstream))]
    ups = {ids[j]: [ids[i] for i in upstream[j]] for j in range(len(ids))}
    tasks = [Task(tid, recording_task(tid, log, lock, pause), upstream=ups[tid]) for tid in ids]
    result = Pipeline("random_dag", tasks=tasks).run(home=str(home), max_parallel=MAX_PARALLEL)

    assert result.state == RunState.SUCCESS
    assert set(result.tasks) == set(ids)
    # every task ran exactly once
    starts = [tid for tid, kind, _ in log if kind == "start"]
    ends = [tid for tid, kind, _ in log if kind == "end"]
    assert sorted(starts) == sorted(ids)
    assert sorted(ends) == sorted(ids)
    position = {(tid, kind): k for k, (tid, kind, _) in enumerate(log)}
    stamp = {(tid, kind): t for tid, kind, t in log}
    for tid in ids:
        task = result.tasks[tid]
        assert task.state == TaskState.SUCCESS
        assert task.attempts == 1
        # outputs arrive positionally, in upstream order
        assert result.output(tid) == (tid, tuple(ups[tid]))
        for u in ups[tid]:
            # each upstream had finished before this one started
            assert position[(u, "end")] < position[(tid, "start")]
            assert stamp[(u, "end")] <= stamp[(tid, "start")]
            assert task.started_at is not None
            ended = result.tasks[u].ended_at
            assert ended is not None
            assert ended <= task.started_at
    # never more than max_parallel at once
    running = peak = 0
    for _, kind, _ in log:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert 1 <= peak <= MAX_PARALLEL


# -- process executor: functions at module level, so workers can import them ----------


def seen(*args: tuple[Any, ...], context: TaskContext) -> tuple[Any, ...]:
    """Returns (task id, upstream ids received, start, end, pid)."""
    start = time.perf_counter()
    received = tuple(a[0] for a in args)
    return (context.task_id, received, start, time.perf_counter(), os.getpid())


PROCESS_DAG = {
    "a": [],
    "b": ["a"],
    "c": ["a"],
    "d": [],
    "e": ["c", "b", "d"],
    "f": ["e"],
    "g": ["a", "f"],
    "h": ["d"],
    "i": ["h", "g", "b"],
}


def test_dag_on_processes(tmp_path: Path) -> None:
    tasks = [Task(tid, seen, upstream=ups) for tid, ups in PROCESS_DAG.items()]
    result = Pipeline("process_dag", tasks=tasks).run(
        executor="process", home=str(tmp_path / "home"), max_parallel=MAX_PARALLEL
    )
    assert result.state == RunState.SUCCESS
    assert set(result.tasks) == set(PROCESS_DAG)
    outputs = {tid: result.output(tid) for tid in PROCESS_DAG}
    for tid, ups in PROCESS_DAG.items():
        task = result.tasks[tid]
        assert task.state == TaskState.SUCCESS
        assert task.attempts == 1
        out_tid, received, start, _end, pid = outputs[tid]
        assert out_tid == tid
        assert received == tuple(ups)  # positionally, in upstream order
        assert pid != os.getpid()  # it ran in a worker process
        for u in ups:
            assert outputs[u][3] <= start  # the upstream's code had returned
            ended, started = result.tasks[u].ended_at, task.started_at
            assert ended is not None
            assert started is not None
            assert ended <= started
