"""The ``sensor`` operator's checks, one kind at a time, on real things: the clock
given in, files in a temp folder (and fsspec's memory filesystem), a local HTTP
server, and validation naming the task and field of every mistake."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stageflow.errors import InvalidSpec
from stageflow.operators import registry
from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.operators.sensor import SensorOperator, SensorParams, poke, sensor_policy
from stageflow.runtime.plan import check
from stageflow.spec.load import pipeline_from_text


def params(**given: Any) -> SensorParams:
    return SensorParams.model_validate(given)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "now", "met"),
    [
        pytest.param(
            {"not_before": "2026-03-01T06:00:00Z"}, "2026-03-01T05:59:59", False, id="iso-before"
        ),
        pytest.param(
            {"not_before": "2026-03-01T06:00:00Z"}, "2026-03-01T06:00:00", True, id="iso-reached"
        ),
        pytest.param({"not_before": "06:30"}, "2026-03-01T06:29:00", False, id="clock-before"),
        pytest.param({"not_before": "06:30"}, "2026-03-01T06:31:00", True, id="clock-after"),
        pytest.param({"within": "09:00-17:00"}, "2026-03-01T08:59:00", False, id="before-window"),
        pytest.param({"within": "09:00-17:00"}, "2026-03-01T12:00:00", True, id="in-window"),
        pytest.param(
            {"within": "09:00-17:00"}, "2026-03-01T17:00:00", False, id="window-end-excluded"
        ),
        pytest.param({"within": "22:00-06:00"}, "2026-03-01T23:30:00", True, id="wraps-late"),
        pytest.param({"within": "00:00-24:00"}, "2026-03-01T23:59:59", True, id="all-day"),
        pytest.param({"within": "20:00-24:00"}, "2026-03-01T19:59:59", False, id="to-midnight"),
        pytest.param({"within": "22:00-06:00"}, "2026-03-01T05:00:00", True, id="wraps-early"),
        pytest.param({"within": "22:00-06:00"}, "2026-03-01T12:00:00", False, id="wraps-outside"),
        pytest.param(
            {"within": "09:00-17:00", "timezone": "Asia/Tokyo"},
            "2026-03-01T01:00:00",  # 10:00 in Tokyo
            True,
            id="timezone",
        ),
        pytest.param(
            {"not_before": "10:00", "within": "09:00-17:00"},
            "2026-03-01T09:30:00",
            False,
            id="both",
        ),
    ],
)
def test_time_sensor(given: dict[str, Any], now: str, met: bool) -> None:
    found = poke(params(kind="time", **given), pipeline_dir=".", now=at(now))
    assert found.met is met, found.message
    if met:
        assert found.value == {"at": now + "Z"}
    else:
        assert "it is" in found.message


# -- file ----------------------------------------------------------------------------------


def test_file_sensor_finds_matching_files_relative_to_the_pipeline(tmp_path: Path) -> None:
    sensor = params(kind="file", path="in/*.csv")
    assert not poke(sensor, pipeline_dir=str(tmp_path), now=0).met
    (tmp_path / "in" / "dir.csv").mkdir(parents=True)  # a folder is not a file
    (tmp_path / "in" / "b.txt").write_text("x")
    found = poke(sensor, pipeline_dir=str(tmp_path), now=0)
    assert not found.met and found.message == "no file matches in/*.csv"
    (tmp_path / "in" / "b.csv").write_text("x")
    (tmp_path / "in" / "a.csv").write_text("x")
    found = poke(sensor, pipeline_dir=str(tmp_path), now=0)
    assert found.met
    assert found.value == [str(tmp_path / "in" / "a.csv"), str(tmp_path / "in" / "b.csv")]
    assert found.message.endswith("a.csv and 1 more")


def test_file_sensor_on_an_fsspec_url() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    sensor = params(kind="file", path="memory://sensor-test/day=1/*.parquet")
    assert not poke(sensor, pipeline_dir=".", now=0).met
    fs.pipe("/sensor-test/day=1/part-0.parquet", b"data")
    try:
        found = poke(sensor, pipeline_dir=".", now=0)
        assert found.met
        assert found.value == ["memory:///sensor-test/day=1/part-0.parquet"]
    finally:
        fs.rm("/sensor-test", recursive=True)


# -- http ----------------------------------------------------------------------------------


class _Service:
    """A local HTTP server whose answer the test sets: (status, body)."""

    def __init__(self) -> None:
        self.answer: tuple[int, str] = (503, "starting")
        self.headers: dict[str, str] = {}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.headers = dict(self.headers)
                status, body = service.answer
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def service() -> Iterator[_Service]:
    svc = _Service()
    yield svc
    svc.server.shutdown()
    svc.server.server_close()


def test_http_sensor_waits_for_the_status(service: _Service) -> None:
    sensor = params(kind="http", url=service.url, headers={"X-Token": "t"})
    found = poke(sensor, pipeline_dir=".", now=0)
    assert not found.met and "answered 503, not 200" in found.message
    service.answer = (200, "ok")
    found = poke(sensor, pipeline_dir=".", now=0)
    assert found.met and found.value == {"url": service.url, "status": 200, "body": "ok"}
    assert service.headers.get("X-Token") == "t"


def test_http_sensor_matches_text_and_json_fields(service: _Service) -> None:
    sensor = params(
        kind="http", url=service.url, contains="ready", json={"state": "ready", "jobs.0.done": True}
    )
    service.answer = (200, json.dumps({"state": "busy", "jobs": [{"done": True}]}))
    found = poke(sensor, pipeline_dir=".", now=0)
    assert not found.met and "without 'ready'" in found.message
    service.answer = (200, json.dumps({"state": "ready (soon)", "jobs": [{"done": True}]}))
    found = poke(sensor, pipeline_dir=".", now=0)
    assert not found.met and "state is 'ready (soon)', not 'ready'" in found.message
    service.answer = (200, json.dumps({"state": "ready", "jobs": []}))
    found = poke(sensor, pipeline_dir=".", now=0)
    assert not found.met and "no field 'jobs.0.done'" in found.message
    body = {"state": "ready", "jobs": [{"done": True}]}
    service.answer = (200, json.dumps(body))
    found = poke(sensor, pipeline_dir=".", now=0)
    assert found.met and found.value["body"] == body


def test_http_sensor_expects_another_status_and_survives_no_server(service: _Service) -> None:
    service.answer = (404, "gone")
    assert poke(params(kind="http", url=service.url, status=404), pipeline_dir=".", now=0).met
    service.server.shutdown()
    service.server.server_close()
    found = poke(params(kind="http", url=service.url, request_timeout=2), pipeline_dir=".", now=0)
    assert not found.met and "did not answer" in found.message


# -- task ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latest", "met", "said"),
    [
        pytest.param(None, False, "pipeline 'etl' has no run yet", id="no-run"),
        pytest.param(
            ("r1", "running"), False, "task 'publish' of run r1 (etl) is running", id="running"
        ),
        pytest.param(
            ("r1", None), False, "run r1 of pipeline 'etl' has no task 'publish'", id="no-task"
        ),
        pytest.param(
            ("r2", "success"), True, "task 'publish' of run r2 (etl) succeeded", id="success"
        ),
    ],
)
def test_task_sensor(latest: tuple[str, str | None] | None, met: bool, said: str) -> None:
    asked: list[tuple[str, str]] = []

    def lookup(pipeline: str, task: str) -> tuple[str, str | None] | None:
        asked.append((pipeline, task))
        return latest

    found = poke(
        params(kind="task", pipeline="etl", task="publish"), pipeline_dir=".", now=0, lookup=lookup
    )
    assert (found.met, found.message) == (met, said)
    assert asked == [("etl", "publish")]
    if met:
        assert found.value == {
            "pipeline": "etl",
            "task": "publish",
            "run_id": "r2",
            "state": "success",
        }


# -- the operator on its own, and the engine's policy ------------------------------------------


def test_run_alone_pokes_in_its_attempt(tmp_path: Path) -> None:
    sensor = params(kind="file", path="ready.flag", poke_interval=0.05, timeout=0.3)
    ctx = TaskContext(
        "r", "wait", 1, {}, tmp_path / "w", tmp_path / "log", _logger(), pipeline_dir=tmp_path
    )
    with pytest.raises(TaskFailed, match=r"timed out after 0.3s .*no file matches ready.flag"):
        SensorOperator().run(sensor, {}, ctx)
    (tmp_path / "ready.flag").write_text("")
    assert SensorOperator().run(sensor, {}, ctx) == [str(tmp_path / "ready.flag")]


def test_policy_reads_durations() -> None:
    policy = sensor_policy(
        params(kind="file", path="x", poke_interval="30s", timeout="2h", soft_fail=True)
    )
    assert (policy.poke_interval, policy.timeout, policy.soft_fail) == (30.0, 7200.0, True)
    assert policy.waits_for == "file x"
    assert registry.get("sensor") is SensorOperator


# -- validation ----------------------------------------------------------------------------


def problems_of(parameters: str, extra: str = "") -> list[tuple[str | None, str | None, str]]:
    spec = f"""
