"""``/api/v1/monitoring`` through a real ``stageflow serve`` (its embedded worker samples
every 0.2 s): history, export, current gauges, statistics and gates on real runs,
who sees what, and 422 with the field for every bad argument."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers_serve import Server, serving
from helpers_tasks import wait_until

pytestmark = pytest.mark.slow

SPEC = """\
name: flaky
params: {fail: 0}
tasks:
  - id: train
    operator: bash
    parameters: {command: "test ${params.fail} = 0 || { echo broke; exit 3; }"}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("api-monitoring")
    with serving("sqlite", tmp, STAGEFLOW_SAMPLING_INTERVAL_SECONDS="0.2") as server:
        spec = tmp / "flaky.yaml"
        spec.write_text(SPEC)
        for fail in (0, 1):
            r = server.cli("run", str(spec), "--param", f"fail={fail}")
            assert r.returncode == (1 if fail else 0), r.stderr

        def sampled() -> bool:
            with server.store() as store:
                return (
                    len({s.at for s in store.metric_samples(["host.memory_percent"], 0, 4e9)}) >= 4
                )

        wait_until(sampled, "serve's worker sampled four slots", timeout=60)
        yield server


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def problem(doc: dict[str, Any]) -> tuple[str, str]:
    assert set(doc) == {"error", "problems"}
    return doc["problems"][0]["field"], doc["error"]


def test_history_and_export_are_the_stored_samples_in_range(server: Server) -> None:
    with server.store() as store:
        slots = sorted({s.at for s in store.metric_samples(["host.memory_percent"], 0, 4e9)})
        want = store.metric_samples([], slots[1], slots[2])
    params = {"from": iso(slots[1]), "to": iso(slots[2])}

    with server.client(server.admin) as c:
        history = c.get(
            "/api/v1/monitoring/metrics",
            params={**params, "names": "host.memory_percent,runs.queued"},
        )
        export = c.get("/api/v1/monitoring/metrics/export", params={**params, "format": "csv"})
        as_json = c.get("/api/v1/monitoring/metrics/export", params={**params, "format": "json"})

    assert history.status_code == 200, history.text
    assert [(s["name"], s["timestamp"], s["value"]) for s in history.json()["samples"]] == [
        (s.name, s.at, s.value) for s in want if s.name in ("host.memory_percent", "runs.queued")
    ]
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [(r["name"], float(r["timestamp"]), r["host"]) for r in rows] == [
        (s.name, s.at, s.host) for s in want
    ]
    assert [(d["name"], d["timestamp"]) for d in as_json.json()] == [(s.name, s.at) for s in want]


def test_current_has_this_host_and_the_store(server: Server) -> None:
    with server.client(server.admin) as c:
        doc = c.get("/api/v1/monitoring/current").json()

    (host,) = doc["hosts"].values()
    assert 0 < host["host.memory_percent"] <= 100
    assert doc["store"]["workers.live"] >= 1
    assert doc["sampled_at"] is not None


def test_statistics_and_gates_of_real_runs(server: Server) -> None:
    with server.client(server.admin) as c:
        stats = c.get("/api/v1/monitoring/statistics", params={"days": 7}).json()
        one = c.get("/api/v1/monitoring/statistics", params={"pipeline": "flaky"}).json()
        gates = c.get("/api/v1/monitoring/gates/flaky").json()
        lenient = c.get("/api/v1/monitoring/gates/flaky", params={"min_success_rate": 40}).json()

    (flaky,) = [p for p in stats["pipelines"] if p["pipeline"] == "flaky"]
    assert flaky["runs_by_state"] == {"failed": 1, "success": 1}
    assert flaky["success_rate"] == 0.5
    assert flaky["failures_by_task"] == {"train": 1}
    assert flaky["open_incident_since"] is not None  # the failure came last
    assert [(p["pipeline"], p["runs"]) for p in one["pipelines"]] == [("flaky", 2)]
    assert gates["passed"] is False
    assert [(g["gate"], g["passed"]) for g in gates["gates"]] == [
        ("reliability", False),
        ("recovery", True),  # failing for seconds, not 30 minutes
        ("execution_time", True),
    ]
    assert lenient["passed"] is True


def test_another_team_sees_no_pipeline_of_others(server: Server) -> None:
    token = server.token("team-b-viewer", "viewer", owner="team-b")

    with server.client(token) as c:
        stats = c.get("/api/v1/monitoring/statistics").json()
        gates = c.get("/api/v1/monitoring/gates/flaky")
        current = c.get("/api/v1/monitoring/current")

    assert stats["pipelines"] == []
    assert gates.status_code == 422
    assert problem(gates.json())[0] == "pipeline"
    assert current.status_code == 200


@pytest.mark.parametrize(
    ("path", "params", "field", "words"),
    [
        pytest.param(
            "/api/v1/monitoring/metrics",
            {"names": "cpu_percnt"},
            "name",
            "name 'cpu_percnt' is not a metric (did you mean 'host.cpu_percent'?)",
            id="unknown-metric",
        ),
        pytest.param(
            "/api/v1/monitoring/metrics",
            {"from": "-1h", "to": "-2h"},
            "from",
            "from -1h is after to -2h",
            id="from-after-to",
        ),
        pytest.param(
            "/api/v1/monitoring/metrics",
            {"from": "soon"},
            "from",
            "from 'soon' is not a time",
            id="bad-time",
        ),
        pytest.param(
            "/api/v1/monitoring/metrics/export",
            {"format": "xml"},
            "format",
            "format 'xml' is not a format; give one of csv, json",
            id="format",
        ),
        pytest.param("/api/v1/monitoring/statistics", {"days": 0}, "query.days", "days", id="days"),
        pytest.param(
            "/api/v1/monitoring/gates/nope",
            {},
            "pipeline",
            "pipeline 'nope' is not in the store",
            id="pipeline",
        ),
        pytest.param(
            "/api/v1/monitoring/gates/flaky",
            {"max_recovery": "later"},
            "max_recovery",
            "max_recovery 'later' is not a duration",
            id="threshold",
        ),
    ],
)
def test_bad_arguments_are_422_naming_the_field(
    server: Server, path: str, params: dict[str, Any], field: str, words: str
) -> None:
    with server.client(server.admin) as c:
        r = c.get(path, params=params)

    assert r.status_code == 422, r.text
    got_field, message = problem(r.json())
    assert got_field == field
    assert words in message


def test_a_token_is_needed(server: Server) -> None:
    with server.client() as c:
        assert c.get("/api/v1/monitoring/current").status_code == 401
