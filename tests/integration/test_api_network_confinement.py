"""What a non-admin's pipeline may reach beyond files, over the REST API against a real
``stageflow serve``: an http(s) URL in its tasks (an http sensor's ``url``, a source
given by ``${params.url}``) or a webhook channel must be a public host, or one of
``STAGEFLOW_API_ALLOWED_HOSTS`` (server-side request forgery: the server's loopback,
private network or cloud metadata are not the editor's to read); a task sensor may wait
only for a pipeline of its own team. Refused: 403 naming the task and the field, nothing
saved or queued. An admin is not confined.

A real HTTP server on 127.0.0.1 answers the sensors. One server per backend refuses
127.0.0.1; another (SQLite) allows it.
"""

from __future__ import annotations

import http.server
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers_schedules import World, team_tokens
from helpers_serve import serving

pytestmark = pytest.mark.slow

_unique = itertools.count(1)
PUBLIC = "https://93.184.216.34/"  # a literal public IP: nothing is resolved


class Answering:
    """An HTTP server on 127.0.0.1 answering every GET 200 ``ready``; ``hits`` counts them."""

    def __init__(self) -> None:
        self.hits = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                body = b"ready"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def local() -> Iterator[Answering]:
    server = Answering()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"api-network-{request.param}")
    with serving(request.param, tmp) as s:
        yield World(s, team_tokens(s))


@pytest.fixture(scope="module")
def allowing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("api-network-allowed")
    with serving("sqlite", tmp, STAGEFLOW_API_ALLOWED_HOSTS="127.0.0.1") as s:
        yield World(s, team_tokens(s))


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_unique)}"


def sensor(name: str, url: str, **extra: Any) -> dict[str, Any]:
    """A pipeline of team-a whose one task waits for ``url`` to answer 200."""
    parameters = {"kind": "http", "url": url, "poke_interval": "1s", "timeout": "30s"}
    return {
        "name": name,
        "owner": "team-a",
        "tasks": [{"id": "wait", "operator": "sensor", "parameters": parameters}],
        **extra,
    }


def refused(r: httpx.Response, task: str | None, field: str, says: str) -> None:
    assert r.status_code == 403, r.text
    [problem] = r.json()["problems"]
    assert (problem.get("task"), problem["field"]) == (task, field), problem
    assert says in problem["message"], problem


def refused_host(r: httpx.Response, task: str | None, field: str, url: str) -> None:
    refused(r, task, field, repr(url))
    assert "STAGEFLOW_API_ALLOWED_HOSTS" in r.json()["problems"][0]["message"]


def test_an_editor_may_not_make_the_server_reach_its_loopback(
    world: World, local: Answering
) -> None:
    spec = sensor(fresh("loopback"), local.url)
    with world.as_("editor") as c:
        refused_host(c.post("/api/v1/pipelines", json=spec), "wait", "parameters.url", local.url)
        assert c.get(f"/api/v1/pipelines/{spec['name']}").status_code == 404  # nothing saved
    with world.as_("admin") as c:  # an admin is not confined: saved, and it runs
        assert c.post("/api/v1/pipelines", json=spec).status_code == 201
    with world.as_("operator") as c:  # team-a's operator may not run it as it is
        r = c.post("/api/v1/runs", json={"pipeline_id": spec["name"]})
        refused_host(r, "wait", "parameters.url", local.url)
    assert world.runs_of(spec["name"]) == []
    before = local.hits
    with world.as_("admin") as c:
        run = c.post("/api/v1/runs", json={"pipeline_id": spec["name"]})
        assert run.status_code == 202, run.text
    world.succeeds(run.json()["run_id"])
    assert local.hits > before


def test_a_url_from_a_run_parameter_names_the_parameter(world: World, local: Answering) -> None:
    spec = {
        **sensor(fresh("by-param"), "${params.url}"),
        "params": {"url": PUBLIC},
    }
    with world.as_("editor") as c:
        assert c.post("/api/v1/pipelines", json=spec).status_code == 201, spec
    with world.as_("operator") as c:
        body = {"pipeline_id": spec["name"], "parameters": {"url": local.url}}
        r = c.post("/api/v1/runs", json=body)
        refused_host(r, "wait", "parameters.url", local.url)
        assert "from run parameter 'url'" in r.json()["problems"][0]["message"]
        metadata = {**body, "parameters": {"url": "http://169.254.169.254/latest/meta-data/"}}
        r = c.post("/api/v1/runs", json=metadata)
        refused(r, "wait", "parameters.url", "a link-local address")
    assert world.runs_of(spec["name"]) == []


