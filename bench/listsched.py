"""List scheduling: makespan / lower bound on random layered DAGs, vs FIFO order.

Each graph has 4-8 layers of 2-10 tasks; each task depends on 1-3 tasks of
the layer above and has a known duration (1-10 units, one heavy-tailed task
in ten is 10-30). Lower bound = max(critical path, total work / workers).
The policy under test is the engine's: priority, then upward rank from the
tasks' ``estimated_seconds`` (their known durations), then readiness order.
FIFO is the same engine with every rank equal (readiness order only).

Two measurements, same graphs:
* ``simulated``: the engine driven by a fake clock (exact durations, no
  overhead), 300 graphs per worker count: the policy itself.
* ``real``: real runs (thread executor, SQLite store), tasks sleep for their
  durations (1 unit = 20 ms), 6 graphs per worker count: the policy through the
  whole runtime, overheads included.

Usage: python bench/listsched.py [GRAPHS] [REAL_GRAPHS]
"""

from __future__ import annotations

import heapq
import random
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

from _common import report, scratch_home
from stageflow import Pipeline, Task
from stageflow.engine.scheduler import EnginePlan, Scheduler

UNIT = 0.02  # seconds per duration unit in real runs


def layered_dag(rnd: random.Random) -> tuple[dict[str, list[str]], dict[str, float]]:
    upstream: dict[str, list[str]] = {}
    duration: dict[str, float] = {}
    previous: list[str] = []
    for layer in range(rnd.randint(4, 8)):
        current = [f"l{layer}t{k}" for k in range(rnd.randint(2, 10))]
        for tid in current:
            upstream[tid] = rnd.sample(previous, min(len(previous), rnd.randint(1, 3)))
            heavy = rnd.random() < 0.1
            duration[tid] = float(rnd.randint(10, 30) if heavy else rnd.randint(1, 10))
        previous = current
    return upstream, duration


def lower_bound(upstream: dict[str, list[str]], duration: dict[str, float], workers: int) -> float:
    finish: dict[str, float] = {}
    for tid in upstream:  # layers are in topological order
        finish[tid] = duration[tid] + max((finish[u] for u in upstream[tid]), default=0.0)
    return max(max(finish.values()), sum(duration.values()) / workers)


def plan_of(upstream: dict[str, list[str]], duration: dict[str, float], fifo: bool) -> EnginePlan:
    tasks = [
        Task(tid, None, upstream=ups, estimated_seconds=duration[tid])
        for tid, ups in upstream.items()
    ]
    plan = EnginePlan.from_pipeline(Pipeline("bench", tasks=tasks))
    ids = plan.ids
    return replace(plan, estimates=[0.0 if fifo else duration[t] for t in ids])


def simulate(
    upstream: dict[str, list[str]], duration: dict[str, float], workers: int, fifo: bool
) -> float:
    sched = Scheduler(plan_of(upstream, duration, fifo))
    now = 0.0
    sched.start(now)
    running: list[tuple[float, str, int]] = []
    while not sched.finished:
        for t in sched.pop_ready(workers - len(running), now):
            heapq.heappush(running, (now + duration[t.task_id], t.task_id, t.attempt))
        now, tid, attempt = heapq.heappop(running)
        sched.record(tid, attempt, True, now)
    return now


def nap(seconds: float) -> None:
    time.sleep(seconds)


def real_run(
    upstream: dict[str, list[str]], duration: dict[str, float], workers: int, fifo: bool
) -> float:
    import stageflow.runtime.resources as resources

    tasks: list[Any] = [  # ordering only (`after`): no data flows between sleeps
        Task(
            tid,
            nap,
            after=ups,
            parameters={"seconds": duration[tid] * UNIT},
            estimated_seconds=duration[tid],
        )
        for tid, ups in upstream.items()
    ]
    original = resources.history_estimates
    if fifo:  # every rank equal: readiness order only
        resources.history_estimates = lambda store, pipeline, plan: [0.0] * len(plan.ids)
    try:
        result = Pipeline("listsched", tasks=tasks).run(home=scratch_home(), max_parallel=workers)
    finally:
        resources.history_estimates = original
    assert result.ok, result.state
    starts = [t.started_at for t in result.tasks.values() if t.started_at is not None]
    ends = [t.ended_at for t in result.tasks.values() if t.ended_at is not None]
    return max(ends) - min(starts)  # first task start to last task end


def main() -> None:
    graphs = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    real_graphs = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    rnd = random.Random(20261125)
    dags = [layered_dag(rnd) for _ in range(graphs)]
    for workers in (2, 4):
        ratios = {False: [], True: []}
        for upstream, duration in dags:
            bound = lower_bound(upstream, duration, workers)
            for fifo in (False, True):
                ratios[fifo].append(simulate(upstream, duration, workers, fifo) / bound)
        better = sum(a < b - 1e-9 for a, b in zip(ratios[False], ratios[True], strict=True))
        worse = sum(a > b + 1e-9 for a, b in zip(ratios[False], ratios[True], strict=True))
        report(
            f"list scheduling, simulated, {workers} workers, {graphs} graphs",
            list_mean=statistics.mean(ratios[False]),
            list_max=max(ratios[False]),
            fifo_mean=statistics.mean(ratios[True]),
            fifo_max=max(ratios[True]),
            list_better=better,
            list_worse=worse,
        )
    for workers in (2, 4) if real_graphs else ():
        ratios = {False: [], True: []}
        for upstream, duration in dags[:real_graphs]:
            bound = lower_bound(upstream, duration, workers) * UNIT
            for fifo in (False, True):
                ratios[fifo].append(real_run(upstream, duration, workers, fifo) / bound)
        report(
            f"list scheduling, real runs, {workers} workers, {real_graphs} graphs",
            list_mean=statistics.mean(ratios[False]),
            fifo_mean=statistics.mean(ratios[True]),
        )


if __name__ == "__main__":
    main()
