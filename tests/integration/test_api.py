"""The REST API against a real ``stageflow serve`` (and its supervised worker), on
SQLite and on PostgreSQL: pipelines, runs to their end, control, approvals, logs,
results, listing, errors as 4xx JSON, authentication, metrics, the audit log, and a
``serve`` killed with -9 mid-run."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_places import kill_group
from helpers_serve import Server, serving

pytestmark = pytest.mark.slow

HELLO_YAML = """\
name: hello
params:
  who: world
tasks:
  - id: greet
    operator: bash
    parameters: {command: "echo hello ${params.who}"}
  - id: shout
    operator: bash
    upstream: [greet]
    parameters: {command: "echo done"}
"""

SLOW = {
    "name": "slow",
    "tasks": [{"id": "nap", "operator": "bash", "parameters": {"command": "sleep 30"}}],
}

GATED = {
    "name": "gated",
    "tasks": [
        {"id": "prepare", "operator": "bash", "parameters": {"command": "echo ready"}},
        {
            "id": "deploy",
            "operator": "bash",
            "upstream": ["prepare"],
            "parameters": {"command": "echo deployed"},
            "approval": {"approvers": ["alice"]},
        },
    ],
}


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with serving(request.param, tmp_path) as s:
        yield s


def save_yaml(server: Server, text: str) -> Any:
    with server.client(server.admin) as c:
        r = c.post("/api/v1/pipelines", content=text, headers={"Content-Type": "application/yaml"})
    assert r.status_code in (200, 201), r.text
    return r.json()


def submit(server: Server, pipeline: str, **body: Any) -> str:
    with server.client(server.admin) as c:
        r = c.post("/api/v1/runs", json={"pipeline_id": pipeline, **body})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


def test_a_pipeline_saved_as_yaml_runs_to_success_on_the_supervised_worker(
    server: Server,
) -> None:
    saved = save_yaml(server, HELLO_YAML)
    assert saved["name"] == "hello" and saved["created"] is True and saved["tasks"] == 2
    assert save_yaml(server, HELLO_YAML)["created"] is False  # the same spec: same version
    changed = save_yaml(server, HELLO_YAML.replace("echo done", "echo finished"))
    assert changed["created"] is True and changed["version"] != saved["version"]

    run_id = submit(server, "hello", parameters={"who": "api"}, triggered_by="data-scientist")
    doc = server.wait_run(server.admin, run_id, ("success", "failed"))
    assert doc["state"] == "success"
    assert doc["triggered_by"] == "data-scientist"
    assert doc["params"] == {"who": "api"}
    assert doc["version"] == changed["version"]
    assert {t: v["state"] for t, v in doc["tasks"].items()} == {
        "greet": "success",
        "shout": "success",
    }
    assert [(a["task_id"], a["attempt"], a["state"]) for a in doc["attempts"]] == [
        ("greet", 1, "success"),
        ("shout", 1, "success"),
    ]
    with server.client(server.admin) as c:
        logs = c.get(f"/api/v1/runs/{run_id}/tasks/greet/logs")
        assert logs.status_code == 200
        assert logs.text == "== attempt 1 ==\nhello api\n"
        results = c.get(f"/api/v1/runs/{run_id}/results").json()
        assert results["state"] == "success"
        assert set(results["tasks"]) == {"greet", "shout"}
        assert results["tasks"]["greet"]["output"]["serializer"] == "json"
        versions = c.get("/api/v1/pipelines/hello/versions").json()["versions"]
        assert [v["version"] for v in versions] == [changed["version"], saved["version"]]
        assert [v["runs"] for v in versions] == [1, 0]
        old = c.get("/api/v1/pipelines/hello", params={"version": saved["version"]}).json()
        assert old["spec"]["tasks"][1]["parameters"]["command"] == "echo done"


def test_runs_are_listed_newest_first_with_filters_and_cursor_pages(server: Server) -> None:
    save_yaml(server, HELLO_YAML)
    ids = [submit(server, "hello", triggered_by=f"who-{i % 2}") for i in range(5)]
    for run_id in ids:
        server.wait_run(server.admin, run_id, ("success",))
    with server.client(server.admin) as c:
        seen, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2, "pipeline": "hello"}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/api/v1/runs", params=params).json()
            seen += [r["run_id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]
        mine = c.get("/api/v1/runs", params={"triggered_by": "who-1"}).json()["runs"]
        assert [r["run_id"] for r in mine] == [ids[3], ids[1]]
        none = c.get("/api/v1/runs", params={"state": "failed"}).json()["runs"]
        assert none == []
        bad = c.get("/api/v1/runs", params={"state": "done"})
        assert bad.status_code == 400
        assert "done" in bad.json()["error"]


def test_a_cancel_over_the_api_reaches_the_worker_running_the_run(server: Server) -> None:
    asks_a_cpu = {"name": "slow", "tasks": [{**SLOW["tasks"][0], "resources": {"cpu": 1}}]}
    with server.client(server.admin) as c:
        assert c.post("/api/v1/pipelines", json=asks_a_cpu).status_code == 201
    run_id = submit(server, "slow")
    server.wait_run(server.admin, run_id, ("running",))
    # /metrics: the running attempt holds the CPU it asked for.
    deadline = time.monotonic() + 30
    with server.client() as c:
        while 'stageflow_capacity_in_use{resource="cpu"} 1.0' not in c.get("/metrics").text:
            assert time.monotonic() < deadline, "the running attempt's CPU never showed"
            time.sleep(0.05)
        assert 'stageflow_tasks_active{state="running"} 1.0' in c.get("/metrics").text
    with server.client(server.admin) as c:
        r = c.post(f"/api/v1/runs/{run_id}/cancel")
        assert r.status_code == 200, r.text
        assert r.json()["by"] == "root"
    doc = server.wait_run(server.admin, run_id, ("cancelled", "success", "failed"), timeout=30)
    assert doc["state"] == "cancelled"
    assert doc["tasks"]["nap"]["state"] == "cancelled"
    with server.client(server.admin) as c:
        again = c.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert "cancelled" in again.json()["error"]


def test_an_approval_gate_takes_the_token_s_name_as_the_approver(server: Server) -> None:
    with server.client(server.admin) as c:
        assert c.post("/api/v1/pipelines", json=GATED).status_code == 201
    bob = server.token("bob", "operator")
    alice = server.token("alice", "operator")
    run_id = submit(server, "gated")
    deadline = time.monotonic() + 60
    with server.client(server.admin) as c:
        while c.get(f"/api/v1/runs/{run_id}").json()["tasks"]["deploy"]["state"] != (
            "awaiting_approval"
        ):
            assert time.monotonic() < deadline, "deploy never awaited approval"
            time.sleep(0.05)
    with server.client(bob) as c:
        refused = c.post(f"/api/v1/runs/{run_id}/tasks/deploy/approve", json={"comment": "ok"})
    assert refused.status_code == 409
    assert "bob" in refused.json()["error"] and "alice" in refused.json()["error"]
    with server.client(alice) as c:
        r = c.post(f"/api/v1/runs/{run_id}/tasks/deploy/approve", json={"comment": "ship it"})
    assert r.status_code == 200, r.text
    assert r.json()["by"] == "alice"
    doc = server.wait_run(server.admin, run_id, ("success", "failed"))
    assert doc["state"] == "success"


def test_every_client_mistake_is_a_4xx_json_answer(server: Server) -> None:
    with server.client(server.admin) as c:
        cases = {
            "malformed json": c.post(
                "/api/v1/pipelines",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            ),
            "unknown operator": c.post(
                "/api/v1/pipelines", json={"name": "x", "tasks": [{"id": "a", "operator": "nope"}]}
            ),
            "a cycle": c.post(
                "/api/v1/pipelines",
                json={
                    "name": "x",
                    "tasks": [
                        {
                            "id": "a",
                            "operator": "bash",
                            "upstream": ["b"],
                            "parameters": {"command": "x"},
                        },
                        {
                            "id": "b",
                            "operator": "bash",
                            "upstream": ["a"],
                            "parameters": {"command": "x"},
                        },
                    ],
                },
            ),
            "python tag in yaml": c.post(
                "/api/v1/pipelines",
                content=b"name: x\ntasks: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
                headers={"Content-Type": "application/yaml"},
            ),
            "a file template": c.post(
                "/api/v1/pipelines",
                json={"name": "x", "tasks": [{"id": "g", "use": "../../etc/passwd.yaml"}]},
            ),
            "unknown pipeline": c.post("/api/v1/runs", json={"pipeline_id": "absent"}),
            "bad body field": c.post("/api/v1/runs", json={"pipeline": "hello"}),
            "bad priority": c.post("/api/v1/runs", json={"pipeline_id": "x", "priority": 10**9}),
            "malformed run id": c.get("/api/v1/runs/not a run id"),
            "unknown run": c.get("/api/v1/runs/20260101-000000-abcdef"),
            "unknown route": c.get("/api/v1/nothing"),
            "wrong method": c.put("/api/v1/runs"),
            "too large": c.post("/api/v1/pipelines", content=b"x" * (9 * 1024 * 1024)),
        }
    expected = {
        "malformed json": 422,
        "unknown operator": 422,
        "a cycle": 422,
        "python tag in yaml": 422,
        "a file template": 422,
        "unknown pipeline": 404,
        "bad body field": 422,
        "bad priority": 422,
        "malformed run id": 400,
        "unknown run": 404,
        "unknown route": 404,
        "wrong method": 405,
        "too large": 413,
    }
    assert {k: r.status_code for k, r in cases.items()} == expected
    for name, r in cases.items():
        body = r.json()
        assert body["error"], name
        assert all(p["message"] for p in body["problems"]), name
    assert "'nope'" in cases["unknown operator"].json()["problems"][0]["message"]
    assert cases["unknown operator"].json()["problems"][0]["task"] == "a"
    assert "cycle" in cases["a cycle"].json()["error"]
    assert "saved pipelines only" in cases["a file template"].json()["error"]
    assert not Path("/tmp/pwned").exists()
    assert "pipeline_id" in cases["bad body field"].json()["error"]


def test_the_api_process_never_imports_a_call_target_its_worker_does(tmp_path: Path) -> None:
    # The module is importable by both processes (PYTHONPATH): only the worker may import it.
    code = tmp_path / "code"
    code.mkdir()
    marker = tmp_path / "imported-by"
    (code / "sf_marker_mod.py").write_text(
        "import os, pathlib\n"
        f"pathlib.Path({str(marker)!r}).open('a').write(f'{{os.getpid()}}\\n')\n"
        "def f():\n    return 42\n"
    )
    spec = {"name": "calls", "tasks": [{"id": "c", "call": "sf_marker_mod:f"}]}
    with serving("sqlite", tmp_path / "place", PYTHONPATH=str(code)) as server:
        with server.client(server.admin) as c:
            saved = c.post("/api/v1/pipelines", json=spec)
            assert saved.status_code == 201, saved.text
            checked = c.post("/api/v1/pipelines/validate", json=spec)
            assert checked.status_code == 200 and checked.json()["code_tasks"] == ["c"]
        assert not marker.exists()  # saved and validated without importing it
        run_id = submit(server, "calls")
        doc = server.wait_run(server.admin, run_id, ("success", "failed"))
        assert doc["state"] == "success", doc
        with server.client(server.admin) as c:
            output = c.get(f"/api/v1/runs/{run_id}/results").json()["tasks"]["c"]["output"]
        assert output["serializer"] == "json" and output["size"] == 2  # b"42"
        importers = {int(line) for line in marker.read_text().split()}
        assert server.procs[0].pid not in importers and len(importers) == 1


def test_tokens_are_checked_and_failures_are_limited_per_client(server: Server) -> None:
    with server.client() as c:
        assert c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 200
        missing = c.get("/api/v1/runs")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in missing.json()["error"]
    for i in range(4):  # with the one without a token: 5 failures
        with server.client(f"sft_{'0' * 12}_{'x' * 43}") as c:
            assert c.get("/api/v1/runs").status_code == 401, i
    with server.client() as c:  # 5 more, anonymous and mutating: each one audited
        for i in range(5):
            assert c.post("/api/v1/runs", json={"pipeline_id": "x"}).status_code == 401, i
        flood = [c.post("/api/v1/runs", json={"pipeline_id": "x"}).status_code for _ in range(20)]
    assert flood == [429] * 20
    with server.client(server.admin) as c:  # the right token, same address: wait a minute
        limited = c.get("/api/v1/runs")
    assert limited.status_code == 429
    assert "try again in" in limited.json()["error"]
    r = server.cli("audit", "--format", "json", "--limit", "100")
    entries = [(e["actor"], e["status"]) for e in json.loads(r.stdout)["entries"]]
    assert entries == [("anonymous", 401)] * 5  # the refused flood left no entry


def test_revoked_tokens_stop_working_and_everything_mutating_is_audited(server: Server) -> None:
    with server.client(server.admin) as c:
        made = c.post("/api/v1/tokens", json={"name": "ci", "role": "viewer", "owner": "ml"})
        assert made.status_code == 201
        token = made.json()["token"]
        assert made.json()["role"] == "viewer" and made.json()["owner"] == "ml"
        listed = c.get("/api/v1/tokens").json()["tokens"]
        assert [t["name"] for t in listed] == ["root", "ci"]
        assert all("token" not in t and "secret_sha256" not in t for t in listed)
    with server.client(token) as c:
        assert c.get("/api/v1/me").json() == {
            "name": "ci",
            "role": "viewer",
            "owner": "ml",
            "via": "token",
        }
        assert c.post("/api/v1/runs", json={"pipeline_id": "x"}).status_code == 403
    with server.client(server.admin) as c:
        assert c.delete("/api/v1/tokens/ci").status_code == 200
    with server.client(token) as c:
        assert c.get("/api/v1/me").status_code == 401
    r = server.cli("audit", "--format", "json")
    assert r.returncode == 0, r.stderr
    entries = [
        (e["actor"], e["action"], e["status"])
        for e in __import__("json").loads(r.stdout)["entries"]
    ]
    assert entries == [
        ("root", "DELETE /api/v1/tokens/{name}", 200),
        ("ci", "POST /api/v1/runs", 403),
        ("root", "POST /api/v1/tokens", 201),
    ]


def test_metrics_count_requests_and_runs_by_pipeline_and_state(server: Server) -> None:
    save_yaml(server, HELLO_YAML)
    run_id = submit(server, "hello")
    server.wait_run(server.admin, run_id, ("success",))
    with server.client() as c:
        text = c.get("/metrics").text
    assert 'stageflow_runs{pipeline="hello",state="success"} 1.0' in text
    assert (
        'stageflow_http_requests_total{method="POST",route="/api/v1/runs",status="202"} 1.0' in text
    )
    assert "stageflow_http_request_duration_seconds_bucket" in text
    assert "stageflow_runs_queued 0.0" in text
    assert "stageflow_queue_oldest_wait_seconds 0.0" in text  # nothing waits
    assert 'stageflow_run_duration_seconds_count{pipeline="hello"} 1.0' in text
    assert 'stageflow_run_duration_seconds_bucket{le="+Inf",pipeline="hello"} 1.0' in text
    assert "stageflow_runs_lease_expired 0.0" in text
    assert "stageflow_lease_takeovers_total{" not in text  # no run was taken over
    assert "# TYPE stageflow_tasks_active gauge" in text
    assert 'stageflow_task_runs{pipeline="hello",state="success"} 2.0' in text
    for task in ("greet", "shout"):
        assert (
            f'stageflow_task_duration_seconds_count{{pipeline="hello",task="{task}"}} 1.0' in text
        )
    assert 'stageflow_task_queue_wait_seconds_count{pipeline="hello"} 2.0' in text
    assert 'stageflow_run_claim_latency_seconds_count{pipeline="hello"} 1.0' in text
    # serve's one worker says it is alive, with this machine's CPUs; nothing runs now.
    assert "stageflow_workers 1.0" in text
    cpus = float(len(os.sched_getaffinity(0)))
    assert f'stageflow_capacity{{resource="cpu"}} {cpus}' in text
    assert 'stageflow_capacity_in_use{resource="cpu"} 0.0' in text


def test_serve_killed_mid_run_comes_back_and_the_run_completes(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path, STAGEFLOW_LEASE_SECONDS="3") as server:
        spec = {
            "name": "two-steps",
            "tasks": [
                {"id": "first", "operator": "bash", "parameters": {"command": "echo one"}},
                {
                    "id": "second",
                    "operator": "bash",
                    "upstream": ["first"],
                    "parameters": {"command": "sleep 2; echo two"},
                },
            ],
        }
        with server.client(server.admin) as c:
            assert c.post("/api/v1/pipelines", json=spec).status_code == 201
        run_id = submit(server, "two-steps")
        deadline = time.monotonic() + 60
        with server.client(server.admin) as c:
            while c.get(f"/api/v1/runs/{run_id}").json()["tasks"]["second"]["state"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        kill_group(server.procs[0])  # serve and its worker, at once
        server.start_serve(name="serve-again", STAGEFLOW_LEASE_SECONDS="3")
        doc = server.wait_run(server.admin, run_id, ("success", "failed"), timeout=60)
        assert doc["state"] == "success"
        assert doc["tasks"]["first"]["attempts"] == 1  # its committed success was kept
        assert doc["tasks"]["second"]["state"] == "success"
        with server.client() as c:
            text = c.get("/metrics").text
        assert 'stageflow_lease_takeovers_total{pipeline="two-steps"} 1.0' in text


def test_sigterm_stops_serve_and_drains_its_workers(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path, "--workers", "2") as server:
        with server.client() as c:
            assert c.get("/health").json()["checks"]["workers"] == {
                "status": "ok",
                "alive": 2,
                "wanted": 2,
            }
        deadline = time.monotonic() + 60
        while server.stderr("serve").count(" ready: ") < 2:  # their handlers are set
            assert time.monotonic() < deadline, server.stderr("serve")
            time.sleep(0.05)
        proc = server.procs[0]
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        err = server.stderr("serve")
        assert "stopping the workers (they drain)" in err
        assert err.count("SIGTERM: draining") == 2
        assert err.rstrip().endswith("stopped")


def test_reports_usage_diff_lineage_stats_and_cost(server: Server) -> None:
    save_yaml(server, HELLO_YAML)
    a = submit(server, "hello", parameters={"who": "a"})
    b = submit(server, "hello", parameters={"who": "b"})
    for run_id in (a, b):
        server.wait_run(server.admin, run_id, ("success",))
    with server.client(server.admin) as c:
        usage = c.get(f"/api/v1/runs/{a}/usage").json()
        assert [u["task_id"] for u in usage["usage"]] == ["greet", "shout"]
        assert [s["task_id"] for s in usage["critical_path"]] == ["greet", "shout"]
        diff = c.get(f"/api/v1/runs/{a}/diff/{b}").json()
        assert diff["changes"]["params"] == {"who": {"a": "a", "b": "b"}}
        lineage = c.get(f"/api/v1/runs/{b}/lineage/shout")
        assert lineage.status_code == 200, lineage.text
        assert lineage.json()["run_id"] == b
        stats = c.get("/api/v1/pipelines/hello/stats", params={"days": 1}).json()
        assert stats["runs"] == 2 and stats["runs_by_state"] == {"success": 2}
        assert [t["task_id"] for t in stats["tasks"]] == ["greet", "shout"]
        cost = c.get("/api/v1/cost", params={"days": 1})
        assert cost.status_code == 200 and cost.json()["days"] == 1
        assert c.get(f"/api/v1/runs/{a}/lineage/nope").status_code == 400


def test_the_database_going_away_is_a_503_and_the_service_recovers(tmp_path: Path) -> None:
    """PostgreSQL behind a proxy the test cuts: /health and a mutating route answer 503
    with the reason while it is away, and the same serve works again once it is back."""
    from urllib.parse import urlsplit, urlunsplit

    from support.postgres import postgres_schema, require_postgres
    from support.proxy import Proxy

    require_postgres()
    with postgres_schema() as url:
        parts = urlsplit(url)
        proxy = Proxy(parts.port or 5432, parts.hostname or "127.0.0.1")
        netloc = parts.netloc.replace(f":{parts.port}", f":{proxy.port}")
        server = Server(tmp_path, urlunsplit(parts._replace(netloc=netloc)))
        try:
            server.admin = server.token("root", "admin")
            server.start_serve("--workers", "0")
            with server.client(server.admin) as c:
                assert c.get("/health").status_code == 200
                proxy.cut()
                deadline = time.monotonic() + 30
                while (health := c.get("/health")).status_code != 503:
                    assert time.monotonic() < deadline, health.text
                    time.sleep(0.1)
                body = health.json()
                assert body["status"] == "failing" and body["failing"] == ["database"]
                refused = c.post("/api/v1/pipelines", json=SLOW)
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]  # the reason, not a traceback
                proxy.restore()
                deadline = time.monotonic() + 60
                while c.get("/health").status_code != 200:
                    assert time.monotonic() < deadline, "serve never got its database back"
                    time.sleep(0.2)
                assert c.post("/api/v1/pipelines", json=SLOW).status_code == 201
            assert "Traceback" not in server.stderr("serve")
        finally:
            server.stop_all()
            proxy.close()


def sse(text: str) -> list[dict[str, str]]:
    """The frames of a ``text/event-stream`` body (comments left out)."""
    frames = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            frames.append(fields)
    return frames


def test_a_run_s_events_stream_until_it_ends_and_resume_after_an_id(server: Server) -> None:
    save_yaml(server, HELLO_YAML)
    run_id = submit(server, "hello")
    with server.client(server.admin) as c:
        with c.stream("GET", f"/api/v1/runs/{run_id}/events") as r:  # follows: ends with it
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            frames = sse(r.read().decode())
        assert frames[-1]["event"] == "end"
        assert json.loads(frames[-1]["data"]) == {"run_id": run_id, "state": "success"}
        changes = [json.loads(f["data"]) for f in frames[:-1]]
        runs = [(e["from"], e["to"]) for e in changes if e["task_id"] is None]
        assert runs == [("queued", "running"), ("running", "success")]
        greet = [e["to"] for e in changes if e["task_id"] == "greet"]
        assert greet == ["queued", "running", "success"]
        assert [f["id"] for f in frames[:-1]] == [e["id"] for e in changes]
        # Resume after the third event: exactly the rest, without a repeat.
        third = frames[2]["id"]
        again = c.get(
            f"/api/v1/runs/{run_id}/events",
            params={"follow": "false"},
            headers={"Last-Event-ID": third},
        )
        rest = [f["id"] for f in sse(again.text) if f.get("event") != "end"]
        assert rest == [f["id"] for f in frames[3:-1]]
        bad = c.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400 and bad.json()["problems"][0]["field"] == "Last-Event-ID"


def test_a_task_s_log_follows_while_it_runs(server: Server) -> None:
    spec = {
        "name": "talks",
        "tasks": [
            {
                "id": "talk",
                "operator": "bash",
                "parameters": {"command": "echo one; sleep 1.5; echo two"},
            }
        ],
    }
    with server.client(server.admin) as c:
        assert c.post("/api/v1/pipelines", json=spec).status_code == 201
    run_id = submit(server, "talks")
    server.wait_run(server.admin, run_id, ("running",))
    with server.client(server.admin) as c:
        pieces = []
        with c.stream(
            "GET", f"/api/v1/runs/{run_id}/tasks/talk/logs", params={"follow": "true"}
        ) as r:
            for chunk in r.iter_text():
                pieces.append(chunk)
    assert "".join(pieces) == "== attempt 1 ==\none\ntwo\n"
    assert len(pieces) >= 2  # "one" came before the task ended, "two" later


def test_a_non_admin_may_name_files_under_the_data_roots_only(server: Server) -> None:
    editor = server.token("ed", "editor")

    def spec(source: str) -> dict[str, Any]:
        return {
            "name": "reads",
            "tasks": [
                {"id": "load", "operator": "data_ingestion", "parameters": {"source": source}}
            ],
        }

    with server.client(editor) as c:
        refused = c.post("/api/v1/pipelines", json=spec("/etc/passwd"))
        assert refused.status_code == 403
        [problem] = refused.json()["problems"]
        assert (problem["task"], problem["field"]) == ("load", "parameters.source")
        assert "outside the data roots" in problem["message"]
        climbs = c.post("/api/v1/pipelines", json=spec("../../etc/passwd"))
        assert climbs.status_code == 403 and "climbs out" in climbs.json()["error"]
        inside = c.post("/api/v1/pipelines", json=spec(str(server.home.absolute() / "data/x.csv")))
        assert inside.status_code == 201, inside.text
    with server.client(server.admin) as c:  # an admin may name any file
        assert c.post("/api/v1/pipelines", json=spec("/etc/hosts")).status_code == 201


def test_retry_over_the_api_runs_the_failed_tasks_again_on_a_worker(
    server: Server, tmp_path: Path
) -> None:
    ok = tmp_path / "ok"  # train fails until it exists
    flaky = {
        "name": "flaky",
        "tasks": [
            {"id": "prepare", "operator": "bash", "parameters": {"command": "echo ready"}},
            {
                "id": "train",
                "operator": "bash",
                "upstream": ["prepare"],
                "parameters": {"command": f"test -e {ok} || {{ echo not yet; exit 3; }}"},
            },
            {
                "id": "report",
                "operator": "bash",
                "upstream": ["train"],
                "parameters": {"command": "echo r"},
            },
        ],
    }
    with server.client(server.admin) as c:
        assert c.post("/api/v1/pipelines", json=flaky).status_code == 201
    run_id = submit(server, "flaky")
    first = server.wait_run(server.admin, run_id, ("failed", "success"))
    assert {t: v["state"] for t, v in first["tasks"].items()} == {
        "prepare": "success",
        "train": "failed",
        "report": "upstream_failed",
    }
    with server.client(server.admin) as c:
        refused = c.post(f"/api/v1/runs/{run_id}/retry", json={"from_task": "nope"})
        assert refused.status_code == 400 and "'nope'" in refused.json()["error"]
        ok.touch()
        again = c.post(f"/api/v1/runs/{run_id}/retry")
        assert again.status_code == 200, again.text
        assert again.json()["request"] == "retry" and again.json()["by"] == "root"
        done = server.wait_run(server.admin, run_id, ("success", "failed"))
        assert done["state"] == "success"
        assert [done["tasks"][t]["attempts"] for t in ("prepare", "train", "report")] == [1, 2, 1]
        twice = c.post(f"/api/v1/runs/{run_id}/retry")
        assert twice.status_code == 409 and "succeeded" in twice.json()["error"]
        ok.unlink()
        from_train = c.post(f"/api/v1/runs/{run_id}/retry", json={"from_task": "train"})
        assert from_train.status_code == 200, from_train.text
        last = server.wait_run(server.admin, run_id, ("success", "failed"))
    assert last["state"] == "failed"  # train ran again (without `ok`) and so report did not
    assert [last["tasks"][t]["attempts"] for t in ("prepare", "train", "report")] == [1, 3, 1]
    assert last["tasks"]["report"]["state"] == "upstream_failed"


def test_a_run_s_files_download_and_no_path_leads_out(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path, STAGEFLOW_INLINE_OUTPUT_BYTES="1") as server:
        save_yaml(server, HELLO_YAML)  # outputs over 1 byte are files
        run_id = submit(server, "hello", parameters={"who": "files"})
        server.wait_run(server.admin, run_id, ("success",))
        with server.client(server.admin) as c:
            output = c.get(f"/api/v1/runs/{run_id}/results").json()["tasks"]["greet"]["output"]
            assert output["kind"] == "file"
            assert output["download"] == f"/api/v1/runs/{run_id}/artifacts/outputs/greet/attempt-1"
            got = c.get(output["download"])
            assert got.status_code == 200
            assert json.loads(got.content) == "hello files"  # the output, as stored (JSON)
            assert got.headers["content-disposition"] == 'attachment; filename="attempt-1"'
            refused = {
                path: c.get(f"/api/v1/runs/{run_id}/artifacts/{path}").status_code
                for path in (
                    "outputs/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                    "outputs/greet/..%2F..%2F..%2Fstageflow.db",
                    "logs/greet/attempt-1.log",
                    "%2Fetc%2Fpasswd",
                    "files/greet/nothing-here",
                )
            }
        assert refused == {
            "outputs/%2e%2e/%2e%2e/%2e%2e/etc/passwd": 400,
            "outputs/greet/..%2F..%2F..%2Fstageflow.db": 400,
            "logs/greet/attempt-1.log": 400,
            "%2Fetc%2Fpasswd": 400,
            "files/greet/nothing-here": 404,
        }