def test_a_webhook_channel_to_the_loopback_is_refused(world: World, local: Answering) -> None:
    hook = local.url + "hook"
    spec = sensor(fresh("hooked"), PUBLIC, on_failure=[{"webhook": hook}])
    with world.as_("editor") as c:
        refused_host(c.post("/api/v1/pipelines", json=spec), None, "on_failure.0.webhook", hook)
        assert c.get(f"/api/v1/pipelines/{spec['name']}").status_code == 404
    with world.as_("admin") as c:
        assert c.post("/api/v1/pipelines", json=spec).status_code == 201
    rule = {"rule_id": fresh("slow"), "metric": "run.duration_seconds", "threshold": 600}
    posting = {**rule, "channels": [{"webhook": hook}]}
    with world.as_("editor") as c:  # an alert rule's channel too
        refused_host(c.post("/api/v1/alert-rules", json=posting), None, "channels[0].webhook", hook)
        public = {**rule, "channels": [{"webhook": PUBLIC}]}
        assert c.post("/api/v1/alert-rules", json=public).status_code == 201
    with world.as_("admin") as c:
        assert c.post("/api/v1/alert-rules", json=posting).status_code == 201


def test_a_task_sensor_waits_only_for_its_own_team_s_pipelines(world: World) -> None:
    theirs = fresh("upstream-b")
    with world.as_("editor-b") as c:
        r = c.post("/api/v1/pipelines", json=sensor(theirs, PUBLIC, owner="team-b"))
        assert r.status_code == 201, r.text

    def waiting(name: str, other: str, owner: str) -> dict[str, Any]:
        parameters = {"kind": "task", "pipeline": other, "task": "wait"}
        return {
            "name": name,
            "owner": owner,
            "tasks": [{"id": "after", "operator": "sensor", "parameters": parameters}],
        }

    spec = waiting(fresh("downstream"), theirs, "team-a")
    with world.as_("editor") as c:
        r = c.post("/api/v1/pipelines", json=spec)
        refused(r, "after", "parameters.pipeline", f"pipeline '{theirs}' is another team's")
        assert c.get(f"/api/v1/pipelines/{spec['name']}").status_code == 404
        later = waiting(fresh("downstream"), fresh("not-yet"), "team-a")  # nobody's yet
        assert c.post("/api/v1/pipelines", json=later).status_code == 201
    with world.as_("editor-b") as c:  # the owner team may
        mine = waiting(fresh("downstream-b"), theirs, "team-b")
        assert c.post("/api/v1/pipelines", json=mine).status_code == 201
    with world.as_("admin") as c:  # so may an admin, for any team; the editor may not run it
        assert c.post("/api/v1/pipelines", json=spec).status_code == 201
    with world.as_("operator") as c:
        r = c.post("/api/v1/runs", json={"pipeline_id": spec["name"]})
        refused(r, "after", "parameters.pipeline", f"pipeline '{theirs}' is another team's")


def test_an_allowed_host_is_reached(allowing: World, local: Answering) -> None:
    spec = sensor(fresh("allowed"), local.url)
    with allowing.as_("editor") as c:
        r = c.post("/api/v1/pipelines", json=spec)
        assert r.status_code == 201, r.text
    before = local.hits
    with allowing.as_("operator") as c:
        run = c.post("/api/v1/runs", json={"pipeline_id": spec["name"]})
        assert run.status_code == 202, run.text
    allowing.succeeds(run.json()["run_id"])
    assert local.hits > before
    with allowing.as_("editor") as c:  # only the host named: the metadata address is not
        other = sensor(fresh("metadata"), "http://169.254.169.254/")
        refused(c.post("/api/v1/pipelines", json=other), "wait", "parameters.url", "link-local")
