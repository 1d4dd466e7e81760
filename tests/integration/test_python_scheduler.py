"""``stageflow.PipelineScheduler`` (seed 003's scheduler API) on a real store: schedules
added from Python are the store's (the CLI lists them), ``start()`` fires and runs them on
a worker thread, a manual trigger runs with its overrides, the status, queue and recent
runs read back the real figures, ``stop()`` leaves no thread, and every mistake raises
the operations' exceptions with the CLI's words.

The pipeline is a bash task appending its ``who`` parameter to a ledger file, so a run's
parameters are read from what it did. Real clock, with generous waits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers_places import Place, place_on
from helpers_schedules import WAIT, sf
from helpers_tasks import clean_environ, wait_until

from stageflow import (
    Orchestrator,
    PipelineScheduler,
    RetryStrategy,
    ScheduleConfig,
    ScheduleType,
)
from stageflow.errors import InvalidSpec, UsageError
from stageflow.operations.schedules import ScheduleNotFound

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "scheduler_quickstart.py"


def spec(ledger: Path) -> dict[str, object]:
    return {
        "name": "greet",
        "params": {"who": "nobody"},
        "tasks": [
            {
                "id": "say",
                "operator": "bash",
                "parameters": {"command": f"echo $STAGEFLOW_PARAM_WHO >> {ledger}"},
            }
        ],
    }


@pytest.fixture(params=["sqlite"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    with place_on(request.param, tmp_path, Place) as found:
        yield found


def scheduler_on(place: Place, **kwargs: object) -> PipelineScheduler:
    """A scheduler on the place's store, with the pipeline ``greet`` saved."""
    scheduler = PipelineScheduler(home=place.home, store_url=place.url, **kwargs)  # type: ignore[arg-type]  # test kwargs
    path = place.tmp / "greet.json"
    path.write_text(json.dumps(spec(place.ledger)))
    scheduler.save_pipeline(str(path))
    return scheduler


def ledger(place: Place) -> list[str]:
    return place.ledger.read_text().split() if place.ledger.exists() else []


#: The threads a scheduler starts: its own, the schedule loop's, one per run. The
#: process's host keeps its shared pools (executor threads, observers, lineage) for the
#: next runs, as it does for any program that runs pipelines (``runtime.host``).
OWN_THREADS = ("stageflow-scheduler", "stageflow-schedules", "stageflow-run-")


def our_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and t.name.startswith(OWN_THREADS)
    ]


def ended(scheduler: PipelineScheduler, run_id: str) -> bool:
    runs = scheduler.get_recent_executions(limit=50)
    return any(r["run_id"] == run_id and r["state"] == "success" for r in runs)


