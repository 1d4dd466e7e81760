"""Past task durations (``SqlStore.task_durations``) and merged batches
(``Batch.extend``), on every backend (``store`` fixture: SQLite, PostgreSQL)."""

from __future__ import annotations

import pytest

from stageflow.runtime.store import (
    AttemptRecord,
    Batch,
    EventRecord,
    OutputRef,
    RunRecord,
    RunUpdate,
    SqlStore,
    TaskRunRecord,
)


def add_run(
    store: SqlStore,
    run_id: str,
    *tasks: TaskRunRecord,
    pipeline: str = "churn",
    created_at: float = 100.0,
) -> None:
    run = RunRecord(run_id, pipeline, "v1", "running", {}, created_at)
    store.create_run(run, [t.task_id for t in tasks])
    store.commit(Batch(task_runs=[t._replace(run_id=run_id) for t in tasks]))


def done(
    task_id: str,
    seconds: float,
    *,
    state: str = "success",
    started_at: float | None = 1000.0,
    note: str | None = None,
) -> TaskRunRecord:
    ended = None if started_at is None else started_at + seconds
    return TaskRunRecord("", task_id, state, 1, started_at, ended, None, note)


def durations(store: SqlStore, pipeline: str = "churn", runs: int = 10) -> list[tuple[str, float]]:
    return sorted(store.task_durations(pipeline, runs))


# -- task_durations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "counted"),
    [
        pytest.param(done("t", 2.5), True, id="ran-and-succeeded"),
        pytest.param(done("t", 2.5, note=""), True, id="empty-note"),
        pytest.param(done("t", 2.5, note="cached"), False, id="cache-hit"),
        pytest.param(done("t", 2.5, note="fallback"), False, id="fallback"),
        pytest.param(done("t", 2.5, note="skipped downstream"), True, id="ran-then-skipped"),
        pytest.param(done("t", 2.5, note="cached, skipped downstream"), False, id="cached-skip"),
        pytest.param(done("t", 2.5, state="failed"), False, id="failed"),
        pytest.param(done("t", 2.5, state="running"), False, id="running"),
        pytest.param(done("t", 2.5, state="skipped"), False, id="skipped"),
        pytest.param(done("t", 0.0, started_at=None), False, id="never-started"),
        pytest.param(TaskRunRecord("", "t", "success", 1, 1000.0, None), False, id="no-end-time"),
    ],
)
def test_only_task_runs_that_succeeded_by_running_count(
    store: SqlStore, record: TaskRunRecord, counted: bool
) -> None:
    add_run(store, "r1", record, done("other", 1.0))

    assert durations(store) == ([("other", 1.0), ("t", 2.5)] if counted else [("other", 1.0)])


def test_durations_come_from_the_newest_runs_of_the_pipeline_only(store: SqlStore) -> None:
    add_run(store, "r1", done("a", 1.0), created_at=100.0)
    add_run(store, "r2", done("a", 2.0), done("b", 20.0), created_at=200.0)
    add_run(store, "r3", done("a", 3.0), created_at=300.0)
    add_run(store, "x1", done("a", 99.0), pipeline="other", created_at=400.0)  # newest of all

    assert durations(store, runs=2) == [("a", 2.0), ("a", 3.0), ("b", 20.0)]
    assert durations(store, runs=1) == [("a", 3.0)]
    assert durations(store, runs=10) == [("a", 1.0), ("a", 2.0), ("a", 3.0), ("b", 20.0)]
    assert durations(store, "other") == [("a", 99.0)]
    assert durations(store, "unknown") == []


def test_runs_created_at_the_same_time_are_ordered_by_run_id(store: SqlStore) -> None:
    add_run(store, "r-b", done("t", 2.0), created_at=100.0)
    add_run(store, "r-a", done("t", 1.0), created_at=100.0)

    assert durations(store, runs=1) == [("t", 2.0)]


def test_the_order_runs_were_created_in_does_not_matter(store: SqlStore) -> None:
    add_run(store, "late", done("t", 3.0), created_at=300.0)
    add_run(store, "early", done("t", 1.0), created_at=100.0)  # stored after, yet older

    assert durations(store, runs=1) == [("t", 3.0)]


