"""The run-retry duty (``runtime.run_retries.RetryDuty``) on a real SQLite store with a
fake clock: a failed run with a policy gets one retry, due after its delay by strategy;
the schedule's policy wins over the pipeline's; a cancelled or successful run, or one
whose retries are used up, gets none; a second pass (another process) adds nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stageflow.runtime.run_retries import RetryDuty, retry_failed_run
from stageflow.runtime.store import (
    Batch,
    PipelineRecord,
    RunRecord,
    RunUpdate,
    SqlStore,
    open_store,
)
from stageflow.runtime.store.base import ScheduleRecord


def spec(run_retries: dict[str, Any] | None) -> str:
    doc: dict[str, Any] = {
        "name": "p",
        "tasks": [{"id": "a", "operator": "bash", "parameters": {"command": "true"}}],
    }
    if run_retries is not None:
        doc["run_retries"] = run_retries
    return json.dumps(doc)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    found = open_store(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    assert isinstance(found, SqlStore)
    try:
        yield found
    finally:
        found.close()


def ended(
    store: SqlStore,
    run_id: str,
    state: str,
    at: float,
    *,
    policy: dict[str, Any] | None,
    tick: tuple[str, float] | None = None,
) -> RunRecord:
    version = "v-" + json.dumps(policy, sort_keys=True)
    pipeline = PipelineRecord("p", version, spec(policy), 1.0)
    run = RunRecord(run_id, "p", version, "queued", {"n": 1}, at - 10, priority=4, owner="t")
    store.create_run(run, ["a"], pipeline=pipeline, tick=tick)
    store.commit(Batch(runs=[RunUpdate(run_id, state=state, ended_at=at)]))
    return store.get_run(run_id)


def retries(store: SqlStore) -> list[RunRecord]:
    return sorted(
        (r for r in store.list_runs(limit=100) if (r.triggered_by or "").startswith("retry:")),
        key=lambda r: r.created_at,
    )


LINEAR = {"strategy": "linear", "max_retries": 2, "retry_delay": 10}


def test_a_failed_run_gets_one_retry_due_after_its_delay(store: SqlStore) -> None:
    first = ended(store, "r1", "failed", 100.0, policy=LINEAR)
    RetryDuty(store).run_pass(101.0)
    RetryDuty(store).run_pass(102.0)  # another process: the key holds, nothing more
    (retry,) = retries(store)
    assert (retry.pipeline_version, retry.params, retry.priority, retry.owner) == (
        first.pipeline_version,
        {"n": 1},
        4,
        "t",
    )
    assert retry.triggered_by == "retry:r1"
    link = store.retry_link(retry.run_id)
    assert link is not None
    assert (link.retry_of, link.first_run_id, link.attempt, link.due_at) == ("r1", "r1", 2, 110.0)
    assert [r.run_id for r in store.claimable_runs(109.9, 10)] == []
    assert [r.run_id for r in store.claimable_runs(110.0, 10)] == [retry.run_id]


def test_the_chain_stops_when_its_retries_are_used_up(store: SqlStore) -> None:
    ended(store, "r1", "failed", 100.0, policy=LINEAR)
    RetryDuty(store).run_pass(101.0)
    (second,) = retries(store)
    store.commit(Batch(runs=[RunUpdate(second.run_id, state="failed", ended_at=200.0)]))
    RetryDuty(store).run_pass(201.0)
    third = next(r for r in retries(store) if r.run_id != second.run_id)
    link = store.retry_link(third.run_id)
    assert link is not None and (link.attempt, link.due_at, link.first_run_id) == (3, 220.0, "r1")
    store.commit(Batch(runs=[RunUpdate(third.run_id, state="failed", ended_at=300.0)]))
    RetryDuty(store).run_pass(301.0)
    assert len(retries(store)) == 2  # attempt 3 was the last of max_retries 2


@pytest.mark.parametrize(
    ("state", "policy"),
    [
        pytest.param("cancelled", LINEAR, id="cancelled"),
        pytest.param("success", LINEAR, id="success"),
        pytest.param("failed", None, id="no-policy"),
        pytest.param("failed", {"strategy": "none", "max_retries": 3}, id="strategy-none"),
    ],
)
def test_no_retry_without_a_failure_and_a_policy(
    store: SqlStore, state: str, policy: dict[str, Any] | None
) -> None:
    ended(store, "r1", state, 100.0, policy=policy)
    RetryDuty(store).run_pass(101.0)
    assert retries(store) == []


def test_the_schedules_policy_wins_over_the_pipelines(store: SqlStore) -> None:
    store.put_schedule(
        ScheduleRecord(
            "nightly",
            "p",
            {
                "kind": "interval",
                "every_seconds": 3600.0,
                "run_retries": 1,
                "retry_strategy": "fixed",
                "retry_delay": 3.0,
            },
            {},
        )
    )
    run = ended(store, "r1", "failed", 100.0, policy=LINEAR, tick=("nightly", 90.0))
    retry = retry_failed_run(store, run, 101.0)
    assert retry is not None
    assert store.retried_by("r1") == (retry.run_id, 103.0)  # fixed 3s, not linear 10s


def test_a_failure_older_than_the_look_back_is_left_alone(store: SqlStore) -> None:
    ended(store, "r1", "failed", 100.0, policy=LINEAR)
    RetryDuty(store).run_pass(100.0 + 2 * 24 * 3600)
    assert retries(store) == []


def test_many_failures_without_a_policy_do_not_hide_one_with_a_policy(store: SqlStore) -> None:
    for k in range(150):  # more than a page, each ending before the one that retries
        ended(store, f"n{k:03d}", "failed", 100.0 + k, policy=None)
    ended(store, "late", "failed", 400.0, policy=LINEAR)
    duty = RetryDuty(store)
    duty.run_pass(401.0)
    assert [r.triggered_by for r in retries(store)] == ["retry:late"]
    duty.run_pass(402.0)  # the runs decided already are not decided again
    assert len(retries(store)) == 1
