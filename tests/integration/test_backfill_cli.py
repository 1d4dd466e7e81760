"""Backfills through the real CLI in subprocesses (``stageflow backfill ...``,
``stageflow scheduler``, ``stageflow worker``), on SQLite:

- a backfill of a daily schedule over five days makes exactly five runs, fired by a
  scheduler oldest first, never more than ``--max-active`` unfinished at once, run by a
  worker, with the schedule's parameters (``--param`` on top) and priority; its status
  goes to done;
- ``backfill cancel`` stops a running backfill as a whole: no more ticks, its queued
  run is cancelled in the store at once and its running one by its worker;
- every mistake exits 2 with a message naming the option, and writes nothing;
- (in process) an interval's backfill keeps the schedule's ticks where they fall, and
  two backfills started in the same second get distinct names.

The ticks are in the past (January 2026): what a backfill fires is fixed by its bounds,
whatever the clock says; the waits only bound a hang.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers_places import Place, place_on
from helpers_schedules import WAIT, ok, sf, terminate, ticks
from helpers_tasks import wait_until

from stageflow.runtime.store.base import RunRecord

FROM, TO = "2026-01-01", "2026-01-05T23:59:59Z"
DAYS = [datetime(2026, 1, d, tzinfo=UTC).timestamp() for d in range(1, 6)]


def spec(name: str, command: str, who: str = "nobody") -> dict[str, object]:
    return {
        "name": name,
        "params": {"who": who},
        "tasks": [{"id": "hi", "operator": "bash", "parameters": {"command": command}}],
    }


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Place]:
    with place_on("sqlite", tmp_path, Place) as found:
        yield found


def save(
    place: Place, name: str, command: str = 'echo "hi $STAGEFLOW_PARAM_WHO"', who: str = "nobody"
) -> None:
    """Save pipeline ``name`` (``stageflow run`` saves it, and runs it to its end)."""
    path = place.tmp / f"{name}.json"
    path.write_text(json.dumps(spec(name, command, who)))
    ok(place, "run", str(path))


def status(place: Place, name: str) -> dict[str, object]:
    return json.loads(ok(place, "backfill", "status", name, "--format", "json").stdout)


def fired_runs(place: Place, name: str) -> list[RunRecord]:
    """The runs the backfill's ticks made, in the order they were created."""
    with place.store() as store:
        runs = store.list_runs(limit=100_000)
    return sorted(
        (r for r in runs if r.triggered_by == f"schedule:{name}"), key=lambda r: r.created_at
    )


