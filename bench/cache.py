"""Caching: the first run of a 200-task pipeline with ``cache: true`` against an
unchanged re-run (every task a cache hit), and a re-run after one parameter
change (that task and its downstream run again).

C1: 20 layers x 10 tasks, each depending on the whole previous layer; every
    task does ~10 ms of work (a sleep, so the figure does not depend on the CPU).
C2: the same shape with no-op tasks: what a hit costs against running the task
    (key + store lookup vs. executor round trip + output write).

Store: SQLite in a scratch home (thread executor, 8 workers).
Usage: python bench/cache.py [--repeat N]   (prints the best of N, default 3)
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import report, scratch_home
from stageflow import Pipeline, Task
from stageflow.spec.models import TaskDefaults

LAYERS, WIDTH = 20, 10


def work(*args: int, i: int = 0, ms: float = 10.0, salt: int = 0) -> int:
    time.sleep(ms / 1000)
    return (i + salt + sum(args)) % 1_000_003


def noop(*args: int, i: int = 0, ms: float = 0.0, salt: int = 0) -> int:
    return (i + salt + sum(args)) % 1_000_003


def pipeline(fn: Any, ms: float, changed: str | None = None) -> Pipeline:
    tasks = []
    for level in range(LAYERS):
        prev = [f"l{level - 1}_{j}" for j in range(WIDTH)] if level else []
        for j in range(WIDTH):
            tid = f"l{level}_{j}"
            # `i` makes every task distinct (identical tasks would share a key)
            params = {"i": level * WIDTH + j, "ms": ms, "salt": 1 if tid == changed else 0}
            tasks.append(Task(tid, fn, upstream=prev, parameters=params))
    return Pipeline("cache-bench", defaults=TaskDefaults(cache=True), tasks=tasks)


def timed_run(p: Pipeline, home: str) -> tuple[float, int]:
    start = time.perf_counter()
    result = p.run(home=home, max_parallel=8)
    took = time.perf_counter() - start
    assert result.state == "success", result.state
    hits = sum(t["cached"] for t in result.as_json()["tasks"].values())
    return took, hits


def workload(name: str, fn: Any, ms: float, repeat: int) -> None:
    best: dict[str, tuple[float, int]] = {}
    for _ in range(repeat):
        home = scratch_home()  # a fresh store: the first run really is the first
        figures = {
            "first": timed_run(pipeline(fn, ms), home),
            "rerun": timed_run(pipeline(fn, ms), home),
            # the middle layer's first task: it and the 10 layers after it re-run
            "one_param_changed": timed_run(pipeline(fn, ms, changed="l10_0"), home),
        }
        for key, value in figures.items():
            if key not in best or value[0] < best[key][0]:
                best[key] = value
    n = LAYERS * WIDTH
    first, rerun = best["first"][0], best["rerun"][0]
    report(
        name,
        tasks=n,
        first_s=first,
        rerun_s=rerun,
        rerun_hits=best["rerun"][1],
        rerun_us_per_task=rerun / n * 1e6,
        speedup=first / rerun,
        one_param_changed_s=best["one_param_changed"][0],
        one_param_changed_hits=best["one_param_changed"][1],
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    Pipeline("warm-up", tasks=[Task("t", noop)]).run(home=scratch_home())  # imports, store
    workload("C1 200 tasks x 10 ms, cache: true", work, 10.0, args.repeat)
    workload("C2 200 no-op tasks, cache: true", noop, 0.0, args.repeat)


if __name__ == "__main__":
    main()
