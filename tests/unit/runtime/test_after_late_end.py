"""An ``after`` schedule fires for an upstream run whose end was committed late: after
a later-ending run of the same pipeline had fired it already (its store was away).
A real SQLite store; the loop's passes are given their time."""

from __future__ import annotations

import json
from pathlib import Path

from stageflow.runtime.schedule_loop import ScheduleLoop
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import (
    Batch,
    PipelineRecord,
    RunRecord,
    RunUpdate,
    ScheduleRecord,
)

DOWNSTREAM = {
    "name": "b",
    "tasks": [{"id": "t", "operator": "bash", "parameters": {"command": "echo b"}}],
}


def test_an_upstream_end_committed_late_still_fires_once(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings.database_url, settings.home)
    try:
        store.save_pipeline(PipelineRecord("b", "v1", json.dumps(DOWNSTREAM), 1.0))
        store.put_schedule(
            ScheduleRecord(
                name="b-after-a",
                pipeline="b",
                spec={"kind": "after", "after": "a", "after_states": ["success"]},
                params={},
                created_at=5.0,
                updated_at=5.0,
                next_at=0.0,
            )
        )
        loop = ScheduleLoop(settings, store)

        def end(run_id: str, at: float) -> None:
            store.create_run(RunRecord(run_id, "a", "v", "running", {}, at - 1.0), ["x"])
            store.commit(Batch(runs=[RunUpdate(run_id, state="success", ended_at=at)]))

        end("a-2", 20.0)
        assert [f.at for f in loop.run_pass(30.0).fired] == [20.0]
        end("a-1", 10.0)  # ended before a-2, committed after a-2 had fired the schedule
        assert [f.at for f in loop.run_pass(40.0).fired] == [10.0]
        assert loop.run_pass(50.0).fired == []  # each once
        assert sorted(t for t, _ in store.schedule_runs("b-after-a")) == [10.0, 20.0]
        assert store.get_schedule("b-after-a").last_tick == 20.0  # type: ignore[union-attr]
    finally:
        store.close()
