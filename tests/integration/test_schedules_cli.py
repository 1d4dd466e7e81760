"""Schedules through the real CLI in subprocesses (``stageflow schedules ...``,
``stageflow scheduler``, ``stageflow worker``), on SQLite and PostgreSQL:

- ``schedules add|list|show|pause|resume|trigger|remove`` round trip;
- every mistake exits 2 with a message naming what is wrong, and writes nothing;
- a scheduler queues one run per tick; a worker runs them;
- several schedulers on one store fire each tick exactly once (three on PostgreSQL,
  two on SQLite), over 300 overdue ticks of a one-second schedule and the new ones;
- catch-up fires every missed tick, oldest first; without it, the latest only;
- ``--max-active`` holds the ticks back until a run ends;
- ``stageflow worker`` fires schedules too, unless ``--no-schedules``.

Real clock: the assertions on counts rely only on what the schedule logic makes exact
(each such place says what it relies on); the rest waits with generous timeouts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers_places import Place, place_on
from helpers_schedules import WAIT, ok, sf, terminate, ticks
from helpers_tasks import wait_until

from stageflow.runtime.store.base import RunRecord

SPEC = {
    "name": "greet",
    "params": {"who": "nobody"},
    "tasks": [
        {
            "id": "hi",
            "operator": "bash",
            "parameters": {"command": 'echo "hi $STAGEFLOW_PARAM_WHO"'},
        }
    ],
}


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Place]:
    with place_on("sqlite", tmp_path, Place) as found:
        yield found


def save_pipeline(place: Place) -> None:
    """Save pipeline ``greet`` (``stageflow run`` saves it, and runs it here, to its end:
    the queue stays empty)."""
    path = place.tmp / "greet.json"
    path.write_text(json.dumps(SPEC))
    ok(place, "run", str(path))


def show(place: Place, name: str) -> dict[str, object]:
    return json.loads(ok(place, "schedules", "show", name, "--format", "json").stdout)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def next_hour_after(t: float) -> float:
    return float(math.floor(t / 3600) * 3600 + 3600)


def fired_runs(place: Place, name: str) -> list[RunRecord]:
    """The runs that schedule ``name``'s ticks made, oldest first."""
    with place.store() as store:
        runs = store.list_runs(limit=100_000)
    return sorted(
        (r for r in runs if r.triggered_by == f"schedule:{name}"), key=lambda r: r.created_at
    )


def assert_exactly_once(place: Place, name: str) -> list[float]:
    """One run per tick, one tick per run, each tick at a distinct whole second, and the
    run of each tick made at or after it; the ticks, oldest first."""
    fired = ticks(place, name)
    times = [t for t, _ in fired]
    runs = fired_runs(place, name)
    assert len(set(times)) == len(times)
    assert sorted(run_id for _, run_id in fired) == sorted(r.run_id for r in runs)
    assert len(runs) == len(fired)
    assert all(t == math.floor(t) for t in times), times  # --every 1s: aligned on the epoch
    created = {r.run_id: r.created_at for r in runs}
    assert all(created[run_id] >= t for t, run_id in fired), "a tick fired before its time"
    return times


# -- the CLI ----------------------------------------------------------------------------------


