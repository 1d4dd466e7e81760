"""``after`` schedules through the real CLI in subprocesses, on SQLite: a schedule of
pipeline B ``--after A`` queues one run of B for each run of A that ends in its chosen
states (``success`` by default; ``--after-state failed``), a ``stageflow scheduler`` fires
them and a ``stageflow worker --no-schedules`` runs them; every mistake exits 2 naming
its option.

Real clock: the counts rely on what the schedule logic makes exact (one tick per
upstream run, keyed by its ``ended_at``); the rest waits with generous timeouts.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_places import Place, place_on
from helpers_schedules import WAIT, ok, sf, ticks
from helpers_tasks import wait_until

from stageflow.runtime.store.base import RunRecord

UPSTREAM = {
    "name": "A",
    "params": {"code": 0},
    "tasks": [
        {
            "id": "extract",
            "operator": "bash",
            "parameters": {"command": "exit $STAGEFLOW_PARAM_CODE"},
        }
    ],
}
DOWNSTREAM = {
    "name": "B",
    "tasks": [{"id": "load", "operator": "bash", "parameters": {"command": "echo loaded"}}],
}


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Place]:
    with place_on("sqlite", tmp_path, Place) as found:
        yield found


def run_spec(place: Place, spec: dict[str, object], *args: str) -> int:
    """``stageflow run`` the spec (saving it) to its end; its exit status."""
    path = place.tmp / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return sf(place, "run", str(path), *args).returncode


def runs_of(place: Place, pipeline: str, triggered_by: str | None = None) -> list[RunRecord]:
    """The runs of ``pipeline`` (made by ``triggered_by``, when given), oldest first."""
    with place.store() as store:
        runs = store.list_runs(limit=100_000)
    return sorted(
        (
            r
            for r in runs
            if r.pipeline == pipeline and (triggered_by is None or r.triggered_by == triggered_by)
        ),
        key=lambda r: r.created_at,
    )


def test_a_run_of_b_follows_each_run_of_a_that_ends_in_the_chosen_state(place: Place) -> None:
    assert run_spec(place, UPSTREAM) == 0  # saves A (this run ended before any schedule)
    assert run_spec(place, DOWNSTREAM) == 0  # saves B
    ok(place, "schedules", "add", "b-after-a", "B", "--after", "A")
    ok(place, "schedules", "add", "b-on-fail", "B", "--after", "A", "--after-state", "failed")
    shown = json.loads(ok(place, "schedules", "show", "b-after-a", "--format", "json").stdout)
    assert (shown["kind"], shown["timing"], shown["next_at"]) == ("after", "after A succeeds", None)
    listed = ok(place, "schedules", "list").stdout
    assert "after A ends in failed" in listed, listed

    scheduler = place.start("scheduler", "scheduler", "--poll-seconds", "0.2")
    wait_until(lambda: "scheduler ready" in place.stderr("scheduler"), "the scheduler is ready")
    time.sleep(0.6)  # passes go by: A's run from before the schedules fires nothing
    assert runs_of(place, "B", "schedule:b-after-a") == []

    assert run_spec(place, UPSTREAM) == 0
    wait_until(
        lambda: len(runs_of(place, "B", "schedule:b-after-a")) >= 1,
        "a run of B is queued after A succeeded",
        timeout=10,
    )
    time.sleep(1.0)  # five more passes: still one run per run of A
    assert len(runs_of(place, "B", "schedule:b-after-a")) == 1
    assert runs_of(place, "B", "schedule:b-on-fail") == []

    assert run_spec(place, UPSTREAM) == 0
    wait_until(
        lambda: len(runs_of(place, "B", "schedule:b-after-a")) >= 2,
        "a second run of B is queued after A succeeded again",
        timeout=10,
    )

    assert run_spec(place, UPSTREAM, "--param", "code=3") != 0  # A fails
    wait_until(
        lambda: len(runs_of(place, "B", "schedule:b-on-fail")) >= 1,
        "a run of B is queued after A failed (--after-state failed)",
        timeout=10,
    )
    time.sleep(1.0)
    assert len(runs_of(place, "B", "schedule:b-after-a")) == 2  # the failure fired none
    assert len(runs_of(place, "B", "schedule:b-on-fail")) == 1
    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(timeout=WAIT) == 0, place.output("scheduler")

    # Each tick is the end of the run of A that fired it.
    upstream = runs_of(place, "A")
    succeeded = [r.ended_at for r in upstream if r.state == "success"][1:]  # after the add
    failed = [r.ended_at for r in upstream if r.state == "failed"]
    assert [t for t, _ in ticks(place, "b-after-a")] == succeeded
    assert [t for t, _ in ticks(place, "b-on-fail")] == failed
    made = runs_of(place, "B", "schedule:b-after-a") + runs_of(place, "B", "schedule:b-on-fail")
    assert all(r.state == "queued" for r in made), made

    worker = place.start("worker", "worker", "--no-schedules", "--idle-exit", "2")
    assert worker.wait(timeout=WAIT) == 0, place.output("worker")
    done = runs_of(place, "B", "schedule:b-after-a") + runs_of(place, "B", "schedule:b-on-fail")
    assert [r.state for r in done] == ["success"] * 3, done
    with place.store() as store:
        assert store.tick_of_run(done[0].run_id) == ("b-after-a", succeeded[0], succeeded[0])


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("b", "B", "--after", "ghost"), "--after"),
        (("b", "B", "--after", "A", "--after-state", "bogus"), "--after-state"),
        (("b", "B", "--after", "B"), "--after"),
        (("b", "B", "--every", "1h", "--after-state", "failed"), "--after-state"),
        (("b", "B", "--after", "A", "--catchup"), "--catchup"),
    ],
)
def test_every_after_mistake_exits_2_naming_its_option(
    place: Place, args: tuple[str, ...], option: str
) -> None:
    assert run_spec(place, UPSTREAM) == 0
    assert run_spec(place, DOWNSTREAM) == 0
    result = sf(place, "schedules", "add", *args)
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: "), result.stderr
    assert option in result.stderr, result.stderr
    assert ok(place, "schedules", "list", "--format", "json").stdout.strip() == "[]"


def test_a_backfill_refuses_an_after_schedule(place: Place) -> None:
    assert run_spec(place, UPSTREAM) == 0
    assert run_spec(place, DOWNSTREAM) == 0
    ok(place, "schedules", "add", "b-after-a", "B", "--after", "A")
    result = sf(place, "backfill", "B", "--from", "2024-01-01T00:00:00Z", "--to", "2024-01-02")
    assert result.returncode == 2, result
    assert "no ticks to backfill" in result.stderr, result.stderr