@pytest.mark.slow
def test_start_fires_an_interval_schedule_and_runs_it_and_stop_leaves_no_thread(
    place: Place,
) -> None:
    before = set(threading.enumerate())
    scheduler = scheduler_on(place, max_concurrent_executions=2)
    added = scheduler.add_schedule(
        ScheduleConfig(
            name="every-second",
            pipeline="greet",
            schedule_type=ScheduleType.INTERVAL,
            schedule_expression=1,
            parameters={"who": "tick"},
            priority=3,
        )
    )
    assert (added["kind"], added["timing"], added["enabled"]) == ("interval", "every 1s", True)
    # The store's schedule: the CLI lists what the program added.
    listed = sf(place, "schedules", "list").stdout
    assert "every-second" in listed and "every 1s" in listed, listed

    scheduler.start(workers=2)
    assert scheduler.running
    assert [t.name for t in our_threads(before)][:1] == ["stageflow-scheduler"]
    try:

        def two_succeeded() -> bool:
            runs = scheduler.get_recent_executions(limit=10)
            return sum(r["state"] == "success" for r in runs) >= 2

        wait_until(two_succeeded, "two ticks ran", timeout=WAIT)
        recent = scheduler.get_recent_executions(limit=10)
        assert {(r["schedule"], r["pipeline"], r["manual"]) for r in recent} == {
            ("every-second", "greet", False)
        }
        assert all(r["priority"] == 3 for r in recent)
        assert [r["created_at"] for r in recent] == sorted(
            (r["created_at"] for r in recent), reverse=True
        )
        status = scheduler.get_schedule_status("every-second")
        assert status["enabled"] is True and status["last_tick"] is not None
        assert len(status["upcoming"]) == 5
        fired = {run["run_id"] for run in status["runs"]}
        assert {r["run_id"] for r in recent if r["state"] == "success"} <= fired
        queue = scheduler.get_execution_queue_status()
        assert queue["started"] is True and queue["workers"] == 2
        assert queue["started_here"] >= 2
    finally:
        scheduler.stop()
    assert not scheduler.running
    assert ledger(place).count("tick") >= 2
    wait_until(lambda: not our_threads(before), "the scheduler's threads ended", timeout=15)
    scheduler.stop()  # idempotent
    after = len(ledger(place))
    assert scheduler.get_execution_queue_status()["started"] is False
    # Stopped: no more ticks run here.
    threading.Event().wait(2.5)
    assert len(ledger(place)) == after


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_manual_trigger_queues_with_its_overrides_and_start_runs_it(
    backend: str, tmp_path: Path
) -> None:
    with place_on(backend, tmp_path, Place) as place:
        before = set(threading.enumerate())
        with scheduler_on(place) as scheduler:
            scheduler.add_schedule(
                ScheduleConfig(
                    name="nightly",
                    pipeline="greet",
                    schedule_type="cron",
                    schedule_expression="0 2 * * *",
                    timezone="Europe/Paris",
                    parameters={"who": "nightly"},
                    priority=5,
                    max_concurrent_runs=1,
                )
            )
            run_id = scheduler.trigger_manual_execution("nightly", parameters={"who": "override"})
            other = scheduler.trigger_manual_execution("nightly")
            queue = scheduler.get_execution_queue_status()
            assert (queue["queued"], queue["running"], queue["by_priority"]) == (2, 0, {5: 2})
            assert queue["started"] is False and queue["oldest_queued_at"] is not None
            recent = scheduler.get_recent_executions(limit=5, schedule="nightly")
            assert [(r["run_id"], r["state"], r["manual"]) for r in recent] == [
                (other, "queued", True),
                (run_id, "queued", True),
            ]
            assert ledger(place) == []  # nothing runs before start()

            scheduler.start(workers=1)
            wait_until(
                lambda: ended(scheduler, run_id) and ended(scheduler, other),
                "both manual runs ran",
                timeout=WAIT,
            )
            assert sorted(ledger(place)) == ["nightly", "override"]
            queue = scheduler.get_execution_queue_status()
            assert (queue["queued"], queue["running"]) == (0, 0)
            status = scheduler.get_schedule_status("nightly")
            assert status["timing"] == "cron 0 2 * * * (Europe/Paris)"
            assert status["runs"] == []  # manual runs are not ticks
        assert not scheduler.running
        wait_until(lambda: not our_threads(before), "the scheduler's threads ended", timeout=15)


def test_start_with_no_workers_only_fires_the_runs_wait_in_the_queue(place: Place) -> None:
    before = set(threading.enumerate())
    scheduler = scheduler_on(place, poll_seconds=0.1)
    scheduler.add_schedule(
        ScheduleConfig("fast", "greet", ScheduleType.INTERVAL, "1s", parameters={"who": "q"})
    )
    with scheduler:
        scheduler.start(workers=0)
        with pytest.raises(UsageError, match=r"started already; call stop\(\) before start\(\)"):
            scheduler.start()
        wait_until(
            lambda: scheduler.get_execution_queue_status()["queued"] >= 1,
            "a tick queued a run",
            timeout=WAIT,
        )
    assert not scheduler.running
    assert ledger(place) == []
    queued = scheduler.get_recent_executions(limit=5)
    assert queued and {r["state"] for r in queued} == {"queued"}
    wait_until(lambda: not our_threads(before), "the loop's thread ended", timeout=15)