@pytest.mark.slow
def test_a_backfill_fires_its_ticks_oldest_first_bounded_and_ends_done(place: Place) -> None:
    save(place, "greet", 'sleep 0.4; echo "hi $STAGEFLOW_PARAM_WHO"')
    # Paused: it fires nothing itself; a backfill takes its timing, parameters, priority.
    ok(
        place,
        *("schedules", "add", "daily", "greet", "--cron", "0 0 * * *", "--paused"),
        *("--param", "who=daily", "--priority", "3"),
    )
    made = ok(
        place,
        *("backfill", "greet", "--from", FROM, "--to", TO, "--max-active", "2"),
        *("--param", "who=filled"),
    )
    name = made.stdout.strip()
    assert made.stdout == f"{name}\n"  # the name alone
    assert name.startswith("backfill-daily-20"), name
    assert f"backfill {name}: 5 runs of pipeline 'greet' (schedule 'daily'" in made.stderr
    before = status(place, name)
    assert {k: before[k] for k in ("state", "done", "total", "fired", "schedule", "pipeline")} == {
        "state": "running",
        "done": False,
        "total": 5,
        "fired": 0,
        "schedule": "daily",
        "pipeline": "greet",
    }
    assert (before["from"], before["to"]) == (
        "2026-01-01T00:00:00.000+00:00",
        "2026-01-05T23:59:59.000+00:00",
    )

    scheduler = place.start("scheduler", "scheduler", "--poll-seconds", "0.1")
    worker = place.start("worker", "worker", "--no-schedules", "--concurrency", "4")
    wait_until(lambda: status(place, name)["done"] is True, "the backfill is done", timeout=WAIT)
    time.sleep(0.5)  # a few more passes: nothing more fires
    assert terminate(scheduler) == 0, place.output("scheduler")
    assert terminate(worker) == 0, place.output("worker")

    done = status(place, name)
    assert {k: done[k] for k in ("state", "done", "total", "handled", "fired", "skipped")} == {
        "state": "done",
        "done": True,
        "total": 5,
        "handled": 5,
        "fired": 5,
        "skipped": 0,
    }
    assert done["runs"] == {
        "queued": 0,
        "running": 0,
        "paused": 0,
        "success": 5,
        "failed": 0,
        "cancelled": 0,
    }
    # Exactly one run per tick, the five midnights, and nothing else.
    fired = ticks(place, name)
    assert [t for t, _ in fired] == DAYS
    runs = fired_runs(place, name)
    assert sorted(r.run_id for r in runs) == sorted(run_id for _, run_id in fired)
    assert all(
        (r.state, r.params, r.priority) == ("success", {"who": "filled"}, 3) for r in runs
    ), runs
    # Oldest first: the ticks' logical times increase with the runs' creation order.
    tick_of = {run_id: t for t, run_id in fired}
    assert [tick_of[r.run_id] for r in runs] == DAYS
    # Never more than 2 unfinished at once: at each run's creation, at most one earlier
    # run was unfinished (the loop counts them before it creates one; a run's ended_at is
    # written when it stops counting as unfinished).
    overlaps = []
    for run in runs:
        unfinished = [
            r
            for r in runs
            if r.created_at < run.created_at and (r.ended_at is None or r.ended_at > run.created_at)
        ]
        assert len(unfinished) <= 1, (run, unfinished)
        overlaps.append(len(unfinished))
    # The bound was reached: the first pass found every tick due and made two runs at
    # once (a run takes 0.4 s), then waited.
    assert max(overlaps) == 1, overlaps
    listed = ok(place, "backfill", "list").stdout.splitlines()
    assert listed[0].split() == ["BACKFILL", "PIPELINE", "STATE", "PROGRESS"]
    assert listed[1].split()[:3] == [name, "greet", "done"]
    assert "5 of 5 ticks fired" in listed[1] and "5 success" in listed[1]
    shown = ok(place, "backfill", "status", name).stdout
    assert "5 of 5 ticks fired; runs: 0 queued, 0 running, 5 success" in shown
    assert "state: done" in shown
    again = ok(place, "backfill", "cancel", name)
    assert "is done already; nothing to cancel" in again.stderr
    assert status(place, name)["state"] == "done"


