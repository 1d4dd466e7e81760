"""A mapped task in the metrics' histograms (every backend): the parent's own attempt
(``train``, spanning its elements ``train[0]``, ...) runs no code and counts neither
as a task duration nor as a queue wait; its elements' attempts do, and a task merely
named like a parent (no element 0 in its run) still counts."""

from __future__ import annotations

from stageflow.runtime.store import AttemptRecord, Batch, RunRecord, SqlStore
from stageflow.runtime.store.base import Histogram

BOUNDS = (1.0, 5.0)


def make_run(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline="churn",
        pipeline_version="v1",
        state="success",
        params={},
        created_at=0.0,
        started_at=1.0,
    )


def test_a_mapped_task_s_own_attempt_is_no_duration_and_no_queue_wait(store: SqlStore) -> None:
    store.create_run(make_run("c1"), ["train", "train[0]", "train[1]"])
    # another run of the pipeline where `train` was not mapped: it counts
    store.create_run(make_run("c2"), ["train", "trainer[0]"])
    store.commit(
        Batch(
            attempts=[
                AttemptRecord("c1", "train", 1, "success", 10.0, 16.0, queued_at=10.0),  # span
                AttemptRecord("c1", "train[0]", 1, "success", 10.0, 10.5, queued_at=10.0),
                AttemptRecord("c1", "train[1]", 1, "success", 12.0, 16.0, queued_at=10.0),
                AttemptRecord("c2", "train", 1, "success", 20.0, 22.0, queued_at=19.0),
                AttemptRecord("c2", "trainer[0]", 1, "success", 30.0, 30.25, queued_at=30.0),
            ]
        )
    )
    assert sorted(store.attempt_durations(BOUNDS), key=lambda h: h.labels) == [
        Histogram(("churn", "train"), 1, 2.0, [0, 1]),  # c2's only: c1's span left out
        Histogram(("churn", "train[0]"), 1, 0.5, [1, 1]),
        Histogram(("churn", "train[1]"), 1, 4.0, [0, 1]),
        Histogram(("churn", "trainer[0]"), 1, 0.25, [1, 1]),
    ]
    # waits: train[0] 0, train[1] 2, c2's train 1, trainer[0] 0 (not c1's train's 0)
    assert store.attempt_queue_waits(BOUNDS) == [Histogram(("churn",), 4, 3.0, [3, 4])]