def test_pause_resume_and_remove_change_the_stored_schedule(place: Place) -> None:
    scheduler = scheduler_on(place)
    scheduler.add_schedule(ScheduleConfig("daily", "greet", "cron", "0 2 * * *"))
    paused = scheduler.pause_schedule("daily")
    assert (paused["enabled"], paused["next_at"]) == (False, None)
    shown = json.loads(sf(place, "schedules", "show", "daily", "--format", "json").stdout)
    assert shown["enabled"] is False
    resumed = scheduler.resume_schedule("daily")
    assert resumed["enabled"] is True and resumed["next_at"] is not None
    assert [s["name"] for s in scheduler.list_schedules()] == ["daily"]
    scheduler.remove_schedule("daily")
    assert scheduler.list_schedules() == []
    with pytest.raises(ScheduleNotFound, match="no schedule 'daily'; there are none"):
        scheduler.get_schedule_status("daily")


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        pytest.param(
            ScheduleConfig("s", "greet", "hourly", "x"),
            UsageError,
            r"schedule_type 'hourly' is not a schedule type; use one of cron, interval, once",
            id="unknown-type",
        ),
        pytest.param(
            ScheduleConfig("s", "greet", ScheduleType.CRON),
            UsageError,
            r"schedule_expression is missing; a cron schedule needs a cron expression",
            id="no-expression",
        ),
        pytest.param(
            ScheduleConfig("s", "nope", ScheduleType.CRON, "0 2 * * *"),
            ScheduleNotFound,
            r"no saved pipeline 'nope'; save it first",
            id="unsaved-pipeline",
        ),
        pytest.param(
            ScheduleConfig("s", "greet", ScheduleType.CRON, "0 2 * * *", parameters={"x": 1}),
            InvalidSpec,
            r"x",
            id="undeclared-parameter",
        ),
        pytest.param(
            ScheduleConfig("s", "greet", ScheduleType.INTERVAL, "soon"),
            UsageError,
            r"--every",
            id="bad-interval",
        ),
        pytest.param(
            ScheduleConfig(
                "s",
                "greet",
                ScheduleType.CRON,
                "0 2 * * *",
                retry_strategy=RetryStrategy.LINEAR_BACKOFF,
                max_retries=1000,
                retry_delay=60,
            ),
            UsageError,
            r"1000",
            id="too-many-retries",
        ),
        pytest.param(
            ScheduleConfig("s", "greet", ScheduleType.CRON, "0 2 * * *", poll_seconds=5),
            UsageError,
            r"poll_seconds is for an OBJECT schedule",
            id="poll-on-cron",
        ),
        pytest.param(
            ScheduleConfig("s", "greet", ScheduleType.CRON, "0 2 * * *", retry_strategy="often"),
            UsageError,
            r"retry_strategy 'often' is not a retry strategy; use one of fixed",
            id="unknown-strategy",
        ),
    ],
)
def test_a_bad_schedule_raises_a_clear_error_and_adds_nothing(
    place: Place, config: ScheduleConfig, error: type[Exception], message: str
) -> None:
    scheduler = scheduler_on(place)
    with pytest.raises(error, match=message):
        scheduler.add_schedule(config)
    assert scheduler.list_schedules() == []


def test_a_bad_cron_says_what_the_cli_says(place: Place) -> None:
    scheduler = scheduler_on(place)
    with pytest.raises(UsageError) as raised:
        scheduler.add_schedule(ScheduleConfig("s", "greet", ScheduleType.CRON, "61 * * * *"))
    cli = sf(place, "schedules", "add", "s", "greet", "--cron", "61 * * * *")
    assert cli.returncode == 2
    assert str(raised.value) in cli.stderr, (str(raised.value), cli.stderr)


@pytest.mark.parametrize("method", ["pause_schedule", "resume_schedule", "remove_schedule"])
def test_an_unknown_schedule_name_is_not_found(place: Place, method: str) -> None:
    scheduler = scheduler_on(place)
    scheduler.add_schedule(ScheduleConfig("daily", "greet", "cron", "0 2 * * *"))
    with pytest.raises(ScheduleNotFound, match="no schedule 'nightly'; the schedules are: daily"):
        getattr(scheduler, method)("nightly")
    with pytest.raises(ScheduleNotFound, match="no schedule 'nightly'"):
        scheduler.trigger_manual_execution("nightly", {"who": "x"})


def test_bad_constructor_and_start_arguments_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="max_concurrent_executions is 0; it must be at least 1"):
        PipelineScheduler(home=tmp_path, max_concurrent_executions=0)
    with pytest.raises(UsageError, match="unknown executor 'ray'; use one of: thread, process"):
        PipelineScheduler(home=tmp_path, executor="ray")
    with Orchestrator(home=tmp_path / "orch") as orchestrator:
        with pytest.raises(UsageError, match="give orchestrator= or settings=/home=/store_url="):
            PipelineScheduler(orchestrator=orchestrator, home=tmp_path)
        # Seed 003's form: the scheduler takes the orchestrator's store.
        assert PipelineScheduler(orchestrator=orchestrator).settings == orchestrator.settings
    scheduler = PipelineScheduler(home=tmp_path)
    with pytest.raises(UsageError, match=r"workers is -1; give 0"):
        scheduler.start(workers=-1)
    assert not scheduler.running


