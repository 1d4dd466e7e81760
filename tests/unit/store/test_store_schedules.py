"""Schema step 13 on every backend: schedules (put, read, list, pause, delete, advance
their last tick) and the run each of their ticks made, recorded in the run's own
creating transaction (``create_run(tick=...)``): one run per tick, however many
writers fire it (``store``/``backend`` fixtures)."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from stageflow.errors import RunIdTaken, RunNotFound, StoreError, TickTaken
from stageflow.runtime.store import Batch, PipelineRecord, RunRecord, RunUpdate, SqlStore
from stageflow.runtime.store import migrations as migrations_module
from stageflow.runtime.store.base import ScheduleRecord, TickRun
from stageflow.runtime.store.migrations import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from conftest import Backend


def make_schedule(
    name: str = "nightly",
    *,
    pipeline: str = "churn",
    spec: dict | None = None,
    params: dict | None = None,
    priority: int = 0,
    max_active_runs: int | None = None,
    enabled: bool = True,
    last_tick: float | None = None,
    owner: str | None = None,
    created_at: float = 100.0,
    updated_at: float = 100.0,
    next_at: float | None = None,
) -> ScheduleRecord:
    return ScheduleRecord(
        name=name,
        pipeline=pipeline,
        spec={"kind": "cron", "cron": "0 2 * * *", "timezone": "UTC"} if spec is None else spec,
        params={} if params is None else params,
        priority=priority,
        max_active_runs=max_active_runs,
        enabled=enabled,
        last_tick=last_tick,
        owner=owner,
        created_at=created_at,
        updated_at=updated_at,
        next_at=next_at,
    )


def make_run(
    run_id: str,
    *,
    pipeline: str = "churn",
    version: str = "v1",
    state: str = "queued",
    created_at: float = 100.0,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline=pipeline,
        pipeline_version=version,
        state=state,
        params={},
        created_at=created_at,
        triggered_by="schedule:nightly",
    )


def read(store: SqlStore, name: str) -> ScheduleRecord:
    schedule = store.get_schedule(name)
    assert schedule is not None
    return schedule


# -- schedules -------------------------------------------------------------------------


def test_a_schedule_reads_back_with_every_field(store: SqlStore) -> None:
    full = ScheduleRecord(
        name="nightly",
        pipeline="churn",
        spec={"kind": "interval", "every_s": 3600.0, "start": 50.5, "jitter": [1, 2]},
        params={"region": "eu", "limit": 5, "ratio": 0.25, "nested": {"a": [1, None, True]}},
        priority=7,
        max_active_runs=2,
        enabled=False,
        last_tick=3600.5,
        owner="team-data",
        created_at=101.25,
        updated_at=102.75,
    )
    bare = make_schedule("hourly", pipeline="fraud", created_at=103.0, updated_at=104.0)
    store.put_schedule(full)
    store.put_schedule(bare)
    assert store.get_schedule("nightly") == full
    assert store.get_schedule("hourly") == bare
    got = read(store, "hourly")
    assert (got.max_active_runs, got.owner, got.last_tick, got.enabled) == (None, None, None, True)
    assert type(read(store, "nightly").max_active_runs) is int


def test_an_unknown_schedule_is_none(store: SqlStore) -> None:
    assert store.get_schedule("nightly") is None
    store.put_schedule(make_schedule("hourly"))
    assert store.get_schedule("nightly") is None


def test_a_schedule_put_again_changes_but_keeps_its_last_tick_and_creation(
    store: SqlStore,
) -> None:
    store.put_schedule(make_schedule(params={"a": 1}, created_at=100.0, updated_at=100.0))
    assert store.advance_schedule("nightly", 500.0, 4100.0) is True
    changed = ScheduleRecord(
        name="nightly",
        pipeline="fraud",
        spec={"kind": "interval", "every_s": 60.0},
        params={"b": "two"},
        priority=3,
        max_active_runs=1,
        enabled=False,
        last_tick=None,  # ignored for an existing schedule: where it got to stays
        owner="team-risk",
        created_at=900.0,  # ignored: it was created at 100
        updated_at=200.0,
    )
    store.put_schedule(changed)
    assert store.get_schedule("nightly") == replace(changed, last_tick=500.0, created_at=100.0)
    # and back to no limit, nobody's, enabled
    store.put_schedule(make_schedule(created_at=0.0, updated_at=300.0))
    assert store.get_schedule("nightly") == make_schedule(
        last_tick=500.0, created_at=100.0, updated_at=300.0
    )
    assert [s.name for s in store.schedules()] == ["nightly"]


def test_schedules_are_listed_by_name_and_enabled_only_leaves_out_the_paused(
    store: SqlStore,
) -> None:
    c = make_schedule("c-weekly")
    a = make_schedule("a-hourly", enabled=False)
    b = make_schedule("b-daily")
    assert store.schedules() == []
    assert store.schedules(enabled_only=True) == []
    for schedule in (c, a, b):
        store.put_schedule(schedule)
    assert store.schedules() == [a, b, c]
    assert store.schedules(enabled_only=True) == [b, c]


def test_pausing_and_resuming_a_schedule(store: SqlStore) -> None:
    assert store.set_schedule_enabled("nightly", False, 150.0) is False
    assert store.get_schedule("nightly") is None
    store.put_schedule(make_schedule(last_tick=90.0, updated_at=100.0))
    store.put_schedule(make_schedule("other", updated_at=100.0))
    assert store.set_schedule_enabled("nightly", False, 150.0) is True
    assert store.get_schedule("nightly") == make_schedule(
        enabled=False, last_tick=90.0, updated_at=150.0
    )
    assert store.schedules(enabled_only=True) == [make_schedule("other", updated_at=100.0)]
    assert store.set_schedule_enabled("nightly", True, 160.0) is True
    assert store.get_schedule("nightly") == make_schedule(
        enabled=True, last_tick=90.0, updated_at=160.0
    )
    assert store.get_schedule("other") == make_schedule("other", updated_at=100.0)


def test_a_deleted_schedule_is_gone_but_its_runs_and_ticks_stay(store: SqlStore) -> None:
    store.put_schedule(make_schedule())
    store.put_schedule(make_schedule("hourly"))
    store.create_run(make_run("r1"), ["a"], tick=("nightly", 100.0))
    store.create_run(make_run("r2", created_at=200.0), ["a"], tick=("nightly", 200.0))
    assert store.delete_schedule("nightly") is True
    assert store.get_schedule("nightly") is None
    assert store.schedules() == [make_schedule("hourly")]
    assert store.delete_schedule("nightly") is False
    assert store.get_run("r1") == make_run("r1")
    assert store.get_run("r2").created_at == 200.0
    # schedule_runs has no key into schedules: the ticks stay with the runs
    assert store.tick_run("nightly", 100.0) == "r1"
    assert store.schedule_runs("nightly") == [(200.0, "r2"), (100.0, "r1")]
    assert store.active_schedule_runs("nightly") == 2
    # a schedule of that name made again does not fire those ticks again
    store.put_schedule(make_schedule())
    with pytest.raises(TickTaken):
        store.create_run(make_run("r3"), ["a"], tick=("nightly", 100.0))


def test_advance_schedule_moves_the_last_tick_forward_only(store: SqlStore) -> None:
    assert store.advance_schedule("nightly", 100.0, 3700.0) is False  # no such schedule
    store.put_schedule(make_schedule())
    assert store.advance_schedule("nightly", 100.0, 3700.0) is True  # from None
    assert read(store, "nightly").last_tick == 100.0
    assert store.advance_schedule("nightly", 100.0, 3700.0) is False  # same value
    assert store.advance_schedule("nightly", 99.5, 3699.5) is False  # backward
    assert read(store, "nightly").last_tick == 100.0
    assert store.advance_schedule("nightly", 100.5, 3700.5) is True
    assert store.get_schedule("nightly") == make_schedule(last_tick=100.5, next_at=3700.5)


def test_a_refused_advance_leaves_the_next_fire_time(store: SqlStore) -> None:
    store.put_schedule(make_schedule(next_at=100.0))
    assert store.advance_schedule("nightly", 100.0, 200.0) is True
    assert store.advance_schedule("nightly", 100.0, 999.0) is False  # another loop did it
    assert read(store, "nightly").next_at == 200.0
    assert store.advance_schedule("nightly", 200.0, None) is True  # nothing left to fire
    assert read(store, "nightly").next_at is None


def test_due_schedules_are_the_enabled_ones_whose_next_fire_time_came(store: SqlStore) -> None:
    store.put_schedule(make_schedule("a-late", next_at=90.0))
    store.put_schedule(make_schedule("b-now", next_at=100.0))
    store.put_schedule(make_schedule("c-soon", next_at=100.5))
    store.put_schedule(make_schedule("d-paused", next_at=50.0, enabled=False))
    store.put_schedule(make_schedule("e-done", next_at=None))
    assert [s.name for s in store.due_schedules(100.0)] == ["a-late", "b-now"]
    assert [s.name for s in store.due_schedules(1e12)] == ["a-late", "b-now", "c-soon"]
    store.set_schedule_enabled("d-paused", True, 101.0)
    assert [s.name for s in store.due_schedules(100.0)] == ["d-paused", "a-late", "b-now"]


def test_advance_schedule_touches_only_that_schedule(store: SqlStore) -> None:
    store.put_schedule(make_schedule())
    store.put_schedule(make_schedule("hourly", last_tick=50.0))
    assert store.advance_schedule("nightly", 10.0, 3610.0) is True
    assert read(store, "hourly").last_tick == 50.0
    assert read(store, "nightly").last_tick == 10.0


# -- ticks -----------------------------------------------------------------------------


def test_a_tick_s_run_is_found_by_its_tick(store: SqlStore) -> None:
    assert store.tick_run("nightly", 100.0) is None
    store.create_run(make_run("r1"), ["a", "b"], tick=("nightly", 100.0))
    assert store.tick_run("nightly", 100.0) == "r1"
    assert store.tick_run("nightly", 100.5) is None
    assert store.tick_run("hourly", 100.0) is None
    assert [t.task_id for t in store.task_runs("r1")] == ["a", "b"]
    # a run created without a tick records none
    store.create_run(make_run("r0"), ["a"])
    assert store.schedule_runs("nightly") == [(100.0, "r1")]


def test_a_tick_fired_twice_raises_tick_taken_and_writes_nothing(store: SqlStore) -> None:
    store.create_run(make_run("r1"), ["a"], tick=("nightly", 100.0))
    new_version = PipelineRecord("churn", "v2", '{"tasks": []}', 150.0)
    with pytest.raises(TickTaken):
        store.create_run(
            make_run("r2", version="v2"), ["a", "b"], pipeline=new_version, tick=("nightly", 100.0)
        )
    with pytest.raises(RunNotFound):
        store.get_run("r2")
    assert store.task_runs("r2") == []
    with pytest.raises(StoreError):
        store.get_pipeline("churn", "v2")
    assert store.tick_run("nightly", 100.0) == "r1"
    assert store.schedule_runs("nightly") == [(100.0, "r1")]
    assert [r.run_id for r in store.list_runs()] == ["r1"]
    # the same run id can be created afterwards (nothing of it was left behind)
    store.create_run(make_run("r2"), ["a"], tick=("nightly", 200.0))
    assert store.tick_run("nightly", 200.0) == "r2"


def test_the_same_logical_time_on_another_schedule_is_another_tick(store: SqlStore) -> None:
    store.create_run(make_run("r1"), ["a"], tick=("nightly", 100.0))
    store.create_run(make_run("r2"), ["a"], tick=("hourly", 100.0))
    assert store.tick_run("nightly", 100.0) == "r1"
    assert store.tick_run("hourly", 100.0) == "r2"
    assert store.get_run("r2") == make_run("r2")


def test_a_taken_run_id_with_a_fresh_tick_raises_run_id_taken_and_records_no_tick(
    store: SqlStore,
) -> None:
    store.create_run(make_run("r1"), ["a"], tick=("nightly", 100.0))
    with pytest.raises(RunIdTaken):
        store.create_run(make_run("r1", created_at=200.0), ["a"], tick=("nightly", 200.0))
    assert store.tick_run("nightly", 200.0) is None
    assert store.schedule_runs("nightly") == [(100.0, "r1")]
    assert store.get_run("r1").created_at == 100.0
    # the tick is still free
    store.create_run(make_run("r2", created_at=200.0), ["a"], tick=("nightly", 200.0))
    assert store.tick_run("nightly", 200.0) == "r2"


def test_schedule_runs_are_newest_first_and_limited(store: SqlStore) -> None:
    assert store.schedule_runs("nightly") == []
    for i, t in enumerate((300.0, 100.0, 500.0, 200.0, 400.0)):
        store.create_run(make_run(f"r{i}", created_at=t), ["a"], tick=("nightly", t))
    store.create_run(make_run("other"), ["a"], tick=("hourly", 600.0))
    assert store.schedule_runs("nightly") == [
        (500.0, "r2"),
        (400.0, "r4"),
        (300.0, "r0"),
        (200.0, "r3"),
        (100.0, "r1"),
    ]
    assert store.schedule_runs("nightly", 2) == [(500.0, "r2"), (400.0, "r4")]
    assert store.schedule_runs("nightly", limit=1) == [(500.0, "r2")]
    assert store.schedule_runs("hourly") == [(600.0, "other")]
    assert store.schedule_runs("weekly") == []


def test_schedule_runs_default_limit_is_ten(store: SqlStore) -> None:
    for i in range(12):
        store.create_run(make_run(f"r{i:02d}"), ["a"], tick=("nightly", 100.0 + i))
    ticks = store.schedule_runs("nightly")
    assert ticks == [(100.0 + i, f"r{i:02d}") for i in range(11, 1, -1)]


def test_active_schedule_runs_count_the_unfinished_runs_of_that_schedule(
    store: SqlStore,
) -> None:
    assert store.active_schedule_runs("nightly") == 0
    states = ["queued", "running", "paused", "success", "failed", "cancelled"]
    for i, state in enumerate(states):
        store.create_run(make_run(f"n-{state}"), ["a"], tick=("nightly", 100.0 + i))
    store.create_run(make_run("h-queued"), ["a"], tick=("hourly", 100.0))
    store.create_run(make_run("h-running"), ["a"], tick=("hourly", 200.0))
    store.create_run(make_run("manual"), ["a"])  # queued, no schedule's
    store.commit(
        Batch(
            runs=[
                RunUpdate("n-running", state="running", started_at=101.0),
                RunUpdate("n-paused", state="paused"),
                RunUpdate("n-success", state="success", ended_at=110.0),
                RunUpdate("n-failed", state="failed", ended_at=110.0),
                RunUpdate("n-cancelled", state="cancelled", ended_at=110.0),
                RunUpdate("h-running", state="running", started_at=201.0),
            ]
        )
    )
    assert store.get_run("n-paused").state == "paused"
    assert store.active_schedule_runs("nightly") == 3
    assert store.active_schedule_runs("hourly") == 2
    assert store.active_schedule_runs("weekly") == 0
    # the queued one ends: two left
    store.commit(Batch(runs=[RunUpdate("n-queued", state="success", ended_at=120.0)]))
    assert store.active_schedule_runs("nightly") == 2
    store.commit(Batch(runs=[RunUpdate("n-running", state="failed", ended_at=121.0)]))
    store.commit(Batch(runs=[RunUpdate("n-paused", state="cancelled", ended_at=122.0)]))
    assert store.active_schedule_runs("nightly") == 0
    assert store.active_schedule_runs("hourly") == 2


def test_ended_runs_after_are_a_pipeline_s_runs_ended_in_those_states_oldest_first(
    store: SqlStore,
) -> None:
    ends = {  # run id: (pipeline, end state, ended at)
        "a-late": ("extract", "success", 130.0),
        "a-early": ("extract", "success", 110.0),
        "a-failed": ("extract", "failed", 120.0),
        "a-cancelled": ("extract", "cancelled", 125.0),
        "a-at-100": ("extract", "success", 100.0),
        "b-ok": ("load", "success", 115.0),
    }
    for run_id, (pipeline, _, _) in ends.items():
        store.create_run(make_run(run_id, pipeline=pipeline), ["a"])
    store.create_run(make_run("a-running", pipeline="extract"), ["a"])
    store.create_run(make_run("a-queued", pipeline="extract"), ["a"])
    store.commit(
        Batch(
            runs=[
                RunUpdate(run_id, state=state, ended_at=at)
                for run_id, (_, state, at) in ends.items()
            ]
            + [RunUpdate("a-running", state="running", started_at=101.0)]
        )
    )
    assert store.ended_runs_after("extract", ["success"], 100.0, 10) == [
        ("a-early", 110.0),
        ("a-late", 130.0),
    ]  # strictly after: the run that ended at 100.0 is not one
    assert store.ended_runs_after("extract", ["success"], 99.0, 10)[0] == ("a-at-100", 100.0)
    assert store.ended_runs_after("extract", ["failed", "cancelled"], 0.0, 10) == [
        ("a-failed", 120.0),
        ("a-cancelled", 125.0),
    ]
    assert [r for r, _ in store.ended_runs_after("extract", ["success", "failed"], 0.0, 10)] == [
        "a-at-100",
        "a-early",
        "a-failed",
        "a-late",
    ]
    assert store.ended_runs_after("extract", ["success", "failed", "cancelled"], 0.0, 2) == [
        ("a-at-100", 100.0),
        ("a-early", 110.0),
    ]
    assert store.ended_runs_after("extract", ["success"], 130.0, 10) == []
    assert store.ended_runs_after("load", ["success"], 0.0, 10) == [("b-ok", 115.0)]
    assert store.ended_runs_after("nothing", ["success"], 0.0, 10) == []
    assert store.ended_runs_after("extract", [], 0.0, 10) == []


def test_many_writers_firing_one_tick_make_one_run(store: SqlStore, backend: Backend) -> None:
    writers = 8
    stores = [backend.open() for _ in range(writers)]
    barrier = threading.Barrier(writers)
    outcomes: list[str] = [""] * writers

    def fire(i: int) -> None:
        barrier.wait()
        try:
            stores[i].create_run(make_run(f"w{i}"), ["a", "b"], tick=("nightly", 100.0))
        except TickTaken:
            outcomes[i] = "taken"
        except Exception as exc:  # any other error: the assertion below shows it
            outcomes[i] = repr(exc)
        else:
            outcomes[i] = "created"

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(writers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60.0)
    finally:
        for other in stores:
            other.close()
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(outcomes) == ["created"] + ["taken"] * (writers - 1)
    (winner,) = [i for i, outcome in enumerate(outcomes) if outcome == "created"]
    assert store.tick_run("nightly", 100.0) == f"w{winner}"
    assert store.schedule_runs("nightly") == [(100.0, f"w{winner}")]
    assert [r.run_id for r in store.list_runs()] == [f"w{winner}"]
    assert backend.query("SELECT COUNT(*) FROM runs") == [(1,)]
    assert backend.query("SELECT COUNT(*) FROM task_runs") == [(2,)]


# -- the migration ---------------------------------------------------------------------


def test_a_version_12_store_is_migrated_to_13_with_empty_schedule_tables(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MIGRATIONS[12].version == 13
    with monkeypatch.context() as patch:
        patch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS[:12])
        patch.setattr(migrations_module, "LATEST_VERSION", 12)
        with backend.open() as old:
            old.create_run(make_run("r1"), ["a"])
    assert backend.query("SELECT version FROM stageflow_schema") == [(12,)]
    assert "schedules" not in backend.tables()
    assert "schedule_runs" not in backend.tables()
    with backend.open() as store:
        assert backend.query("SELECT COUNT(*) FROM schedules") == [(0,)]
        assert backend.query("SELECT COUNT(*) FROM schedule_runs") == [(0,)]
        assert store.schedules() == []
        assert store.get_run("r1") == make_run("r1")
        assert [t.task_id for t in store.task_runs("r1")] == ["a"]
        assert store.tick_run("nightly", 100.0) is None
        store.put_schedule(make_schedule())
        store.create_run(make_run("r2"), ["a"], tick=("nightly", 100.0))
        assert store.schedule_runs("nightly") == [(100.0, "r2")]
    assert {"schedules", "schedule_runs"} <= set(backend.tables())
    assert backend.query("SELECT version FROM stageflow_schema") == [(LATEST_VERSION,)]


# -- many ticks at once (a scheduler's pass) --------------------------------------------------


def tick_run(run_id: str, name: str, at: float, next_at: float | None) -> TickRun:
    version = PipelineRecord("churn", "v1", '{"name": "churn"}', 50.0)
    run = replace(make_run(run_id, created_at=at), triggered_by=f"schedule:{name}")
    return TickRun(run, ("a", "b"), version, (name, at, at - 100.0), next_at)


def test_create_tick_runs_writes_each_run_its_tick_and_moves_its_schedule(
    store: SqlStore,
) -> None:
    for name in ("nightly", "hourly"):
        store.put_schedule(make_schedule(name, next_at=100.0))
    store.create_run(make_run("old"), ["a"], tick=("hourly", 200.0))  # fired by another
    store.create_run(make_run("dup"), ["a"])  # an id drawn already
    outcomes = store.create_tick_runs(
        [
            tick_run("n1", "nightly", 100.0, 200.0),
            tick_run("n2", "nightly", 200.0, 300.0),  # a second tick of one schedule
            tick_run("h1", "hourly", 200.0, 300.0),
            tick_run("dup", "hourly", 300.0, 400.0),
        ]
    )
    assert outcomes == ["created", "created", "taken", "id_taken"]
    assert store.schedule_runs("nightly", 10) == [(200.0, "n2"), (100.0, "n1")]
    assert store.tick_of_run("n1") == ("nightly", 100.0, 0.0)
    assert [t.task_id for t in store.task_runs("n2")] == ["a", "b"]
    with pytest.raises(RunNotFound):
        store.get_run("h1")  # its tick was taken: its row was taken back
    assert store.schedule_runs("hourly", 10) == [(200.0, "old")]  # 300: its id, drawn again
    nightly, hourly = read(store, "nightly"), read(store, "hourly")
    assert (nightly.last_tick, nightly.next_at) == (200.0, 300.0)
    assert (hourly.last_tick, hourly.next_at) == (200.0, 300.0)  # the taken tick moves it
    assert store.get_pipeline("churn", "v1").spec_json == '{"name": "churn"}'


def test_next_fire_after_is_the_soonest_enabled_future_fire_time(store: SqlStore) -> None:
    assert store.next_fire_after(0.0) is None
    store.put_schedule(make_schedule("a", next_at=300.0))
    store.put_schedule(make_schedule("b", next_at=200.0, enabled=False))
    store.put_schedule(make_schedule("c", next_at=100.0))  # due (held back): not after 150
    store.put_schedule(make_schedule("d", next_at=None))  # never again
    assert store.next_fire_after(50.0) == 100.0
    assert store.next_fire_after(150.0) == 300.0
    assert store.next_fire_after(300.0) is None