name: p
tasks:
  - id: up
    operator: bash
    parameters: {{command: echo}}
  - id: wait
    operator: sensor
{extra}    parameters: {parameters}
"""
    with pytest.raises(InvalidSpec) as caught:
        check(pipeline_from_text(spec, fmt="yaml"))
    return [(p.task, p.field, p.message) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("parameters", "field", "said"),
    [
        pytest.param(
            "{kind: smoke}",
            "parameters.kind",
            "'time', 'file', 'http' or 'task'",
            id="unknown-kind",
        ),
        pytest.param("{path: x}", "parameters.kind", "needs parameter 'kind'", id="no-kind"),
        pytest.param(
            "{kind: file}", "parameters.path", "a file sensor needs 'path'", id="file-no-path"
        ),
        pytest.param(
            "{kind: file, path: x, poke_interval: soon}",
            "parameters.poke_interval",
            "is not a duration",
            id="bad-interval",
        ),
        pytest.param(
            "{kind: file, path: x, poke_interval: 0}",
            "parameters.poke_interval",
            "more than 0",
            id="zero-interval",
        ),
        pytest.param(
            "{kind: file, path: x, poke_interval: 2h, timeout: 1h}",
            "parameters.poke_interval",
            "longer than its timeout",
            id="interval-over-timeout",
        ),
        pytest.param(
            "{kind: file, path: 'nosuch://b/x'}",
            "parameters.path",
            "no filesystem knows the protocol 'nosuch'",
            id="bad-protocol",
        ),
        pytest.param(
            "{kind: file, path: x, url: 'http://h/'}",
            "parameters.url",
            "a file sensor takes no 'url'",
            id="other-kinds-field",
        ),
        pytest.param(
            "{kind: http, url: example.com/health}",
            "parameters.url",
            "needs an http:// or https:// scheme",
            id="url-no-scheme",
        ),
        pytest.param(
            "{kind: http, url: 'ftp://h/x'}",
            "parameters.url",
            "needs an http:// or https:// scheme",
            id="url-ftp",
        ),
        pytest.param(
            "{kind: http}", "parameters.url", "an http sensor needs 'url'", id="http-no-url"
        ),
        pytest.param(
            "{kind: task, pipeline: etl}",
            "parameters.task",
            "a task sensor needs 'task'",
            id="task-no-task",
        ),
        pytest.param(
            "{kind: time}", "parameters.not_before", "needs 'not_before'", id="time-nothing"
        ),
        pytest.param(
            "{kind: time, within: '9 to 5'}",
            "parameters.within",
            "is not a daily window",
            id="bad-window",
        ),
        pytest.param(
            "{kind: time, within: '09:00-09:00'}",
            "parameters.within",
            "empty window",
            id="empty-window",
        ),
        pytest.param(
            "{kind: time, not_before: tomorrow}",
            "parameters.not_before",
            "neither an ISO-8601 time",
            id="bad-not-before",
        ),
        pytest.param(
            "{kind: time, within: '09:00-17:00', timezone: Mars/Base}",
            "parameters.timezone",
            "unknown timezone",
            id="bad-timezone",
        ),
        pytest.param(
            "{kind: file, path: x, interval: 3}",
            "parameters.interval",
            "has no parameter 'interval'",
            id="unknown-parameter",
        ),
    ],
)
def test_validation_names_task_and_field(parameters: str, field: str, said: str) -> None:
    found = problems_of(parameters)
    assert any(task == "wait" and f == field and said in msg for task, f, msg in found), found


def test_a_sensor_is_neither_mapped_nor_gated() -> None:
    found = problems_of("{kind: file, path: x}", "    map_over: up\n    approval: {}\n")
    fields = {f for task, f, _ in found if task == "wait"}
    assert {"map_over", "approval"} <= fields, found


def test_a_valid_sensor_plans_its_policy() -> None:
    spec = """
