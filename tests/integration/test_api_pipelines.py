"""Pipelines over a real ``stageflow serve`` (no worker: nothing here runs): the graph
in its four formats, the list's name filter and pages, a deleted pipeline whose runs
stay readable, a token made with ``--expires`` that stops working, and a secret run
parameter given over the API as a reference (a value is refused, nothing stored)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from helpers_serve import Server, serving

pytestmark = pytest.mark.slow

DIAMOND = {
    "name": "diamond",
    "tasks": [
        {"id": "load", "operator": "notification", "parameters": {"message": "a"}},
        {
            "id": "left",
            "operator": "notification",
            "upstream": ["load"],
            "parameters": {"message": "b"},
        },
        {
            "id": "right",
            "operator": "notification",
            "upstream": ["load"],
            "parameters": {"message": "c"},
        },
        {
            "id": "join",
            "operator": "notification",
            "upstream": ["left", "right"],
            "parameters": {"message": "d"},
        },
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving("sqlite", tmp_path_factory.mktemp("api-pipelines"), "--no-worker") as s:
        with s.client(s.admin) as c:
            assert c.post("/api/v1/pipelines", json=DIAMOND).status_code == 201
        yield s


def test_the_graph_in_each_format(server: Server) -> None:
    with server.client(server.admin) as c:
        doc = c.get("/api/v1/pipelines/diamond/graph").json()
        dot = c.get("/api/v1/pipelines/diamond/graph", params={"format": "dot"})
        mermaid = c.get("/api/v1/pipelines/diamond/graph", params={"format": "mermaid"})
        svg = c.get("/api/v1/pipelines/diamond/graph", params={"format": "svg"})
        bad = c.get("/api/v1/pipelines/diamond/graph", params={"format": "png"})
    assert [n["id"] for n in doc["nodes"]] == ["load", "left", "right", "join"]
    assert sorted((e["from"], e["to"]) for e in doc["edges"]) == [
        ("left", "join"),
        ("load", "left"),
        ("load", "right"),
        ("right", "join"),
    ]
    assert doc["levels"] == [["load"], ["left", "right"], ["join"]]
    assert doc["critical_path"][0] == "load" and doc["critical_path"][-1] == "join"
    assert dot.status_code == 200 and dot.text.lstrip().startswith("digraph")
    assert dot.text.count("->") == 4
    assert mermaid.status_code == 200 and "flowchart" in mermaid.text
    assert mermaid.text.count("-->") == 4
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert "<svg" in svg.text and "join" in svg.text
    assert bad.status_code == 422 and "format" in bad.json()["error"]


def test_the_list_filters_by_name_and_pages(server: Server) -> None:
    with server.client(server.admin) as c:
        for i in range(3):
            spec = {**DIAMOND, "name": f"paged-{i}"}
            assert c.post("/api/v1/pipelines", json=spec).status_code == 201
        first = c.get("/api/v1/pipelines", params={"name": "paged-", "limit": 2}).json()
        rest = c.get("/api/v1/pipelines", params={"name": "paged-", "limit": 2, "offset": 2})
        too_many = c.get("/api/v1/pipelines", params={"limit": 100_000})
    names = [p["name"] for p in first["pipelines"]] + [p["name"] for p in rest.json()["pipelines"]]
    assert sorted(names) == ["paged-0", "paged-1", "paged-2"]
    assert first["total"] == 3 and len(first["pipelines"]) == 2
    assert too_many.status_code == 422 and "limit" in too_many.json()["error"]


def test_a_deleted_pipeline_s_runs_stay_readable(server: Server) -> None:
    with server.client(server.admin) as c:
        assert c.post("/api/v1/pipelines", json={**DIAMOND, "name": "doomed"}).status_code == 201
        queued = c.post("/api/v1/runs", json={"pipeline_id": "doomed"})
        assert queued.status_code == 202, queued.text
        run_id = queued.json()["run_id"]
        deleted = c.delete("/api/v1/pipelines/doomed")
        assert deleted.status_code == 200, deleted.text
        assert c.get("/api/v1/pipelines/doomed").status_code == 404
        assert c.post("/api/v1/runs", json={"pipeline_id": "doomed"}).status_code == 404
        run = c.get(f"/api/v1/runs/{run_id}")
        listed = c.get("/api/v1/runs", params={"pipeline": "doomed"}).json()["runs"]
    assert run.status_code == 200 and run.json()["pipeline"] == "doomed"
    assert [r["run_id"] for r in listed] == [run_id]


def test_a_token_stops_working_once_it_expires(server: Server) -> None:
    r = server.cli("tokens", "create", "--name", "brief", "--role", "viewer", "--expires", "2e-5")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()  # 2e-5 days: 1.7 s
    with server.client(token) as c:
        assert c.get("/api/v1/me").status_code == 200
        time.sleep(2.0)
        expired = c.get("/api/v1/me")
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]


def test_a_secret_parameter_over_the_api_is_a_reference_never_a_value(server: Server) -> None:
    secret = "s3cr3t-api-7c2e"
    spec = {
        "name": "keyed",
        "params": {"api_key": {"secret": True}},
        "tasks": [
            {
                "id": "say",
                "operator": "bash",
                "parameters": {"command": 'test -n "${params.api_key}"'},
            }
        ],
    }
    with server.client(server.admin) as c:
        assert c.post("/api/v1/pipelines", json=spec).status_code == 201
        literal = c.post(
            "/api/v1/runs", json={"pipeline_id": "keyed", "parameters": {"api_key": secret}}
        )
        reference = c.post(
            "/api/v1/runs",
            json={"pipeline_id": "keyed", "parameters": {"api_key": "${secret:SF_KEY}"}},
        )
        assert reference.status_code == 202, reference.text
        run = c.get(f"/api/v1/runs/{reference.json()['run_id']}").json()
        listed = c.get("/api/v1/runs", params={"pipeline": "keyed"}).json()["runs"]
    assert literal.status_code == 422, literal.text
    problem = literal.json()["problems"][0]
    assert problem["field"] == "params.api_key"
    assert "is secret" in problem["message"]
    assert secret not in literal.text
    assert run["params"] == {"api_key": "${secret:SF_KEY}"}
    assert len(listed) == 1  # the refused one recorded nothing
    assert secret.encode() not in b"".join(
        p.read_bytes() for p in server.home.rglob("*") if p.is_file()
    )


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: Server) -> None:
    big = b'{"pipeline_id": "diamond", "parameters": {"x": "' + b"a" * (9 << 20) + b'"}}'

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for start in range(0, len(big), 1 << 20):
            yield big[start : start + (1 << 20)]

    with server.client(server.admin) as c:
        declared = c.post("/api/v1/runs", content=big)
        streamed = c.post("/api/v1/runs", content=chunks())
        listed = c.get("/api/v1/runs", params={"pipeline": "diamond"}).json()["runs"]
        small = c.post("/api/v1/runs", json={"pipeline_id": "diamond"})
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert "over the limit of 8,388,608 bytes" in answer.json()["error"]
    assert f"({len(big):,} bytes)" in declared.json()["error"]
    assert listed == []  # nothing was queued
    assert small.status_code == 202, small.text
    assert "Traceback" not in server.stderr("serve")