def test_schedules_round_trip_through_the_cli(place: Place) -> None:
    save_pipeline(place)
    added = ok(
        place,
        *("schedules", "add", "hourly", "greet", "--every", "1h", "--param", "who=x"),
        *("--priority", "3", "--max-active", "2"),
    )
    assert "schedule hourly: pipeline 'greet', every 1h, enabled" in added.stdout

    listed = ok(place, "schedules", "list").stdout.splitlines()
    assert listed[0].split() == ["SCHEDULE", "PIPELINE", "STATE", "NEXT", "TIMING"]
    assert listed[1].split()[:3] == ["hourly", "greet", "enabled"]
    assert listed[1].endswith("every 1h")

    before = time.time()
    shown = show(place, "hourly")
    after = time.time()
    # An hourly interval without --start is aligned on the epoch: it fires on the hour, UTC.
    next_hour = next_hour_after(before)
    if next_hour_after(after) != next_hour and shown["next_at"] != iso(next_hour):
        next_hour = next_hour_after(after)  # an hour began during the call
    assert shown == {
        "name": "hourly",
        "pipeline": "greet",
        "kind": "interval",
        "timing": "every 1h",
        "enabled": True,
        "next_at": iso(next_hour),
        "last_tick": None,
        "active_runs": 0,
        "max_active_runs": 2,
        "priority": 3,
        "params": {"who": "x"},
        "catchup": False,
        "upcoming": [iso(next_hour + 3600 * k) for k in range(5)],
        "runs": [],
        "run_retries": None,
        "execution_timeout": None,
        "object_url": None,
        "poll_seconds": None,
    }

    paused = ok(place, "schedules", "pause", "hourly")
    assert "schedule 'hourly' paused" in paused.stderr
    shown = show(place, "hourly")
    assert (shown["enabled"], shown["next_at"], shown["upcoming"]) == (False, None, [])
    assert ok(place, "schedules", "list").stdout.splitlines()[1].split()[2] == "paused"

    resumed = ok(place, "schedules", "resume", "hourly")
    assert "schedule 'hourly' resumed; next " in resumed.stderr
    before = time.time()
    shown = show(place, "hourly")
    assert shown["enabled"] is True
    assert shown["next_at"] in {iso(next_hour_after(t)) for t in (before, time.time())}

    triggered = ok(place, "schedules", "trigger", "hourly", "--param", "who=y")
    run_id = triggered.stdout.strip()
    assert triggered.stdout == f"{run_id}\n"  # the id alone
    assert f"queued run {run_id} of pipeline 'greet' for schedule 'hourly'" in triggered.stderr
    assert json.loads(ok(place, "runs", "show", run_id, "--format", "json").stdout)["state"] == (
        "queued"
    )
    with place.store() as store:
        run = store.get_run(run_id)
    assert run.params == {"who": "y"}
    assert run.triggered_by == "schedule:hourly (manual)"
    assert run.priority == 3
    assert (run.pipeline, run.state) == ("greet", "queued")
    assert ticks(place, "hourly") == []  # a manual run is not a tick: the timing is unchanged
    assert show(place, "hourly")["last_tick"] is None

    removed = ok(place, "schedules", "remove", "hourly")
    assert "schedule 'hourly' removed" in removed.stderr
    gone = sf(place, "schedules", "show", "hourly")
    assert gone.returncode == 2, gone
    assert "no schedule 'hourly'" in gone.stderr
    assert json.loads(ok(place, "schedules", "list", "--format", "json").stdout) == []
    with place.store() as store:
        assert store.get_run(run_id).run_id == run_id  # its runs stay