def test_retries_and_timeout_are_the_schedules_run_policy(place: Place) -> None:
    scheduler = scheduler_on(place)
    plain = scheduler.add_schedule(ScheduleConfig("plain", "greet", "cron", "0 2 * * *"))
    assert (plain["run_retries"], plain["execution_timeout"]) == (None, None)
    scheduler.add_schedule(
        ScheduleConfig(
            "daily",
            "greet",
            ScheduleType.CRON,
            "0 2 * * *",
            retry_strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
            max_retries=3,
            retry_delay=600,
            execution_timeout=3600,
        )
    )
    status = scheduler.get_schedule_status("daily")
    policy = {"strategy": "exponential", "max_retries": 3, "retry_delay": 600.0}
    assert (status["run_retries"], status["execution_timeout"]) == (policy, 3600.0)
    shown = json.loads(sf(place, "schedules", "show", "daily", "--format", "json").stdout)
    assert (shown["run_retries"], shown["execution_timeout"]) == (policy, 3600.0)


@pytest.mark.slow
def test_a_failed_tick_is_retried_by_its_schedules_policy(place: Place) -> None:
    failing = dict(spec(place.ledger), name="flaky")
    failing["tasks"] = [
        {
            "id": "say",
            "operator": "bash",
            "parameters": {"command": f"echo try >> {place.ledger}; exit 1"},
        }
    ]
    path = place.tmp / "flaky.json"
    path.write_text(json.dumps(failing))
    soon = datetime.now(UTC) + timedelta(seconds=2)
    with scheduler_on(place) as scheduler:
        scheduler.save_pipeline(str(path))
        scheduler.add_schedule(
            ScheduleConfig(
                "once",
                "flaky",
                ScheduleType.ONCE,
                soon.isoformat(),
                retry_strategy=RetryStrategy.FIXED_DELAY,
                max_retries=2,
                retry_delay=0,
            )
        )
        scheduler.start(workers=1)
        wait_until(
            lambda: [r["state"] for r in scheduler.get_recent_executions()] == ["failed"] * 3,
            "the tick and its two retries failed",
            timeout=WAIT,
        )
        recent = scheduler.get_recent_executions()
    first = recent[-1]
    assert (first["retry_of"], first["manual"]) == (None, False)
    assert [r["retry_of"] for r in recent[:2]] == [first["run_id"]] * 2
    assert {r["schedule"] for r in recent} == {"once"}
    assert ledger(place) == ["try"] * 3


@pytest.mark.slow
def test_an_object_schedule_fires_a_run_for_a_new_file(place: Place) -> None:
    inbox = place.tmp / "inbox"
    inbox.mkdir()
    (inbox / "old.csv").write_text("1\n")  # there before the schedule: never fires
    with scheduler_on(place) as scheduler:
        added = scheduler.add_schedule(
            ScheduleConfig(
                "inbox",
                "greet",
                ScheduleType.OBJECT,
                f"file://{inbox}/*.csv",
                poll_seconds=1,
                parameters={"who": "object"},
            )
        )
        assert (added["kind"], added["poll_seconds"]) == ("object", 1.0)
        scheduler.start(workers=1)
        (inbox / "new.csv").write_text("2\n")
        wait_until(lambda: ledger(place) == ["object"], "the new file ran", timeout=WAIT)
        threading.Event().wait(1.5)  # another listing: nothing more fires
    assert ledger(place) == ["object"]
    assert [r["schedule"] for r in scheduler.get_recent_executions()] == ["inbox"]


@pytest.mark.slow
def test_the_readme_scheduler_example_runs(tmp_path: Path) -> None:
    """``python examples/scheduler_quickstart.py HOME``, as the README gives it."""
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE.relative_to(ROOT)), str(home)],
        cwd=ROOT,
        env=clean_environ(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith(": success"), lines
    assert lines[1].startswith("daily_pipeline: cron 0 2 * * * (Europe/Paris), next at "), lines
    queue = json.loads(lines[2])
    assert (queue["queued"], queue["started_here"], queue["finished_here"]) == (0, 1, 1)
    with PipelineScheduler(home=home) as scheduler:
        status = scheduler.get_schedule_status("daily_pipeline")
    assert status["params"] == {"who": "nightly"} and status["priority"] == 5
