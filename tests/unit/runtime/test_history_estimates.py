"""``resources.history_estimates``: expected task durations from past runs (real SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stageflow import Pipeline, Task
from stageflow.runtime import resources
from stageflow.runtime.plan import check
from stageflow.runtime.store import SqlStore, open_store
from stageflow.runtime.store.base import Batch, PipelineRecord, RunRecord, TaskRunRecord


def noop(*args: object) -> None:
    return None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", tmp_path)
    assert isinstance(store, SqlStore)
    try:
        yield store
    finally:
        store.close()


def chain(n: int, name: str = "p") -> Pipeline:
    return Pipeline(
        name, tasks=[Task(f"t{i}", noop, upstream=[f"t{i - 1}"] if i else []) for i in range(n)]
    )


def record_run(store: SqlStore, pipeline: Pipeline, k: int, seconds: float) -> None:
    """Run ``k`` of ``pipeline`` (created at time ``k``): every task took ``seconds``."""
    run_id = f"run-{pipeline.name}-{k:03d}"
    ids = [t.id for t in pipeline.tasks]
    store.save_pipeline(PipelineRecord(pipeline.name, "v1", "{}", 0.0))
    store.create_run(RunRecord(run_id, pipeline.name, "v1", "success", {}, float(k)), ids)
    batch = Batch()
    batch.task_runs.extend(
        TaskRunRecord(run_id, tid, "success", 1, 100.0, 100.0 + seconds) for tid in ids
    )
    store.commit(batch)


def test_the_median_of_the_last_runs_when_they_fit_the_row_budget(store: SqlStore) -> None:
    pipeline = chain(3)
    for k, seconds in enumerate([50.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]):
        record_run(store, pipeline, k, seconds)

    estimates = resources.history_estimates(store, pipeline, check(pipeline))

    # The newest 10 runs (1..10 s): the oldest (50 s) is not among them.
    assert estimates == [5.5, 5.5, 5.5]


def test_a_large_pipeline_reads_fewer_runs(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "HISTORY_ROWS", 40)  # 20 tasks: 2 runs fit
    pipeline = chain(20)
    for k, seconds in enumerate([1.0, 1.0, 1.0, 4.0, 6.0]):
        record_run(store, pipeline, k, seconds)

    estimates = resources.history_estimates(store, pipeline, check(pipeline))

    assert estimates == [5.0] * 20  # the median of the last two runs only


def test_no_history_and_no_estimate_gives_nothing(store: SqlStore) -> None:
    pipeline = chain(3)
    assert resources.history_estimates(store, pipeline, check(pipeline)) == []