name: p
params: {every: 5s}
tasks:
  - id: a
    operator: bash
    parameters: {command: echo}
  - id: wait
    operator: sensor
    parameters: {kind: file, path: x, poke_interval: "${params.every}", timeout: 1m,
                 soft_fail: true}
"""
    plan = check(pipeline_from_text(spec, fmt="yaml"))
    assert plan.sensors[0] is None
    policy = plan.sensors[1]
    assert policy is not None and (policy.poke_interval, policy.timeout) == (5.0, 60.0)


def _logger() -> Any:
    import logging

    return logging.getLogger("test-sensor")


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        pytest.param("/etc/*.conf", True, id="absolute-outside"),
        pytest.param("../other/*.csv", True, id="climbs-out"),
        pytest.param("file:///etc/passwd", True, id="file-url-outside"),
        pytest.param("/data/in/*.csv", False, id="under-a-root"),
        pytest.param("in/*.csv", False, id="relative"),
        pytest.param("s3://bucket/in/*.csv", False, id="object-url"),
    ],
)
def test_a_file_sensors_path_is_confined_over_the_api_like_other_paths(
    path: str, refused: bool
) -> None:
    from stageflow.operations.access import path_problems

    spec = f"""
name: p
tasks:
  - id: wait
    operator: sensor
    parameters: {{kind: file, path: "{path}"}}
"""
    found = path_problems(pipeline_from_text(spec, fmt="yaml"), ("/data",))
    assert [(task, field) for task, field, _ in found] == (
        [("wait", "parameters.path")] if refused else []
    )