MISTAKES = [
    (
        ("add", "keep", "greet", "--cron", "61 * * * *"),
        ['cron expression "61 * * * *"', 'minute field "61" is not valid', "0-59"],
    ),
    (
        ("add", "keep", "greet", "--cron", "0 2 * * *", "--timezone", "Mars/Base"),
        ["unknown time zone 'Mars/Base'", "IANA time zone name"],
    ),
    (("add", "keep", "greet", "--every", "0"), ["seconds > 0, got 0.0"]),
    (("add", "keep", "greet", "--every", "abc"), ["--every 'abc' is not a duration", "90s"]),
    (
        ("add", "keep", "greet", "--at", "2020-01-01T00:00:00Z"),
        ["at (2020-01-01 00:00:00 UTC) is in the past", "set a later at"],
    ),
    (("add", "keep", "greet"), ["give exactly one of --cron EXPR, --every DURATION or --at TIME"]),
    (
        ("add", "keep", "greet", "--cron", "0 2 * * *", "--every", "1h"),
        ["give exactly one of --cron EXPR, --every DURATION or --at TIME (got --cron, --every)"],
    ),
    (
        ("add", "keep", "nosuch", "--every", "1h"),
        ["no saved pipeline 'nosuch'", "stageflow submit FILE"],
    ),
    (
        ("add", "keep", "greet", "--every", "1h", "--param", "nope=1"),
        ["--param nope", "declares no parameter 'nope' (declared: who)"],
    ),
    (("add", "keep", "greet", "--every", "1h", "--max-active", "0"), ["--max-active 0 must be"]),
    (("add", "a b", "greet", "--every", "1h"), ["schedule name 'a b' must be 1-100 letters"]),
    (("pause", "ghost"), ["no schedule 'ghost'; the schedules are: keep"]),
    (("resume", "ghost"), ["no schedule 'ghost'; the schedules are: keep"]),
    (("remove", "ghost"), ["no schedule 'ghost'; the schedules are: keep"]),
    (("show", "ghost"), ["no schedule 'ghost'; the schedules are: keep"]),
    (("trigger", "ghost"), ["no schedule 'ghost'; the schedules are: keep"]),
]


def test_every_mistake_exits_2_naming_it_and_writes_nothing(place: Place) -> None:
    save_pipeline(place)
    # A schedule the mistakes name (`add keep ...` would change it): a once far ahead,
    # so that its listing does not move with the clock.
    ok(place, "schedules", "add", "keep", "greet", "--at", "2099-01-01T00:00:00Z")
    listing = ok(place, "schedules", "list", "--format", "json").stdout
    with place.store() as store:
        runs_before = len(store.list_runs(limit=100_000))
    for args, expected in MISTAKES:
        result = sf(place, "schedules", *args)
        assert result.returncode == 2, (args, result)
        assert result.stderr.startswith("error: "), (args, result.stderr)
        for text in expected:
            assert text in result.stderr, (args, text, result.stderr)
        assert ok(place, "schedules", "list", "--format", "json").stdout == listing, args
    with place.store() as store:
        assert len(store.list_runs(limit=100_000)) == runs_before  # trigger queued nothing
        assert ticks(place, "keep") == []


def test_a_zero_interval_names_the_every_option(place: Place) -> None:
    save_pipeline(place)
    result = sf(place, "schedules", "add", "s", "greet", "--every", "0")
    assert result.returncode == 2, result
    assert "--every" in result.stderr, result.stderr


def test_an_overdue_schedule_without_catch_up_shows_the_tick_it_fires_next(place: Place) -> None:
    save_pipeline(place)
    ok(place, "schedules", "add", "late", "greet", "--every", "1s")
    time.sleep(2.5)  # no scheduler runs: ticks come due and none fires
    before = time.time()
    shown = show(place, "late")
    # Without catch-up the next pass fires the latest due tick, floor(now), or a later one.
    assert shown["next_at"] is not None
    assert datetime.fromisoformat(str(shown["next_at"])).timestamp() >= math.floor(before)


# -- the scheduler ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_scheduler_queues_a_run_per_tick_and_a_worker_runs_them(place: Place) -> None:
    save_pipeline(place)
    ok(place, "schedules", "add", "tick", "greet", "--every", "1s")
    proc = place.start("scheduler", "scheduler", "--poll-seconds", "0.2")
    wait_until(lambda: len(fired_runs(place, "tick")) >= 4, "4 runs are queued", timeout=10)
    assert terminate(proc) == 0
    err = place.stderr("scheduler")
    assert "scheduler ready" in err
    assert "SIGTERM: the scheduler stops" in err

    times = assert_exactly_once(place, "tick")
    # Polled every 0.2 s, each 1 s tick is seen: one run per second, none skipped.
    assert times == [times[0] + k for k in range(len(times))], times
    runs = fired_runs(place, "tick")
    assert all(r.state == "queued" and r.params == {"who": "nobody"} for r in runs), runs

    worker = place.start("worker", "worker", "--idle-exit", "3", "--no-schedules")
    assert worker.wait(timeout=WAIT) == 0, place.output("worker")
    after = fired_runs(place, "tick")
    assert [r.run_id for r in after] == [r.run_id for r in runs]  # the worker fired none
    assert {r.state for r in after} == {"success"}