@pytest.mark.slow
def test_cancel_stops_a_running_backfill_as_a_whole(place: Place) -> None:
    # Its task sleeps for the parameter who (0 when saved); the backfill's runs, a minute.
    save(place, "slow", 'sleep "$STAGEFLOW_PARAM_WHO"', who="0")
    ok(place, "schedules", "add", "hourly", "slow", "--every", "1h", "--paused")
    name = ok(
        place,
        *("backfill", "slow", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T09:00:00Z"),
        *("--max-active", "2", "--param", "who=60"),
    ).stdout.strip()
    assert status(place, name)["total"] == 10

    scheduler = place.start("scheduler", "scheduler", "--poll-seconds", "0.1")
    # One run at a time: of the backfill's two unfinished runs, one runs, one waits queued.
    worker = place.start("worker", "worker", "--no-schedules", "--concurrency", "1")

    def one_running_one_queued() -> bool:
        return sorted(r.state for r in fired_runs(place, name)) == ["queued", "running"]

    wait_until(one_running_one_queued, "a run runs and one waits", timeout=WAIT)
    queued = next(r.run_id for r in fired_runs(place, name) if r.state == "queued")
    cancelled = ok(place, "backfill", "cancel", name)
    assert (
        f"backfill {name} cancelled: it fires no more ticks (2 of 10 fired); 2 unfinished runs "
        "cancelled (1 at once in the store, 1 being stopped by their workers)"
    ) in cancelled.stderr, cancelled.stderr
    with place.store() as store:
        assert store.get_run(queued).state == "cancelled"  # nobody took it: ended at once
    wait_until(
        lambda: {r.state for r in fired_runs(place, name)} == {"cancelled"},
        "the running run is cancelled by its worker",
        timeout=WAIT,
    )
    time.sleep(1.0)  # ten passes: a backfill still on would fire its next two ticks now
    assert terminate(scheduler) == 0, place.output("scheduler")
    assert terminate(worker) == 0, place.output("worker")

    assert len(ticks(place, name)) == 2
    assert len(fired_runs(place, name)) == 2
    after = status(place, name)
    assert {k: after[k] for k in ("state", "done", "total", "fired")} == {
        "state": "cancelled",
        "done": False,
        "total": 10,
        "fired": 2,
    }
    assert after["runs"] == {
        "queued": 0,
        "running": 0,
        "paused": 0,
        "success": 0,
        "failed": 0,
        "cancelled": 2,
    }
    shown = json.loads(ok(place, "schedules", "show", name, "--format", "json").stdout)
    assert shown["enabled"] is False
    assert "state: cancelled" in ok(place, "backfill", "status", name).stdout


MISTAKES: list[tuple[tuple[str, ...], list[str]]] = [
    (
        ("lonely", "--from", FROM, "--to", TO),
        ["pipeline 'lonely' has no schedule", "give --schedule NAME"],
    ),
    (
        ("greet", "--from", FROM, "--to", TO),
        ["pipeline 'greet' has 2 schedules (daily, hourly); give --schedule NAME"],
    ),
    (
        ("greet", "--schedule", "nope", "--from", FROM, "--to", TO),
        ["--schedule nope: no schedule 'nope'", "its schedules are: daily, hourly"],
    ),
    (
        ("greet", "--schedule", "daily", "--from", "2026-01-05", "--to", "2026-01-01"),
        ["--from (2026-01-05 00:00:00 UTC) must be before --to (2026-01-01 00:00:00 UTC)"],
    ),
    (
        ("greet", "--schedule", "daily", "--from", FROM, "--to", "2099-01-01"),
        ["--to (2099-01-01 00:00:00 UTC) is in the future", "give --to at or before now"],
    ),
    (
        ("greet", "--schedule", "daily", "--from", FROM, "--to", TO, "--param", "nope=1"),
        ["--param nope: the pipeline declares no parameter 'nope' (declared: who)"],
    ),
    (
        ("greet", "--schedule", "daily", "--from", FROM, "--to", TO, "--max-active", "0"),
        ["--max-active 0 must be at least 1"],
    ),
    (
        ("greet", "--schedule", "daily", "--from", "yesterday", "--to", TO),
        ["--from 'yesterday' is not a date or time"],
    ),
    (
        ("greet", "--schedule", "daily", "--from", "2026-01-01T01:00", "--to", "2026-01-01T23:00"),
        ["no tick of schedule 'daily' (cron 0 0 * * * (UTC)) between --from", "--to"],
    ),
    (
        ("greet", "--schedule", "hourly", "--from", "2024-01-01", "--to", "2026-01-01"),
        ["more than 10,000 ticks", "split it into narrower --from/--to"],
    ),
    (("nosuch", "--from", FROM, "--to", TO), ["no saved pipeline 'nosuch'"]),
    (("greet", "--to", TO), ["Missing option '--from'"]),
    (("status", "ghost"), ["no backfill 'ghost'; the backfills are: backfill-daily-"]),
    (("cancel", "ghost"), ["no backfill 'ghost'; the backfills are: backfill-daily-"]),
    (("status", "daily"), ["no backfill 'daily'"]),  # a schedule, not a backfill
]


def test_every_mistake_exits_2_naming_it_and_writes_nothing(place: Place) -> None:
    save(place, "greet")
    save(place, "lonely")
    ok(place, "schedules", "add", "daily", "greet", "--cron", "0 0 * * *", "--paused")
    ok(place, "schedules", "add", "hourly", "greet", "--every", "1h", "--paused")
    # A backfill the mistakes name (no scheduler runs: it stays as it is).
    existing = ok(
        place, "backfill", "greet", "--schedule", "daily", "--from", FROM, "--to", TO
    ).stdout.strip()
    listing = ok(place, "schedules", "list", "--format", "json").stdout
    backfills = ok(place, "backfill", "list", "--format", "json").stdout
    with place.store() as store:
        runs_before = len(store.list_runs(limit=100_000))
    for args, expected in MISTAKES:
        result = sf(place, "backfill", *args)
        assert result.returncode == 2, (args, result)
        assert result.stderr.startswith(("error: ", "Usage: ")), (args, result.stderr)
        for text in expected:
            assert text in result.stderr, (args, text, result.stderr)
    assert ok(place, "schedules", "list", "--format", "json").stdout == listing
    assert ok(place, "backfill", "list", "--format", "json").stdout == backfills
    assert [b["name"] for b in json.loads(backfills)] == [existing]
    with place.store() as store:
        assert len(store.list_runs(limit=100_000)) == runs_before
        assert store.schedule_runs(existing, 100) == []


def test_an_interval_backfill_keeps_the_schedule_s_ticks_and_names_are_unique(
    place: Place,
) -> None:
    from stageflow import operations as ops
    from stageflow.engine.schedules import upcoming
    from stageflow.runtime.schedule_loop import schedule_spec

    save(place, "greet")
    # Hourly at half past (its start anchors it): a backfill from 00:00 to 05:00 fires at
    # 00:30 ... 04:30, not on the hour.
    ok(
        place,
        *("schedules", "add", "half", "greet", "--every", "1h"),
        *("--start", "2025-12-31T00:30:00Z", "--paused"),
    )
    now = datetime(2026, 2, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    with place.store() as store:
        first = ops.start_backfill(
            store,
            "greet",
            start="2026-01-01T00:00:00Z",
            end="2026-01-01T05:00:00Z",
            owner=None,
            see_all=True,
            now=now,
        )
        second = ops.start_backfill(
            store,
            "greet",
            start="2026-01-01T00:00:00Z",
            end="2026-01-01T05:00:00Z",
            owner=None,
            see_all=True,
            now=now,
        )
        record = store.get_schedule(first.name)
    assert (first.name, second.name) == (
        "backfill-half-20260201T120000",
        "backfill-half-20260201T120000-2",
    )
    assert (first.total, first.schedule, first.state) == (5, "half", "running")
    assert record is not None
    half_past = datetime(2026, 1, 1, 0, 30, tzinfo=UTC).timestamp()
    spec = schedule_spec(record)
    assert upcoming(spec, half_past - 1, 10) == [half_past + 3600 * k for k in range(5)]
    assert first.as_json()["from"] == "2026-01-01T00:30:00.000+00:00"  # its first tick


def test_cancel_ends_queued_runs_before_it_frees_a_worker_s_slot(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker whose running run is cancelled takes the next queued run at once: the
    # cancel must end the queued runs first, or that run starts (and then is only asked
    # to stop) instead of ending in the store. The stand-in worker below claims the next
    # queued run the moment its running run's cancel is stored, the tightest timing.
    from stageflow import operations as ops
    from stageflow.operations import commands
    from stageflow.runtime.schedule_loop import ScheduleLoop
    from stageflow.runtime.settings import Settings

    save(place, "greet")
    ok(place, "schedules", "add", "hourly", "greet", "--every", "1h", "--paused")
    name = ok(
        place,
        *("backfill", "greet", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T09:00:00Z"),
        "--max-active",
        "2",
    ).stdout.strip()
    settings = Settings(home=place.home)
    # A worker on another host: live while its lease is (an hour).
    lease = {"owner": "w-1", "host": "elsewhere", "pid": 1, "ttl": 3600.0}
    with place.store() as store:
        ScheduleLoop(settings, store).run_pass()
        assert len(fired_runs(place, name)) == 2
        taken = store.claim_next(now=time.time(), **lease)  # the worker runs the oldest
        assert taken is not None
        running = taken[0].run_id
        real_cancel = commands.cancel

        def cancel_then_take_next(s: Settings, run_id: str, *, by: str | None = None) -> object:
            outcome = real_cancel(s, run_id, by=by)
            if run_id == running:  # its slot is free: the worker takes the next run
                store.claim_next(now=time.time(), **lease)
            return outcome

        monkeypatch.setattr(commands, "cancel", cancel_then_take_next)
        info = ops.cancel_backfill(settings, store, name, owner=None, see_all=True)
        queued = next(r.run_id for r in fired_runs(place, name) if r.run_id != running)
        assert store.get_run(queued).state == "cancelled"
    assert sorted(info.cancelled_runs) == sorted([(queued, "cancelled"), (running, "stopping")])
