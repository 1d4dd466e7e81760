"""Closing a store: at once, or on a thread (``close(wait=False)``, what a run does)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from stageflow.runtime.store.base import PipelineRecord, RunRecord

if TYPE_CHECKING:
    from conftest import Backend


def _closers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "stageflow-store-close"]


@pytest.mark.parametrize("wait", [pytest.param(True, id="wait"), pytest.param(False, id="thread")])
def test_close_keeps_every_commit_and_ends_the_connection(backend: Backend, wait: bool) -> None:
    store = backend.open()
    store.save_pipeline(PipelineRecord("p", "v1", "{}", 1.0))
    store.create_run(RunRecord("r1", "p", "v1", "queued", {}, 1.0), ["a", "b"])

    store.close(wait=wait)
    for thread in _closers():
        thread.join(10)
    store.close(wait=wait)  # twice is harmless

    assert not _closers()
    with pytest.raises(Exception, match="closed"):
        store._conn.cursor().execute("SELECT 1")
    assert backend.query(
        "SELECT task_id FROM task_runs WHERE run_id = ? ORDER BY seq", ("r1",)
    ) == [
        ("a",),
        ("b",),
    ]
    reopened = backend.open()
    try:
        assert [t.task_id for t in reopened.task_runs("r1")] == ["a", "b"]
    finally:
        reopened.close()