OVERDUE = 300  # seconds: the ticks due when the schedulers start


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "schedulers", "seconds"),
    [pytest.param("postgres", 3, 10.0, marks=pytest.mark.postgres), ("sqlite", 2, 5.0)],
)
def test_many_schedulers_fire_each_tick_exactly_once(
    tmp_path: Path, backend: str, schedulers: int, seconds: float
) -> None:
    with place_on(backend, tmp_path, Place) as place:
        save_pipeline(place)
        # With --catchup every tick since its start fires, whenever a pass comes: a gap
        # between the first and last tick is a lost tick, not a slow poll. It started
        # five minutes ago: the schedulers race on 300 overdue ticks at once (100 a
        # pass each), then on each new second's.
        start = datetime.fromtimestamp(math.floor(time.time()) - OVERDUE, UTC).isoformat()
        ok(
            place,
            *("schedules", "add", "race", "greet", "--every", "1s", "--catchup"),
            *("--start", start),
        )
        procs = [
            place.start(f"scheduler{i}", "scheduler", "--poll-seconds", "0.05")
            for i in range(schedulers)
        ]
        wait_until(
            lambda: all(
                "scheduler ready" in place.stderr(f"scheduler{i}") for i in range(schedulers)
            ),
            "every scheduler is ready",
        )
        time.sleep(seconds)
        assert [terminate(p) for p in procs] == [0] * schedulers
        for i in range(schedulers):
            assert "SIGTERM: the scheduler stops" in place.stderr(f"scheduler{i}")

        times = assert_exactly_once(place, "race")
        assert len(times) >= OVERDUE + seconds - 1, times
        assert times == [times[0] + k for k in range(len(times))], "a tick is missing"


@pytest.mark.slow
def test_catch_up_fires_every_missed_tick_oldest_first_else_the_latest(place: Place) -> None:
    save_pipeline(place)
    start = math.floor(time.time()) - 600  # whole seconds: the ticks are exact
    start_text = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ok(
        place,
        "schedules",
        "add",
        "caught",
        "greet",
        "--every",
        "1m",
        "--start",
        start_text,
        "--catchup",
    )
    ok(place, "schedules", "add", "latest", "greet", "--every", "1m", "--start", start_text)
    proc = place.start("scheduler", "scheduler", "--poll-seconds", "0.2")
    # The ticks are start + 60 k (start inclusive): start .. start + 600 are due at the
    # first pass (11), and the next one, start + 660, is a minute after we computed start.
    expected = [float(start + 60 * k) for k in range(11)]
    wait_until(
        lambda: len(ticks(place, "caught")) == 11 and len(ticks(place, "latest")) == 1,
        "the catch-up fired",
        timeout=15,
    )
    time.sleep(1.0)  # a few more passes: nothing more is due
    assert terminate(proc) == 0
    assert time.time() < start + 660, "too slow: the next tick came due"

    assert assert_exactly_once(place, "caught") == expected
    by_run = {run_id: t for t, run_id in ticks(place, "caught")}
    assert [by_run[r.run_id] for r in fired_runs(place, "caught")] == expected  # oldest first
    assert assert_exactly_once(place, "latest") == [expected[-1]]
    assert show(place, "caught")["last_tick"] == iso(expected[-1])


