"""A schedule loop wakes at the next fire time when it comes before its next poll: a
tick fires on time, not up to ``poll_seconds`` late (the loop reads the soonest next fire
time after each pass: ``Store.next_fire_after``)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from stageflow import operations as ops
from stageflow.runtime.schedule_loop import ScheduleLoop
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import PipelineRecord, open_store

SPEC = {"name": "p", "tasks": [{"id": "a", "operator": "bash", "parameters": {"command": "true"}}]}


def test_a_tick_between_polls_fires_on_time(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings.database_url, settings.home)
    try:
        store.save_pipeline(PipelineRecord("p", "v1", json.dumps(SPEC), time.time()))
        at = time.time() + 1.0  # after the loop's first pass, 29 s before its second
        when = datetime.fromtimestamp(at, UTC).isoformat()
        ops.add_schedule(store, "soon", "p", owner=None, see_all=True, at=when)
        loop = ScheduleLoop(settings, store, poll_seconds=30.0)
        thread = threading.Thread(target=loop.serve_forever)
        thread.start()
        try:
            deadline = time.monotonic() + 40
            while not store.schedule_runs("soon", 1) and time.monotonic() < deadline:
                time.sleep(0.05)
            fired = store.schedule_runs("soon", 1)
        finally:
            loop.stop()
            thread.join(timeout=10)
        assert fired, "the tick never fired"
        run = store.get_run(fired[0][1])
        assert run.created_at - at < 1.0, run.created_at - at
    finally:
        store.close()
