"""W1's store writes replayed: a run's creation and its commits, timed alone.

A 200-task chain of no-ops (W1) runs once with the store's ``create_run`` and
``commit`` recorded; then the recorded calls are replayed ``--repeat`` times into the
same store, each time as a new run (fresh run id), with nothing else running, and the
script prints the median milliseconds of the creation and of the commits. The chain's
own timing does not enter, so two versions of the store compare in far less noise than
``bench/overhead.py`` shows (the same recording replayed; each round's figures vary by
a few percent).

Usage: python bench/final_commit.py [--repeat N] [--one-commit]   (default 200;
``--one-commit``: the commits merged into one, as when the chain ends before the
commit interval: W1's usual final commit)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from _common import report, scratch_home
from overhead import chain, noop
from stageflow.runtime.store import SqlStore, open_store
from stageflow.runtime.store.base import Batch


def _renamed(value: Any, old: str, new: str) -> Any:
    """``value`` (a record, a list or dict of them) with run id ``old`` replaced."""
    if isinstance(value, str):
        return new if value == old else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_renamed(v, old, new) for v in value))
    if isinstance(value, tuple):
        return tuple(_renamed(v, old, new) for v in value)
    if isinstance(value, list):
        return [_renamed(v, old, new) for v in value]
    if isinstance(value, dict):
        return {_renamed(k, old, new): _renamed(v, old, new) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value,
            **{
                f.name: _renamed(getattr(value, f.name), old, new)
                for f in dataclasses.fields(value)
                if f.init
            },
        )
    return value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--one-commit", action="store_true")
    args = parser.parse_args()
    home = scratch_home()
    created: list[tuple[Any, ...]] = []
    commits: list[Batch] = []
    create, commit = SqlStore.create_run, SqlStore.commit

    def record_create(self: Any, run: Any, task_ids: Any, **kw: Any) -> None:
        created.append((run, list(task_ids), kw))
        create(self, run, task_ids, **kw)

    def record_commit(self: Any, batch: Batch) -> None:
        if batch and batch.task_runs:
            commits.append(copy.deepcopy(batch))
        commit(self, batch)

    SqlStore.create_run = record_create  # type: ignore[method-assign]
    SqlStore.commit = record_commit  # type: ignore[method-assign]
    result = chain(200, noop).run(home=home)
    SqlStore.create_run, SqlStore.commit = create, commit  # type: ignore[method-assign]
    assert result.state == "success", result.state
    run, task_ids, kw = created[-1]
    old = run.run_id
    if args.one_commit:
        merged = Batch()
        for batch in commits:
            merged.extend(batch)
        commits = [merged]
    store = open_store(None, Path(home))
    create_ms: list[float] = []
    commit_ms: list[float] = []
    for i in range(args.repeat):
        new = f"{old}-r{i}"
        fresh_run = dataclasses.replace(run, run_id=new)
        batches = [_renamed(b, old, new) for b in commits]
        start = time.perf_counter()
        store.create_run(fresh_run, task_ids, **kw)
        create_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        for batch in batches:
            store.commit(batch)
        commit_ms.append((time.perf_counter() - start) * 1e3)
    report(
        "W1 store writes replayed",
        create_run_ms=round(statistics.median(create_ms), 3),
        commits_ms=round(statistics.median(commit_ms), 3),
        commits=len(commits),
        task_runs=sum(len(b.task_runs) for b in commits),
        attempts=sum(len(b.attempts) for b in commits),
        events=sum(len(b.events) for b in commits),
    )


if __name__ == "__main__":
    main()
