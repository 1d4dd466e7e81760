"""The monitor through real processes: a ``stageflow worker`` and ``stageflow scheduler``
sampling every 0.2 s into the store, ``stageflow metrics`` reading and exporting what
they wrote, ``stageflow statistics`` and ``stageflow gates`` on real runs of tiny bash
pipelines, and every bad argument answered with exit 2 naming the option."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from helpers_places import Place, place_on
from helpers_tasks import wait_until

pytestmark = pytest.mark.slow

SAMPLING = {"STAGEFLOW_SAMPLING_INTERVAL_SECONDS": "0.2"}
SPEC = """\
name: {name}
params: {{fail: 0}}
tasks:
  - {{id: extract, operator: bash, parameters: {{command: "echo extract"}}}}
  - id: train
    operator: bash
    upstream: [extract]
    parameters: {{command: "test ${{params.fail}} = 0 || {{ echo broke; exit 3; }}"}}
"""


def clean(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Never a traceback or an internal error, whatever the exit code."""
    assert "Traceback" not in r.stdout + r.stderr, r
    assert "internal error" not in r.stderr, r
    return r


def host_slots(place: Place) -> set[float]:
    with place.store() as store:
        return {s.at for s in store.metric_samples(["host.cpu_percent"], 0, 4e9)}


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_worker_records_host_and_store_samples(backend: str, tmp_path: Path) -> None:
    with place_on(backend, tmp_path, Place) as place:
        place.start("worker", "worker", **SAMPLING)

        def sampled_itself() -> bool:  # it registers itself just after its loop starts
            with place.store() as store:
                live = store.metric_samples(["workers.live"], 0, 4e9)
            return len(host_slots(place)) >= 2 and any(s.value == 1.0 for s in live)

        try:
            wait_until(sampled_itself, "the worker sampled itself twice", timeout=60)
        except AssertionError:
            raise AssertionError(place.stderr("worker")) from None

        with place.store() as store:
            samples = store.metric_samples([], 0, 4e9)
        names = {s.name for s in samples}
        assert {
            "host.cpu_percent",
            "host.memory_percent",
            "host.memory_used_bytes",
            "host.disk_percent",
        } <= names
        assert {"runs.queued", "runs.running", "workers.live"} <= names
        host = next(s for s in samples if s.name == "host.memory_percent")
        assert host.host and host.labels == {"host": host.host}
        assert 0 < host.value <= 100
        live = [s.value for s in samples if s.name == "workers.live"]
        assert max(live) == 1.0  # the worker itself
        # slots are multiples of the interval: one sample per (name, host, slot)
        keys = [(s.name, s.host, s.at) for s in samples]
        assert len(keys) == len(set(keys))
        for s in samples:  # within 10 µs of a slot (a float at 1.8e9 s is 0.24 µs apart)
            assert abs(s.at - round(s.at / 0.2) * 0.2) < 1e-5

        current = json.loads(clean(place.cli("metrics", "current", "--format", "json")).stdout)
        assert 0 < current["hosts"][host.host]["host.memory_percent"] <= 100
        assert current["store"]["workers.live"] == 1.0


def test_a_process_worker_reports_its_running_task(tmp_path: Path) -> None:
    with place_on("sqlite", tmp_path, Place) as place:
        spec = tmp_path / "slow.yaml"
        spec.write_text(
            'name: slow\ntasks:\n  - {id: nap, operator: bash, parameters: {command: "sleep 4"}}\n'
        )
        run_id = place.submit(spec)
        place.start("worker", "worker", "--executor", "process", **SAMPLING)

        def task_sampled() -> bool:
            with place.store() as store:
                return bool(store.metric_samples(["task.memory_rss_bytes"], 0, 4e9))

        try:
            wait_until(task_sampled, "the worker sampled its running task", timeout=60)
        except AssertionError:
            raise AssertionError(place.stderr("worker")) from None

        with place.store() as store:
            sample = store.metric_samples(["task.memory_rss_bytes"], 0, 4e9)[0]
        assert sample.labels["run_id"] == run_id
        assert (sample.labels["pipeline"], sample.labels["task_id"]) == ("slow", "nap")
        assert sample.value > 1024 * 1024  # a worker process and its bash: megabytes


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    """A home where ``stageflow scheduler`` sampled at least five slots, then stopped."""
    with place_on("sqlite", tmp_path_factory.mktemp("sampled"), Place) as place:
        proc = place.start("scheduler", "scheduler", "--poll-seconds", "0.05", **SAMPLING)
        try:
            wait_until(
                lambda: len(host_slots(place)) >= 5, "the scheduler sampled five slots", timeout=60
            )
        except AssertionError:
            raise AssertionError(place.stderr("scheduler")) from None
        proc.terminate()
        proc.wait(timeout=30)
        yield place


