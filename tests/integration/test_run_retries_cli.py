"""Run-level retries and schedule execution timeouts through the real CLI, on SQLite:
a pipeline with ``run_retries`` whose task fails twice, then succeeds, run by a real
``stageflow worker``, ends as three runs spaced by at least the delay, the last a
success; a schedule's ``--execution-timeout`` cancels its run through the worker;
bad retry and timeout options exit 2 naming the option."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_places import Place, place_on
from helpers_schedules import WAIT, ok, sf
from helpers_tasks import wait_until

from stageflow.runtime.store.base import RunRecord


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Place]:
    with place_on("sqlite", tmp_path, Place) as found:
        yield found


def runs_of(place: Place, pipeline: str) -> list[RunRecord]:
    with place.store() as store:
        runs = [r for r in store.list_runs(limit=1000) if r.pipeline == pipeline]
    return sorted(runs, key=lambda r: r.created_at)


def flaky(counter: Path) -> dict[str, object]:
    """Fails on its first two runs, succeeds on the third (counting in ``counter``)."""
    command = (
        f'n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ "$n" -ge 3 ]'
    )
    return {
        "name": "flaky",
        "run_retries": {"max_retries": 3, "strategy": "fixed", "retry_delay": 1},
        "tasks": [{"id": "load", "operator": "bash", "parameters": {"command": command}}],
    }


@pytest.mark.slow
def test_a_failed_run_is_queued_again_until_it_succeeds(place: Place) -> None:
    spec = place.tmp / "flaky.json"
    spec.write_text(json.dumps(flaky(place.tmp / "count")))
    ok(place, "submit", str(spec))
    worker = place.start("worker", "worker")
    wait_until(
        lambda: [r.state for r in runs_of(place, "flaky")] == ["failed", "failed", "success"],
        "the third run succeeds",
        timeout=30,
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=WAIT) == 0, place.output("worker")
    first, second, third = runs_of(place, "flaky")
    assert (place.tmp / "count").read_text().strip() == "3"
    assert second.triggered_by == third.triggered_by == f"retry:{first.run_id}"
    # Each retry waited out its delay after the run before it ended.
    assert second.started_at is not None and first.ended_at is not None
    assert second.started_at - first.ended_at >= 1.0
    assert third.started_at is not None and second.ended_at is not None
    assert third.started_at - second.ended_at >= 1.0
    with place.store() as store:
        assert store.retried_by(first.run_id) is not None
        assert [store.retry_link(r.run_id) for r in (first,)] == [None]
        link = store.retry_link(third.run_id)
        assert link is not None and (link.retry_of, link.attempt) == (second.run_id, 3)
    shown = ok(place, "runs", "show", first.run_id).stdout
    assert f"retried by {second.run_id}" in shown, shown
    shown = ok(place, "runs", "show", third.run_id).stdout
    assert f"attempt 3 (retry of {second.run_id})" in shown, shown
    listed = {line.split()[0]: line for line in ok(place, "runs", "list").stdout.splitlines()}
    assert listed[third.run_id].endswith("attempt 3"), listed
    assert listed[second.run_id].endswith("attempt 2"), listed
    assert "attempt" not in listed[first.run_id], listed


@pytest.mark.slow
def test_a_schedule_execution_timeout_cancels_its_run(place: Place) -> None:
    spec = place.tmp / "sleepy.json"
    spec.write_text(
        json.dumps(
            {
                "name": "sleepy",
                "tasks": [{"id": "nap", "operator": "bash", "parameters": {"command": "sleep 60"}}],
            }
        )
    )
    ok(place, "submit", str(spec))  # saves the pipeline; its run is not the schedule's
    ok(place, "cancel", runs_of(place, "sleepy")[0].run_id)
    ok(
        place,
        *("schedules", "add", "nap", "sleepy", "--every", "3s", "--max-active", "1"),
        *("--execution-timeout", "2s"),
    )
    shown = ok(place, "schedules", "show", "nap").stdout
    assert "execution timeout: 2s" in shown, shown
    worker = place.start("worker", "worker")

    def fired() -> list[RunRecord]:
        return [r for r in runs_of(place, "sleepy") if r.triggered_by == "schedule:nap"]

    wait_until(
        lambda: bool(fired()) and fired()[0].state == "cancelled",
        "the scheduled run is cancelled by its timeout",
        timeout=30,
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=WAIT) == 0, place.output("worker")
    run = fired()[0]
    assert run.started_at is not None and run.ended_at is not None
    assert run.ended_at - run.started_at >= 2.0
    assert run.ended_at - run.started_at < 20.0
    assert "execution timeout of 2s" in ok(place, "runs", "show", run.run_id).stdout


@pytest.mark.parametrize(
    ("args", "option"),
    [
        pytest.param(("--run-retries", "-1"), "--run-retries", id="negative-retries"),
        pytest.param(
            ("--run-retries", "2", "--retry-strategy", "sometimes"),
            "--retry-strategy",
            id="strategy",
        ),
        pytest.param(
            ("--run-retries", "2", "--retry-strategy", "exponential", "--retry-delay", "0"),
            "--retry-delay",
            id="exponential-zero",
        ),
        pytest.param(("--execution-timeout", "0"), "--execution-timeout", id="zero-timeout"),
    ],
)
def test_bad_retry_and_timeout_options_exit_2_naming_them(
    place: Place, args: tuple[str, ...], option: str
) -> None:
    spec = place.tmp / "p.json"
    spec.write_text(
        json.dumps(
            {
                "name": "p",
                "tasks": [{"id": "a", "operator": "bash", "parameters": {"command": "true"}}],
            }
        )
    )
    ok(place, "run", str(spec))
    result = sf(place, "schedules", "add", "s", "p", "--every", "1h", *args)
    assert result.returncode == 2, result
    assert option in result.stderr, result.stderr
    assert "schedule s:" not in ok(place, "schedules", "list").stdout


@pytest.mark.slow
def test_each_new_object_fires_one_run_with_two_schedulers(place: Place) -> None:
    incoming = place.tmp / "incoming"
    incoming.mkdir()
    (incoming / "old.csv").write_text("present before the schedule\n")
    seen = place.tmp / "seen.txt"
    spec = place.tmp / "ingest.json"
    command = f'echo "$STAGEFLOW_SCHEDULE_OBJECT|${{schedule.object}}" >> {seen}'
    spec.write_text(
        json.dumps(
            {
                "name": "ingest",
                "tasks": [{"id": "load", "operator": "bash", "parameters": {"command": command}}],
            }
        )
    )
    ok(place, "submit", str(spec))  # saves the pipeline
    ok(place, "cancel", runs_of(place, "ingest")[0].run_id)
    url = f"file://{incoming}/*.csv"
    ok(place, "schedules", "add", "watch", "ingest", "--on-object", url, "--poll", "1s")
    shown = ok(place, "schedules", "show", "watch").stdout
    assert f"object: {url}   polled every 1s" in shown, shown
    schedulers = [
        place.start(f"scheduler{k}", "scheduler", "--poll-seconds", "0.2") for k in range(2)
    ]
    worker = place.start("worker", "worker", "--no-schedules")
    (incoming / "a.csv").write_text("a\n")
    (incoming / "b.csv").write_text("b\n")
    (incoming / "c.txt").write_text("not matched\n")

    def fired() -> list[RunRecord]:
        return [r for r in runs_of(place, "ingest") if r.triggered_by == "schedule:watch"]

    wait_until(
        lambda: [r.state for r in fired()] == ["success", "success"],
        "a run per new object ends",
        timeout=30,
    )
    time.sleep(2.5)  # more polls by both schedulers: still one run per object
    for proc in [*schedulers, worker]:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
    assert len(fired()) == 2
    lines = sorted(seen.read_text().splitlines())
    assert lines == [f"file://{incoming}/{n}.csv|file://{incoming}/{n}.csv" for n in "ab"]


def test_bad_object_urls_exit_2_naming_on_object(place: Place) -> None:
    spec = place.tmp / "p.json"
    task = {"id": "a", "operator": "bash", "parameters": {"command": "true"}}
    spec.write_text(json.dumps({"name": "p", "tasks": [task]}))
    ok(place, "run", str(spec))
    for url in ("not a url", "nosuchproto://bucket/*.csv"):
        result = sf(place, "schedules", "add", "s", "p", "--on-object", url)
        assert result.returncode == 2, result
        assert "--on-object" in result.stderr, result.stderr
    result = sf(place, "schedules", "add", "s", "p", "--every", "1h", "--poll", "5s")
    assert result.returncode == 2 and "--poll" in result.stderr, result


def test_the_failed_runs_own_process_queues_its_retry(place: Place) -> None:
    spec = place.tmp / "flaky.json"
    doc = flaky(place.tmp / "count")
    doc["run_retries"] = {"max_retries": 1, "strategy": "fixed", "retry_delay": "1h"}
    spec.write_text(json.dumps(doc))
    assert sf(place, "run", str(spec)).returncode != 0  # no worker, no scheduler runs
    first, retry = runs_of(place, "flaky")
    assert (first.state, retry.state, retry.triggered_by) == (
        "failed",
        "queued",
        f"retry:{first.run_id}",
    )
    with place.store() as store:
        due = store.retried_by(first.run_id)
        assert due is not None and due[0] == retry.run_id
        assert first.ended_at is not None and due[1] == pytest.approx(first.ended_at + 3600)
        assert store.claimable_runs(first.ended_at + 3599, 10) == []  # not before it is due
    shown = ok(place, "runs", "show", first.run_id).stdout
    assert f"retried by {retry.run_id}, due at " in shown, shown
