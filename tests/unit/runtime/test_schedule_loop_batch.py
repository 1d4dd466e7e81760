"""A schedule loop's pass fires the due ticks of many schedules together
(``ScheduleLoop._fire_together``): one run per tick with the schedule's parameters,
priority and ``triggered_by``; a schedule whose pipeline has no live version, or whose
parameters the pipeline no longer takes, skips its tick (said in the report) and moves
on, so no pass spins on it; every schedule's ``last_tick`` moves to the tick. A fake
clock: the pass is given its time."""

from __future__ import annotations

import json
from pathlib import Path

from stageflow.runtime.schedule_loop import ScheduleLoop
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import PipelineRecord, open_store
from stageflow.runtime.store.base import ScheduleRecord

SPEC = {
    "name": "p",
    "params": {"who": "nobody"},
    "tasks": [{"id": "a", "operator": "bash", "parameters": {"command": "true"}}],
}
MINUTE = 1_800_000_000.0  # a whole minute (divisible by 60)


def schedule(name: str, pipeline: str = "p", **fields: object) -> ScheduleRecord:
    values: dict[str, object] = {
        "params": {},
        "priority": 0,
        "max_active_runs": None,
        "enabled": True,
        "last_tick": None,
        "owner": None,
        "created_at": MINUTE - 30,
        "updated_at": MINUTE - 30,
        "next_at": MINUTE,
        **fields,
    }
    spec = {"kind": "cron", "cron": "* * * * *", "timezone": "UTC"}
    return ScheduleRecord(name=name, pipeline=pipeline, spec=spec, **values)  # type: ignore[arg-type]


def test_a_pass_fires_every_due_tick_together_and_skips_what_cannot_run(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings.database_url, settings.home)
    try:
        store.save_pipeline(PipelineRecord("p", "v1", json.dumps(SPEC), MINUTE - 60))
        store.put_schedule(schedule("plain"))
        store.put_schedule(schedule("urgent", params={"who": "ops"}, priority=5))
        store.put_schedule(schedule("orphan", pipeline="gone"))  # no live version
        store.put_schedule(schedule("stale", params={"whom": "x"}))  # not declared any more
        loop = ScheduleLoop(settings, store)

        report = loop.run_pass(MINUTE + 0.5)

        fired = {f.schedule: f for f in report.fired}
        assert sorted(fired) == ["plain", "urgent"]
        assert {f.at for f in report.fired} == {MINUTE}
        urgent = store.get_run(fired["urgent"].run_id)
        assert (urgent.params, urgent.priority) == ({"who": "ops"}, 5)
        assert urgent.triggered_by == "schedule:urgent"
        assert urgent.state == "queued"
        assert [t.task_id for t in store.task_runs(urgent.run_id)] == ["a"]
        assert store.tick_of_run(urgent.run_id) == ("urgent", MINUTE, MINUTE - 60)
        skipped = {name: why for name, _at, why in report.skipped}
        assert sorted(skipped) == ["orphan", "stale"]
        assert "gone" in skipped["orphan"]
        assert "whom" in skipped["stale"]
        for name in ("plain", "urgent", "orphan", "stale"):
            record = store.get_schedule(name)
            assert record is not None
            assert (record.last_tick, record.next_at) == (MINUTE, MINUTE + 60), name

        again = loop.run_pass(MINUTE + 1.0)  # nothing new is due: nothing fires twice
        assert (again.fired, again.skipped, again.taken) == ([], [], 0)
        assert len(store.schedule_runs("plain", 10)) == 1
    finally:
        store.close()
