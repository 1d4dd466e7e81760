"""A schedule loop runs its background duties after each pass (``runtime.duties``): in
order, at the pass's time, and one that fails (a bug or an unreachable store) is logged
without keeping the next duty or the next pass from running."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stageflow.errors import StoreError
from stageflow.runtime.schedule_loop import ScheduleLoop
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store


class Recording:
    def __init__(self, name: str, seen: list[tuple[str, float]], fail: Exception | None = None):
        self.name = name
        self.seen = seen
        self.fail = fail

    def run_pass(self, now: float) -> None:
        self.seen.append((self.name, now))
        if self.fail is not None:
            raise self.fail


def test_each_duty_runs_after_each_pass_and_a_failing_one_stops_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings.database_url, settings.home)
    seen: list[tuple[str, float]] = []
    duties = [
        Recording("buggy", seen, RuntimeError("boom")),
        Recording("away", seen, StoreError("the store is away")),
        Recording("fine", seen),
    ]
    try:
        loop = ScheduleLoop(settings, store, duties=duties)
        with caplog.at_level(logging.WARNING, logger="stageflow.runtime.duties"):
            loop.run_pass(100.0)
            loop.run_pass(101.0)
    finally:
        store.close()
    assert seen == [(n, t) for t in (100.0, 101.0) for n in ("buggy", "away", "fine")]
    said = [r.getMessage() for r in caplog.records]
    assert said.count("buggy: a pass failed; trying again next pass") == 2
    assert said.count("away: could not read or write the store: the store is away") == 2