@pytest.mark.slow
def test_max_active_runs_holds_ticks_until_a_run_ends(place: Place) -> None:
    save_pipeline(place)
    ok(place, "schedules", "add", "busy", "greet", "--every", "1s", "--max-active", "2")
    scheduler = place.start("scheduler", "scheduler", "--poll-seconds", "0.2")
    wait_until(lambda: len(fired_runs(place, "busy")) >= 2, "2 runs are queued", timeout=10)
    seen_at = time.time()
    time.sleep(3.0)  # 3 more ticks come due and wait: no worker ends a run
    held = ticks(place, "busy")
    assert len(held) == 2, held
    shown = show(place, "busy")
    assert (shown["active_runs"], shown["max_active_runs"]) == (2, 2)
    assert shown["last_tick"] == iso(held[-1][0])  # the waiting ticks did not move it

    worker = place.start("worker", "worker", "--no-schedules", "--idle-exit", "2")
    wait_until(
        lambda: (
            len(fired_runs(place, "busy")) >= 4 and fired_runs(place, "busy")[1].state == "success"
        ),
        "the scheduler fires again once runs end",
        timeout=20,
    )
    assert terminate(scheduler) == 0
    assert worker.wait(timeout=WAIT) == 0, place.output("worker")

    times = assert_exactly_once(place, "busy")
    # No catch-up: the third tick is the latest due when a run ended, after the pause.
    assert times[2] >= math.floor(seen_at) + 3, times
    runs = fired_runs(place, "busy")
    assert {r.state for r in runs} == {"success"}
    # At each run's creation, at most one earlier run was unfinished (the store counts
    # them before creating it; a run's ended_at is written before it counts as ended).
    for run in runs:
        unfinished = [
            r
            for r in runs
            if r.created_at < run.created_at and (r.ended_at is None or r.ended_at > run.created_at)
        ]
        assert len(unfinished) <= 1, (run, unfinished)


@pytest.mark.slow
def test_a_worker_fires_schedules_unless_told_not_to(place: Place) -> None:
    save_pipeline(place)
    ok(place, "schedules", "add", "work", "greet", "--every", "1s")

    def successes() -> int:
        return sum(r.state == "success" for r in fired_runs(place, "work"))

    worker = place.start("worker", "worker")
    wait_until(lambda: successes() >= 3, "3 scheduled runs succeed", timeout=12)
    assert terminate(worker) == 0, place.output("worker")
    assert_exactly_once(place, "work")
    made = [r.run_id for r in fired_runs(place, "work")]

    quiet = place.start("quiet", "worker", "--no-schedules", "--idle-exit", "3")
    assert quiet.wait(timeout=WAIT) == 0, place.output("quiet")
    runs = fired_runs(place, "work")
    assert [r.run_id for r in runs] == made  # it fired none (ticks came due meanwhile)
    assert {r.state for r in runs} == {"success"}


# -- schedules in a spec --------------------------------------------------------------------


def test_apply_saves_the_pipeline_and_registers_the_spec_s_schedules(place: Place) -> None:
    spec = {
        **SPEC,
        "schedule": "0 2 * * *",
        "schedules": [{"name": "greet-hourly", "every": "1h", "params": {"who": "h"}}],
    }
    path = place.tmp / "scheduled.json"
    path.write_text(json.dumps(spec))
    listed = json.loads(ok(place, "schedules", "apply", str(path), "--format", "json").stdout)
    assert [(s["name"], s["pipeline"], s["timing"]) for s in listed] == [
        ("greet", "greet", "cron 0 2 * * * (UTC)"),
        ("greet-hourly", "greet", "every 1h"),
    ]
    assert show(place, "greet-hourly")["params"] == {"who": "h"}
    with place.store() as store:
        assert store.latest_pipeline("greet").spec_json  # the version is saved
        assert store.list_runs(limit=10) == []  # and nothing runs
    # Applied again with one entry changed: the schedule changes, nothing doubles.
    spec["schedules"] = [{"name": "greet-hourly", "every": "2h"}]
    path.write_text(json.dumps(spec))
    ok(place, "schedules", "apply", str(path))
    assert show(place, "greet-hourly")["timing"] == "every 2h"
    assert len(json.loads(ok(place, "schedules", "list", "--format", "json").stdout)) == 2


