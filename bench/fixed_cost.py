"""Where a run's fixed cost goes: W1 (a 200-task chain of no-ops, SQLite) step by step.

Each step of the runner that runs before the first task or after the last one is
wrapped with ``time.perf_counter`` (in this process only: the code is unchanged);
over ``--repeat`` runs the script prints each step's median and its time per run in
milliseconds (a store's occasional checkpoint lands in a few of them), and the
before/chain/after split of ``bench/overhead.py``. Then the record's background
work: ``lineage.git_state`` of the current folder (wall time, and the CPU time of
its ``git`` child).

Usage: python bench/fixed_cost.py [--repeat N] [--tasks N] [--commits]   (defaults 15,
200: W1; a one-task chain shows the part of the fixed cost that does not grow with the
tasks; ``--commits``: each run's store commits, their start and end in ms from its
last task's end, and the task runs each wrote)
"""

from __future__ import annotations

import argparse
import functools
import resource
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import report, scratch_home
from overhead import _marks, chain, marked, noop

_spent: dict[str, list[float]] = defaultdict(list)


def _timed(owner: Any, name: str, label: str) -> None:
    """Wrap ``owner.name`` so that each call adds its duration to ``_spent[label]``
    (nothing when the code has no such step: an older commit, for A/B runs)."""
    original: Callable[..., Any] | None = getattr(owner, name, None)
    if original is None:
        return

    step = original

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            _spent[label].append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def _logged(store_class: Any, commits: list[tuple[float, float, int]]) -> None:
    """Append each ``commit``'s (start, end, task runs written) to ``commits``."""
    commit = store_class.commit

    @functools.wraps(commit)
    def wrapper(self: Any, batch: Any) -> None:
        start = time.perf_counter()
        try:
            commit(self, batch)
        finally:
            commits.append((start, time.perf_counter(), len(batch.task_runs)))

    store_class.commit = wrapper


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--commits", action="store_true")
    args = parser.parse_args()

    from stageflow.runtime import lineage, runner
    from stageflow.runtime.committer import Committer
    from stageflow.runtime.host import tune_gc
    from stageflow.runtime.store.sql import SqlStore
    from stageflow.spec.models import Pipeline

    home = scratch_home()
    chain(10, noop).run(home=home, max_parallel=4)  # warm up: imports, store creation
    tune_gc()  # the CLI's collector settings, as bench/overhead.py

    _timed(runner.Runner, "_plan", "before: validate and plan")
    _timed(Pipeline, "versioned_spec", "before: canonical spec and its version")
    _timed(SqlStore, "save_pipeline", "before: save the pipeline version")
    _timed(SqlStore, "create_run", "before: create the run")
    _timed(runner.Runner, "_claim", "before: claim the run")
    _timed(runner, "start_recording", "before: start the record")
    _timed(runner._Loop, "__init__", "before: the run's loop")
    _timed(runner, "Committer", "before: the run's committer (in its loop)")
    _timed(runner.Scheduler, "__init__", "before: the engine")
    _timed(runner._Loop, "result", "after: build the result")
    _timed(Committer, "close", "after: wait for the final commit")
    _timed(runner.Runner, "_unwatch", "after: the observers (the record's end)")
    _timed(SqlStore, "commit", "commits (committer thread, all of the run)")
    commits: list[tuple[float, float, int]] = []  # (start, end, task runs) of this run's
    if args.commits:
        _logged(SqlStore, commits)

    splits = []
    for _ in range(args.repeat):
        _marks.clear()
        commits.clear()
        pipeline = chain(args.tasks, marked)
        start = time.perf_counter()
        result = pipeline.run(home=home, max_parallel=4)
        end = time.perf_counter()
        assert result.state == "success", result.state
        first, last = _marks[0][0], _marks[-1][1]
        splits.append((first - start, last - first, end - last))
        if args.commits:
            print(
                f"run: chain {(last - first) * 1e3:.1f} ms, returned at "
                f"{(end - last) * 1e3:+.1f}; commits: "
                + ", ".join(
                    f"{(a - last) * 1e3:+.1f}..{(b - last) * 1e3:+.1f} ({n})" for a, b, n in commits
                )
            )

    for label, spent in _spent.items():
        report(
            f"W1 step: {label}",
            median_ms=statistics.median(spent) * 1e3,
            ms_per_run=sum(spent) / args.repeat * 1e3,
            calls=len(spent),
        )
    before, middle, after = (statistics.median(s[k] for s in splits) for k in range(3))
    report(
        "W1 fixed cost split (medians)",
        before_first_task_ms=before * 1e3,
        chain_ms=middle * 1e3,
        after_last_task_ms=after * 1e3,
        fixed_ms=(before + after) * 1e3,
    )

    walls, cpus = [], []
    for _ in range(10):
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        lineage.git_state(Path.cwd())
        walls.append(time.perf_counter() - start)
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime)
    report(
        f"record: git status of {Path.cwd().name}",
        wall_ms=statistics.median(walls) * 1e3,
        child_cpu_ms=statistics.median(cpus) * 1e3,
    )


if __name__ == "__main__":
    main()