def in_range(place: Place) -> tuple[str, str, list[tuple[str, float, str, float]]]:
    """A --from/--to of the second to the fourth slot, and the samples in it."""
    slots = sorted(host_slots(place))
    since, until = slots[1], slots[3]
    with place.store() as store:
        want = [(s.name, s.at, s.host, s.value) for s in store.metric_samples([], since, until)]
        assert store.metric_samples([], slots[0], slots[0])  # the range leaves some out
    return iso(since), iso(until), want


def iso(ts: float) -> str:
    from datetime import UTC

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def test_export_csv_is_exactly_the_samples_in_range(sampled: Place, tmp_path: Path) -> None:
    start, end, want = in_range(sampled)
    out = tmp_path / "m.csv"

    r = clean(
        sampled.cli(
            "metrics", "export", "--from", start, "--to", end, "--format", "csv", "-o", str(out)
        )
    )

    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    got = [(row["name"], float(row["timestamp"]), row["host"], float(row["value"])) for row in rows]
    assert got == want
    for row in rows:
        assert datetime.fromisoformat(row["at"]).timestamp() == pytest.approx(
            float(row["timestamp"]), abs=1e-5
        )
    assert f"{len(want)} samples written" in r.stderr


def test_export_json_of_one_name_to_stdout(sampled: Place) -> None:
    start, end, want = in_range(sampled)

    r = clean(
        sampled.cli(
            "metrics",
            "export",
            "--from",
            start,
            "--to",
            end,
            "--format",
            "json",
            "--name",
            "host.memory_percent",
        )
    )

    assert r.returncode == 0, r.stderr
    got = [(d["name"], d["timestamp"], d["host"], d["value"]) for d in json.loads(r.stdout)]
    assert got == [w for w in want if w[0] == "host.memory_percent"]
    assert len(got) == 3


def test_history_as_json_and_as_a_table(sampled: Place) -> None:
    start, end, want = in_range(sampled)

    doc = json.loads(
        clean(
            sampled.cli(
                "metrics",
                "history",
                "runs.queued",
                "--from",
                start,
                "--to",
                end,
                "--format",
                "json",
            )
        ).stdout
    )
    table = clean(sampled.cli("metrics", "history", "runs.queued", "--from", "-1d"))

    assert [(s["name"], s["timestamp"], s["value"]) for s in doc["samples"]] == [
        (n, at, v) for n, at, _h, v in want if n == "runs.queued"
    ]
    assert table.returncode == 0
    assert "runs.queued" in table.stdout.splitlines()[1]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(
            ("metrics", "export", "--from", "-1h", "--to", "-2h"),
            "--from -1h is after --to -2h",
            id="from-after-to",
        ),
        pytest.param(
            ("metrics", "export", "--format", "xml"), "'--format': 'xml' is not one of", id="format"
        ),
        pytest.param(
            ("metrics", "history", "cpu_percnt"),
            "name 'cpu_percnt' is not a metric (did you mean 'host.cpu_percent'?); the metrics are",
            id="unknown-metric",
        ),
        pytest.param(
            ("metrics", "history", "host.cpu_percent", "--from", "yesterday"),
            "--from 'yesterday' is not a time",
            id="bad-time",
        ),
        pytest.param(("statistics", "--days", "0"), "'--days': 0 is not in the range", id="days"),
        pytest.param(("gates", "nightly"), "pipeline 'nightly' is not in the store", id="pipeline"),
        pytest.param(
            ("gates", "x", "--max-recovery", "soon"), "--max-recovery 'soon'", id="threshold"
        ),
    ],
)
def test_bad_input_exits_2_naming_the_option(
    sampled: Place, args: tuple[str, ...], words: str
) -> None:
    r = clean(sampled.cli(*args))

    assert r.returncode == 2, r
    assert words in r.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    """``steady`` succeeded three times; ``flaky`` succeeded, failed, succeeded."""
    with place_on("sqlite", tmp_path_factory.mktemp("runs"), Place) as place:
        for name, fails in (("steady", (0, 0, 0)), ("flaky", (0, 1, 0))):
            spec = place.tmp / f"{name}.yaml"
            spec.write_text(SPEC.format(name=name))
            for fail in fails:
                r = clean(place.cli("run", str(spec), "--param", f"fail={fail}"))
                assert r.returncode == (1 if fail else 0), r.stderr
        yield place


