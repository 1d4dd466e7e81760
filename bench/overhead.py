"""W1, W2, W3 and dispatch latency: the run loop's own cost, store on (SQLite).

W1: a 200-task chain of no-op functions -> microseconds per task, the dispatch
    latency (a task's end to its dependent's start) p50/p99, and the run's fixed cost
    split: before its first task starts, the chain itself, after its last task ends.
W0: the same split of a one-task run (3 x N runs): the part of a run's cost that does
    not grow with its tasks (W1's split also holds 200 tasks' validation, planning,
    rows created and rows committed).
W2: a 1000-task fan-out/fan-in (1 root, 998 middle, 1 sink) -> microseconds per task.
W3: 5 layers x 8 tasks of 0.1 s sleeps, each layer after the whole previous one,
    at 4 workers -> makespan against the 1.0 s ideal.

Usage: python bench/overhead.py [--repeat N]   (prints the best of N, default 5)
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

from _common import percentile, report, scratch_home
from stageflow import Pipeline, Task

_marks: list[tuple[float, float]] = []


def noop(*args: Any) -> None:
    return None


def marked(*args: Any) -> None:
    start = time.perf_counter()
    _marks.append((start, time.perf_counter()))


def sleep_tenth(*args: Any) -> None:
    time.sleep(0.1)


def chain(n: int, fn: Any) -> Pipeline:
    return Pipeline(
        "w1", tasks=[Task(f"t{i}", fn, upstream=[f"t{i - 1}"] if i else []) for i in range(n)]
    )


def fan(n: int) -> Pipeline:
    middle = [f"m{i}" for i in range(n - 2)]
    tasks = [Task("root", noop)]
    tasks += [Task(m, noop, upstream=["root"]) for m in middle]
    tasks.append(Task("sink", noop, upstream=middle))
    return Pipeline("w2", tasks=tasks)


def layers(depth: int, width: int) -> Pipeline:
    tasks = []
    for level in range(depth):
        prev = [f"l{level - 1}_{j}" for j in range(width)] if level else []
        tasks += [Task(f"l{level}_{j}", sleep_tenth, upstream=prev) for j in range(width)]
    return Pipeline("w3", tasks=tasks)


def run(p: Pipeline, home: str, parallel: int) -> float:
    start = time.perf_counter()
    result = p.run(home=home, max_parallel=parallel)
    took = time.perf_counter() - start
    assert result.state == "success", result.state
    return took


def _split(n: int, home: str, repeat: int) -> tuple[list[float], tuple[float, float, float]]:
    """A chain of ``n`` tasks run ``repeat`` times: the dispatch latencies, and the
    (before its first task starts, the chain, after its last task ends) of the fastest
    run, in seconds."""
    latencies: list[float] = []
    splits: list[tuple[float, float, float]] = []
    for _ in range(repeat):
        _marks.clear()
        p = chain(n, marked)
        start = time.perf_counter()
        run(p, home, 4)
        end = time.perf_counter()
        latencies += [b[0] - a[1] for a, b in itertools.pairwise(_marks)]
        first, last = _marks[0][0], _marks[-1][1]
        splits.append((first - start, last - first, end - last))
    return latencies, min(splits, key=sum)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = scratch_home()
    run(chain(10, noop), home, 4)  # warm up: imports, store creation
    try:  # the collector settings `stageflow run` uses (the CLI sets them, a host does not)
        from stageflow.runtime.host import tune_gc

        tune_gc()
    except ImportError:  # a version from before the host (A/B runs against older commits)
        pass

    w1 = min(run(chain(200, noop), home, 4) for _ in range(args.repeat))
    report("W1 chain-200", us_per_task=w1 / 200 * 1e6, total_ms=w1 * 1e3)

    latencies, (before, middle, after) = _split(200, home, args.repeat)
    report(
        "W1 dispatch latency",
        p50_us=percentile(latencies, 50) * 1e6,
        p99_us=percentile(latencies, 99) * 1e6,
        samples=len(latencies),
    )
    report(
        "W1 fixed cost split",
        before_first_task_ms=before * 1e3,
        chain_ms=middle * 1e3,
        after_last_task_ms=after * 1e3,
        fixed_ms=(before + after) * 1e3,
    )
    # The part of a run's cost that does not grow with its tasks: a one-task run's.
    _, (before, _, after) = _split(1, home, 3 * args.repeat)
    report(
        "W0 one-task run fixed cost split",
        before_task_ms=before * 1e3,
        after_task_ms=after * 1e3,
        fixed_ms=(before + after) * 1e3,
    )

    w2 = min(run(fan(1000), home, 4) for _ in range(args.repeat))
    report("W2 fan-out/in-1000", us_per_task=w2 / 1000 * 1e6, total_ms=w2 * 1e3)

    w3 = min(run(layers(5, 8), home, 4) for _ in range(max(1, args.repeat // 2)))
    report("W3 5x8 sleeps @4", makespan_s=w3, ideal_s=1.0, ratio=w3 / 1.0)


if __name__ == "__main__":
    main()
