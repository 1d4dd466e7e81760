"""The rows behind ``stageflow stats`` (``task_run_stats``, ``run_states``,
``pipeline_names``), on every backend (``store`` fixture: SQLite, PostgreSQL)."""

from __future__ import annotations

from stageflow.runtime.store import (
    AttemptRecord,
    Batch,
    PipelineRecord,
    RunRecord,
    RunUpdate,
    SqlStore,
    TaskRunRecord,
    TaskRunStat,
)


def add_run(
    store: SqlStore,
    run_id: str,
    created_at: float,
    *,
    pipeline: str = "churn",
    state: str = "success",
    train: str = "success",
) -> None:
    """A run of extract -> train: train's first attempt failed, a second one ran
    when ``train`` is ``success``; extract was a cache hit (no attempt)."""
    store.create_run(
        RunRecord(run_id, pipeline, "v1", "running", {}, created_at), ["extract", "train"]
    )
    attempts = [AttemptRecord(run_id, "train", 1, "failed", 10.0, 11.0, "boom\nline 2")]
    if train == "success":
        attempts.append(AttemptRecord(run_id, "train", 2, "success", 20.0, 22.5))
    store.commit(
        Batch(
            task_runs=[
                TaskRunRecord(run_id, "extract", "success", 0, 1.0, 1.0, None, "cached"),
                TaskRunRecord(
                    run_id,
                    "train",
                    train,
                    len(attempts),
                    10.0,
                    attempts[-1].ended_at,
                    None if train == "success" else "boom\nline 2",
                ),
            ],
            attempts=attempts,
        )
    )
    store.commit(Batch(runs=[RunUpdate(run_id, state=state)]))


def test_task_run_stats_joins_the_last_attempt_newest_run_first(store: SqlStore) -> None:
    add_run(store, "r1", 100.0, state="failed", train="failed")
    add_run(store, "r2", 200.0)
    add_run(store, "old", 10.0)
    add_run(store, "other", 300.0, pipeline="fraud")

    rows = store.task_run_stats("churn", since=50.0)

    assert rows == [
        TaskRunStat(
            "r2", "success", 200.0, "extract", "success", 0, None, None, 1.0, None, "cached"
        ),
        TaskRunStat("r2", "success", 200.0, "train", "success", 2, 20.0, 22.5, 22.5, None, None),
        TaskRunStat(
            "r1", "failed", 100.0, "extract", "success", 0, None, None, 1.0, None, "cached"
        ),
        TaskRunStat(
            "r1", "failed", 100.0, "train", "failed", 1, 10.0, 11.0, 11.0, "boom\nline 2", None
        ),
    ]


def test_task_run_stats_keeps_the_newest_task_runs_within_the_limit(store: SqlStore) -> None:
    for i in range(4):
        add_run(store, f"r{i}", 100.0 + i)

    rows = store.task_run_stats("churn", since=0.0, limit=3)

    assert [(r.run_id, r.task_id) for r in rows] == [
        ("r3", "extract"),
        ("r3", "train"),
        ("r2", "extract"),
    ]


def test_run_states_counts_the_window_by_state(store: SqlStore) -> None:
    add_run(store, "r1", 100.0, state="failed", train="failed")
    add_run(store, "r2", 200.0)
    add_run(store, "r3", 300.0)
    add_run(store, "old", 10.0, state="failed", train="failed")
    add_run(store, "other", 300.0, pipeline="fraud")

    assert store.run_states("churn", since=50.0) == {"failed": 1, "success": 2}
    assert store.run_states("churn", since=1000.0) == {}
    assert store.run_states("nope", since=0.0) == {}


def test_pipeline_names_lists_each_name_once_sorted(store: SqlStore) -> None:
    assert store.pipeline_names() == []
    for name, version in (("fraud", "v1"), ("churn", "v1"), ("churn", "v2")):
        store.save_pipeline(PipelineRecord(name, version, "{}", 1.0))

    assert store.pipeline_names() == ["churn", "fraud"]