def test_statistics_figures_of_known_runs(runs: Place) -> None:
    with runs.store() as store:
        flaky = sorted(store.query_runs(pipeline="flaky"), key=lambda r: r.created_at)
        failed_error = next(
            t.error for t in store.task_runs(flaky[1].run_id) if t.state == "failed"
        )
    assert [r.state for r in flaky] == ["success", "failed", "success"]

    r = clean(runs.cli("statistics", "flaky", "--format", "json"))

    assert r.returncode == 0, r.stderr
    (doc,) = json.loads(r.stdout)["pipelines"]
    assert doc["pipeline"] == "flaky"
    assert doc["runs"] == 3
    assert doc["runs_by_state"] == {"failed": 1, "success": 2}
    assert doc["success_rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert doc["mttr_seconds"] == pytest.approx(flaky[2].ended_at - flaky[1].ended_at, abs=1e-5)
    assert doc["recoveries"] == 1
    assert doc["mtbf_seconds"] is None
    assert doc["failures_by_task"] == {"train": 1}
    first = next(line.strip() for line in (failed_error or "").splitlines() if line.strip())
    assert list(doc["failures_by_error"].values()) == [1]
    assert next(iter(doc["failures_by_error"])) in first
    durations = sorted(x.ended_at - x.started_at for x in flaky)
    assert doc["duration_seconds"]["p50"] == pytest.approx(durations[1], abs=1e-5)
    assert doc["duration_seconds"]["p99"] == pytest.approx(durations[2], abs=1e-5)


def test_statistics_of_every_pipeline_as_a_table(runs: Place) -> None:
    r = clean(runs.cli("statistics"))

    assert r.returncode == 0, r.stderr
    assert "pipeline flaky (last 7 days): 3 runs (failed 1, success 2)" in r.stdout
    assert "pipeline steady (last 7 days): 3 runs (success 3)" in r.stdout
    assert "failures by task  train 1" in r.stdout


def test_gates_pass_exit_0(runs: Place) -> None:
    r = clean(runs.cli("gates", "steady"))

    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split()[:2] == ["PASS", "reliability"]
    assert "100.0%" in lines[1] and "threshold 95%" in lines[1]
    assert lines[2].split()[:2] == ["PASS", "recovery"]
    assert lines[3].split()[:2] == ["PASS", "execution_time"]
    assert lines[-1] == "all gates pass"


def test_gates_fail_exit_1_with_figures(runs: Place) -> None:
    r = clean(runs.cli("gates", "flaky", "--format", "json"))

    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["passed"] is False
    gates = {g["gate"]: g for g in doc["gates"]}
    assert gates["reliability"]["passed"] is False
    assert gates["reliability"]["figure"] == pytest.approx(200 / 3, abs=1e-4)
    assert gates["reliability"]["threshold"] == 95.0
    assert gates["recovery"]["passed"] is True  # recovered within seconds


def test_gates_thresholds_are_options(runs: Place) -> None:
    lenient = clean(runs.cli("gates", "flaky", "--min-success-rate", "60"))
    strict = clean(
        runs.cli("gates", "flaky", "--min-success-rate", "60", "--max-recovery", "0.001")
    )

    assert lenient.returncode == 0, lenient.stdout
    assert strict.returncode == 1, strict.stdout
    assert "FAIL  recovery" in strict.stdout