def test_apply_refuses_a_bad_spec_and_writes_nothing(place: Place) -> None:
    path = place.tmp / "bad.json"
    cases = [
        ({"schedules": [{"cron": "61 * * * *"}]}, "schedules[0].cron"),
        ({"schedules": [{"at": "2001-01-01T00:00:00Z"}]}, "is in the past"),
        ({}, "has no `schedule:` or `schedules:`"),
    ]
    for extra, words in cases:
        path.write_text(json.dumps({**SPEC, **extra}))
        result = sf(place, "schedules", "apply", str(path))
        assert result.returncode == 2, result
        assert words in result.stderr, result.stderr
    with place.store() as store:
        assert store.schedules() == []
        assert store.pipeline_names() == []  # not even the pipeline was saved


def test_apply_will_not_repoint_another_pipeline_s_schedule(place: Place) -> None:
    path = place.tmp / "one.json"
    path.write_text(json.dumps({**SPEC, "schedules": [{"name": "daily", "cron": "0 3 * * *"}]}))
    ok(place, "schedules", "apply", str(path))
    other = {**SPEC, "name": "other", "schedules": [{"name": "daily", "every": "1h"}]}
    path.write_text(json.dumps(other))
    result = sf(place, "schedules", "apply", str(path))
    assert result.returncode == 2, result
    assert "schedule 'daily' fires pipeline 'greet'" in result.stderr
    assert show(place, "daily")["pipeline"] == "greet"


# -- a run's schedule values ----------------------------------------------------------------


@pytest.mark.slow
def test_a_scheduled_run_knows_its_data_interval(place: Place) -> None:
    """${schedule.start}/${schedule.end}/${schedule.name} in a task's parameters and
    STAGEFLOW_SCHEDULE_* in a bash task's environment: a backfill of a daily schedule
    over three days gives each run its day; a run nobody scheduled gets its creation
    time as both ends."""
    spec = {
        "name": "daily-report",
        "schedules": [{"name": "daily", "cron": "0 0 * * *"}],
        "tasks": [
            {
                "id": "report",
                "operator": "bash",
                "parameters": {
                    "command": "echo ${schedule.name} ${schedule.start} ${schedule.end} "
                    "$STAGEFLOW_SCHEDULE_START $STAGEFLOW_SCHEDULE_END"
                },
            }
        ],
    }
    path = place.tmp / "daily.json"
    path.write_text(json.dumps(spec))
    ok(place, "schedules", "apply", str(path))
    name = ok(
        place,
        "backfill",
        "daily-report",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-03T12:00:00Z",
        "--max-active",
        "3",
    ).stdout.strip()
    proc = place.start("scheduler", "scheduler", "--poll-seconds", "0.2")
    try:
        wait_until(lambda: len(ticks(place, name)) == 3, "the backfill's 3 ticks fired", 20)
    finally:
        assert terminate(proc) == 0
    worker = place.start("worker", "worker", "--idle-exit", "2", "--no-schedules")
    assert worker.wait(timeout=WAIT) == 0, place.output("worker")
    logs = sorted(
        ok(place, "logs", run_id, "report").stdout.strip().splitlines()[-1]
        for _, run_id in ticks(place, name)
    )
    feb28, mar1, mar2, mar3 = (
        f"2026-{d}T00:00:00.000+00:00" for d in ("02-28", "03-01", "03-02", "03-03")
    )
    # Each tick covers the day before it: [previous fire time, its logical time).
    assert logs == [
        f"{name} {feb28} {mar1} {feb28} {mar1}",
        f"{name} {mar1} {mar2} {mar1} {mar2}",
        f"{name} {mar2} {mar3} {mar2} {mar3}",
    ]
    manual = json.loads(ok(place, "run", str(path), "--format", "json").stdout)
    words = ok(place, "logs", manual["run_id"], "report").stdout.strip().splitlines()[-1].split()
    assert len(words) == 4 and len(set(words)) == 1, words  # no name; created, both ends
