"""100k: validate + plan a 100,000-task DAG, and run a 100,000-task fan-out.

plan: build 100,000 `Task`s (reported separately), then what `run` does before
the first task starts: full validation (`runtime.plan.check`: ids, upstream,
cycles, operators and bindings), the engine plan and the scheduler's start.
Levels and the critical path (what `validate`/`graph` add) are reported apart.
run: a fan-out of 100,000 tasks (1 root, 99,998 leaves, 1 sink) end to end
with the store on, in a fresh process, with its peak resident memory.

Usage: python bench/scale.py [plan|run]   (both by default, each in its own process)
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from _common import peak_rss_mib, report, scratch_home

N = 100_000


def noop(*args: Any) -> None:
    return None


def build_layered(n: int) -> Any:
    from stageflow import Pipeline, Task

    width = 100
    tasks = []
    for i in range(n):
        level, j = divmod(i, width)
        ups = (
            [f"t{(level - 1) * width + j}", f"t{(level - 1) * width + (j + 1) % width}"]
            if level
            else []
        )
        tasks.append(Task(f"t{i}", noop, upstream=ups))
    return Pipeline("plan100k", tasks=tasks)


def _collector_as_run_has_it() -> Any:
    """The garbage collector as `stageflow run` has it: tuned once by the CLI
    (``runtime.host.tune_gc``), which lets a run pause it while planning; returns
    the context the measured parts run in. Before the host existed (A/B runs
    against older commits) the runner paused it while planning in any process."""
    try:
        from stageflow.runtime.host import collector_paused, tune_gc
    except ImportError:
        from stageflow.runtime.runner import gc_paused  # type: ignore[attr-defined]

        return gc_paused
    tune_gc()
    return collector_paused


def plan() -> None:
    from stageflow.engine.scheduler import Scheduler
    from stageflow.graph import critical_path, levels
    from stageflow.runtime.plan import check

    gc_paused = _collector_as_run_has_it()
    start = time.perf_counter()
    pipeline = build_layered(N)
    built = time.perf_counter() - start
    # What `run` does before its first task starts: validate everything, index the
    # DAG for the engine, decide the initial states.
    start = time.perf_counter()
    with gc_paused():
        sched = Scheduler(check(pipeline))
        ready = sched.start(0.0)
    took = time.perf_counter() - start
    # Analysis the CLI's `validate`/`graph` add on top: levels and critical path.
    start = time.perf_counter()
    with gc_paused():
        upstream = pipeline.upstream_map()
        lv = levels(upstream)
        cp = critical_path(upstream, {})
    analysis = time.perf_counter() - start
    assert len(lv) == N // 100 and len(cp.tasks) == N // 100 and len(ready) == 100
    report(
        "100k validate+plan", plan_s=took, levels_and_critical_path_s=analysis, build_tasks_s=built
    )


def run() -> None:
    from stageflow import Pipeline, Task

    _collector_as_run_has_it()
    start = time.perf_counter()
    leaves = [f"m{i}" for i in range(N - 2)]
    tasks = [Task("root", noop)] + [Task(m, noop, upstream=["root"]) for m in leaves]
    tasks.append(Task("sink", noop, upstream=leaves))
    pipeline = Pipeline("run100k", tasks=tasks)
    built = time.perf_counter() - start
    start = time.perf_counter()
    result = pipeline.run(home=scratch_home(), max_parallel=4)
    took = time.perf_counter() - start
    assert result.state == "success"
    report(
        "100k fan-out run",
        run_s=took,
        build_s=built,
        us_per_task=took / N * 1e6,
        peak_rss_mib=peak_rss_mib(),
    )


def main() -> None:
    which = sys.argv[1:] or ["plan", "run"]
    if len(which) == 1:
        {"plan": plan, "run": run}[which[0]]()
        return
    for name in which:
        subprocess.run([sys.executable, __file__, name], check=True)


if __name__ == "__main__":
    main()
