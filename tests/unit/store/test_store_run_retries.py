"""Schema step 17 on every backend: a retry run is created with its ``run_retries``
row in one transaction, once per failed run however many writers race; the queue
(``claimable_runs``, ``claim_next``) skips it until its not-before time; an object
schedule's object fires one run (``store``/``backend`` fixtures)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from stageflow.errors import RetryTaken, RunNotFound, TickTaken
from stageflow.runtime.store import Batch, PipelineRecord, RunRecord, RunUpdate, SqlStore
from stageflow.runtime.store.base import RetryLink

if TYPE_CHECKING:
    from conftest import Backend

PIPELINE = PipelineRecord("churn", "v1", '{"name": "churn", "tasks": []}', 1.0)


def make_run(run_id: str, *, state: str = "queued", created_at: float = 100.0) -> RunRecord:
    return RunRecord(run_id, "churn", "v1", state, {"n": 1}, created_at)


def claim(store: SqlStore, now: float) -> str | None:
    got = store.claim_next(owner="w:1", host="w", pid=1, now=now, ttl=30.0)
    return None if got is None else got[0].run_id


def test_a_retry_waits_in_the_queue_until_its_due_time(store: SqlStore) -> None:
    store.create_run(make_run("first", state="failed"), [], pipeline=PIPELINE)
    link = RetryLink("first", "first", 2, due_at=500.0)
    store.create_run(make_run("second", created_at=200.0), ["a"], retry=link)
    assert [r.run_id for r in store.claimable_runs(499.9, 10)] == []
    assert claim(store, 499.9) is None
    assert [r.run_id for r in store.claimable_runs(500.0, 10)] == ["second"]
    assert claim(store, 500.0) == "second"
    assert store.retry_link("second") == link
    assert store.retry_link("first") is None
    assert store.retried_by("first") == ("second", 500.0)
    assert store.retried_by("second") is None


def test_a_run_without_a_not_before_time_is_claimable_at_once(store: SqlStore) -> None:
    store.create_run(make_run("plain"), [], pipeline=PIPELINE)
    assert claim(store, 0.0) == "plain"


def test_a_failed_run_gets_one_retry_and_the_second_writes_nothing(store: SqlStore) -> None:
    store.create_run(make_run("first", state="failed"), [], pipeline=PIPELINE)
    store.create_run(make_run("r1"), ["a"], retry=RetryLink("first", "first", 2, 10.0))
    with pytest.raises(RetryTaken):
        store.create_run(make_run("r2"), ["a"], retry=RetryLink("first", "first", 2, 10.0))
    with pytest.raises(RunNotFound):  # the run was rolled back with it
        store.get_run("r2")
    assert store.retried_by("first") == ("r1", 10.0)


def test_racing_writers_create_exactly_one_retry(backend: Backend) -> None:
    setup = backend.open()
    setup.create_run(make_run("first", state="failed"), [], pipeline=PIPELINE)
    setup.close()
    writers = 6
    barrier = threading.Barrier(writers)
    won: list[str] = []
    errors: list[BaseException] = []

    def write(i: int) -> None:
        store = backend.open()
        try:
            barrier.wait()
            store.create_run(make_run(f"r{i}"), ["a"], retry=RetryLink("first", "first", 2, 10.0))
            won.append(f"r{i}")
        except RetryTaken:
            pass
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(won) == 1
    assert backend.query("SELECT COUNT(*) FROM run_retries")[0][0] == 1
    assert backend.query("SELECT COUNT(*) FROM runs")[0][0] == 2


def test_failed_unretried_lists_failed_runs_without_a_retry(store: SqlStore) -> None:
    for run_id, state, ended in [
        ("a", "failed", 50.0),
        ("b", "failed", 150.0),
        ("c", "cancelled", 160.0),
        ("d", "failed", 170.0),
        ("e", "success", 180.0),
    ]:
        store.create_run(make_run(run_id), [], pipeline=PIPELINE)
        store.commit(Batch(runs=[RunUpdate(run_id, state=state, ended_at=ended)]))
    store.create_run(make_run("d2"), [], retry=RetryLink("d", "d", 2, 200.0))
    assert [r.run_id for r in store.failed_unretried(100.0, 10)] == ["b"]
    assert [r.run_id for r in store.failed_unretried(0.0, 10)] == ["a", "b"]


def test_an_object_fires_one_run_and_seen_objects_remember_it(store: SqlStore) -> None:
    store.record_objects("incoming", ["file:///x/old.csv@1.0"], 5.0)
    store.create_run(
        make_run("r1"), [], pipeline=PIPELINE, schedule_object=("incoming", "file:///x/a.csv@2.0")
    )
    with pytest.raises(TickTaken):
        store.create_run(make_run("r2"), [], schedule_object=("incoming", "file:///x/a.csv@2.0"))
    assert store.seen_objects("incoming") == {"file:///x/old.csv@1.0", "file:///x/a.csv@2.0"}
    assert store.seen_objects("other") == set()


def test_started_schedule_runs_come_from_ticks_and_objects(store: SqlStore) -> None:
    store.create_run(make_run("tick-run"), [], pipeline=PIPELINE, tick=("nightly", 50.0))
    store.create_run(make_run("object-run"), [], schedule_object=("incoming", "file:///a\tm=1"))
    store.create_run(make_run("done"), [], tick=("nightly", 60.0))
    store.create_run(make_run("queued"), [], tick=("nightly", 80.0))
    store.create_run(make_run("plain"), [])
    started = [
        RunUpdate(run_id, state="running", started_at=71.0)
        for run_id in ("tick-run", "object-run", "plain")
    ]
    store.commit(Batch(runs=[RunUpdate("done", state="success", ended_at=70.0), *started]))
    found = [(name, run.run_id) for name, run in store.started_schedule_runs()]
    assert found == [("incoming", "object-run"), ("nightly", "tick-run")]
    assert store.object_of_run("object-run") == ("incoming", "file:///a")
    assert store.object_of_run("tick-run") is None


def test_started_runs_are_the_running_and_paused_ones_oldest_start_first(store: SqlStore) -> None:
    for run_id in ("queued", "late", "early", "paused", "done"):
        store.create_run(make_run(run_id), [])
    store.commit(
        Batch(
            runs=[
                RunUpdate("late", state="running", started_at=30.0),
                RunUpdate("early", state="running", started_at=10.0),
                RunUpdate("paused", state="paused", started_at=20.0),
                RunUpdate("done", state="success", started_at=5.0, ended_at=6.0),
            ]
        )
    )
    assert [r.run_id for r in store.started_runs()] == ["early", "paused", "late"]