def test_a_run_with_no_counted_task_still_takes_its_place(store: SqlStore) -> None:
    add_run(store, "r1", done("t", 1.0), created_at=100.0)
    add_run(store, "r2", done("t", 2.0, note="cached"), created_at=200.0)

    assert durations(store, runs=1) == []
    assert durations(store, runs=2) == [("t", 1.0)]


# -- Batch.extend -----------------------------------------------------------------------


def first_tick(run_id: str) -> Batch:
    return Batch(
        task_runs=[
            TaskRunRecord(run_id, "a", "running", 1, 10.0),
            TaskRunRecord(run_id, "b", "ready", 0),
        ],
        attempts=[
            AttemptRecord(run_id, "a", 1, "running", 10.0, queued_at=9.0, request_json='{"cpu": 1}')
        ],
        events=[
            EventRecord(run_id, "a", "ready", "running", 10.0, 1),
            EventRecord(run_id, "b", "pending", "ready", 10.0),
        ],
        runs=[RunUpdate(run_id, state="running", started_at=9.5)],
    )


def second_tick(run_id: str) -> Batch:
    return Batch(
        task_runs=[TaskRunRecord(run_id, "a", "success", 1, 10.0, 12.0)],
        attempts=[AttemptRecord(run_id, "a", 1, "success", 10.0, 12.0, cpu_seconds=1.5)],
        events=[EventRecord(run_id, "a", "running", "success", 12.0, 1, "done")],
        outputs=[OutputRef(run_id, "a", "inline", "json", 2, "ab" * 32, b"42")],
        runs=[RunUpdate(run_id, heartbeat_at=12.0)],
    )


def test_extend_appends_every_kind_of_change_in_order() -> None:
    batch, later = first_tick("r"), second_tick("r")
    expected = {
        name: [*getattr(first_tick("r"), name), *getattr(later, name)]
        for name in ("task_runs", "attempts", "events", "outputs", "runs", "cache")
    }

    batch.extend(later)

    assert {name: getattr(batch, name) for name in expected} == expected
    assert [e.to_state for e in batch.events] == ["running", "ready", "success"]
    assert later == second_tick("r")  # the later batch is left as it was


def test_extending_an_empty_batch_makes_it_true() -> None:
    batch = Batch()
    assert not batch

    batch.extend(second_tick("r"))

    assert batch
    assert batch == second_tick("r")


def stored(store: SqlStore, run_id: str) -> dict[str, object]:
    """Everything stored for ``run_id``, with the run id taken out to compare runs."""
    run = store.get_run(run_id)
    return {
        "run": (run.state, run.started_at, run.ended_at, run.heartbeat_at),
        "task_runs": [t._replace(run_id="") for t in store.task_runs(run_id)],
        "attempts": [a._replace(run_id="") for a in store.attempts(run_id)],
        "events": [e._replace(run_id="") for e in store.events(run_id)],
        "outputs": {k: o._replace(run_id="") for k, o in store.outputs(run_id).items()},
    }


def test_one_extended_batch_stores_what_the_two_batches_store_in_sequence(
    store: SqlStore,
) -> None:
    for run_id in ("apart", "together"):
        store.create_run(RunRecord(run_id, "churn", "v1", "queued", {}, 1.0), ["a", "b"])
    store.commit(first_tick("apart"))
    store.commit(second_tick("apart"))
    merged = first_tick("together")
    merged.extend(second_tick("together"))

    store.commit(merged)

    assert stored(store, "together") == stored(store, "apart")
    together = stored(store, "together")
    assert together["run"] == ("running", 9.5, None, 12.0)
    assert together["task_runs"] == [
        TaskRunRecord("", "a", "success", 1, 10.0, 12.0),  # the later row wins
        TaskRunRecord("", "b", "ready", 0),
    ]
    # One attempt row: the later state, with the earlier row's scheduling fields kept.
    assert together["attempts"] == [
        AttemptRecord("", "a", 1, "success", 10.0, 12.0, None, 9.0, '{"cpu": 1}', cpu_seconds=1.5)
    ]
    assert [(e.task_id, e.to_state) for e in store.events("together")] == [
        ("a", "running"),
        ("b", "ready"),
        ("a", "success"),
    ]
