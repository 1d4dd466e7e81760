"""The seeds' REST payloads as written, against a real ``stageflow serve``.

Seed 000's "Workflow Configuration" (``POST /workflows``) is refused: its one task
depends on ``other_task_id``, which names no task; the answer names the task, the
field and the fix. With that placeholder emptied it still lacks what its
``data_processing`` task processes (``parameters.source``); given a source, the
seed's ``/workflows`` and ``/executions`` routes follow it to the end (its resources
made small enough for the worker here).

Seed 001's "Create a new pipeline" body is saved as written (its owner kept); its
run body is refused, as the pipeline declares no ``experiment_name`` parameter; a
small pipeline that declares it runs that body, ``triggered_by`` kept. The
``/monitoring`` routes answer with a token only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_serve import Server, serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
#: The seeds' request bodies, copied as the seeds write them.
REQUESTS = FIXTURES / "requests"
SALES = ROOT / "examples" / "data" / "sales.csv"


def seed_000_workflow() -> dict[str, Any]:
    """Seed 000's "Workflow Configuration" JSON, as written (its placeholder
    dependency ``other_task_id`` included)."""
    data: dict[str, Any] = json.loads(
        (REQUESTS / "000_workflow_configuration_as_written.json").read_text()
    )
    return data


def seed_001_bodies() -> tuple[dict[str, Any], dict[str, Any]]:
    """Seed 001's "Create a new pipeline" and "Start pipeline execution" bodies."""
    create = json.loads((FIXTURES / "specs" / "seeds" / "001_create_pipeline.json").read_text())
    run = json.loads((REQUESTS / "001_start_pipeline_execution.json").read_text())
    return create, run


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving("sqlite", tmp_path_factory.mktemp("api-seeds")) as server:
        yield server


def test_seed_000_workflow_as_written_is_refused_naming_task_field_and_fix(
    server: Server,
) -> None:
    workflow = seed_000_workflow()
    assert workflow["name"] == "My Workflow"
    assert workflow["tasks"][0]["dependencies"] == ["other_task_id"]
    with server.client(server.admin) as c:
        r = c.post("/workflows", json=workflow)
        assert r.status_code == 422, r.text
        doc = r.json()
        assert doc["error"].startswith("pipeline 'My Workflow' is invalid (1 problem):")
        [problem] = doc["problems"]
        assert (problem["task"], problem["field"]) == ("unique_id", "upstream")
        assert "upstream task 'other_task_id' does not exist" in problem["message"]
        assert "add that task or fix the id" in problem["message"]
        # nothing was saved
        assert c.get("/workflows/My Workflow").status_code == 404


def test_seed_000_workflow_routes_once_it_has_something_to_process(server: Server) -> None:
    workflow = seed_000_workflow()
    workflow["tasks"][0]["dependencies"] = []
    with server.client(server.admin) as c:
        r = c.post("/workflows", json=workflow)
        assert r.status_code == 422, r.text
        [problem] = r.json()["problems"]
        assert (problem["task"], problem["field"]) == ("unique_id", "parameters.source")
        assert "set `source:`" in problem["message"]

        workflow["tasks"][0]["parameters"] = {"source": str(SALES)}
        # the seed asks for a GPU, 2 cores and 4 GiB: the one worker here may have
        # none of them (a run that fits no worker stays queued), so ask for little
        workflow["tasks"][0]["resources"] |= {"cpu_cores": 1, "memory_mb": 64, "gpu_count": 0}
        r = c.post("/workflows", json=workflow)
        assert r.status_code == 201, r.text
        assert (r.json()["name"], r.json()["tasks"], r.json()["created"]) == (
            "My Workflow",
            1,
            True,
        )
        assert c.get("/workflows/My Workflow/status").json() == {
            "workflow_id": "My Workflow",
            "status": "never_run",
            "latest_execution": None,
        }

        r = c.post("/workflows/My Workflow/execute")
        assert r.status_code == 202, r.text
        execution = r.json()
        run_id = execution["execution_id"]
        assert execution["run_id"] == run_id
        assert (execution["pipeline"], execution["state"]) == ("My Workflow", "queued")
        done = server.wait_run(server.admin, run_id, ("success", "failed"))
        assert done["state"] == "success", done

        status = c.get("/workflows/My Workflow/status").json()
        assert (status["status"], status["latest_execution"]["run_id"]) == ("success", run_id)
        listed = c.get("/executions").json()["runs"]
        assert run_id in [e["run_id"] for e in listed]
        detail = c.get(f"/executions/{run_id}").json()
        assert (detail["run_id"], detail["state"], detail["triggered_by"]) == (
            run_id,
            "success",
            "root",
        )
        assert detail["tasks"]["unique_id"]["state"] == "success"
        results = c.get(f"/executions/{run_id}/results").json()
        assert (results["pipeline"], results["state"]) == ("My Workflow", "success")
        assert results["tasks"]["unique_id"]["state"] == "success"
        assert results["tasks"]["unique_id"]["output"] is not None
        graph = c.get("/workflows/My Workflow/visualize")
        assert graph.status_code == 200, graph.text
        assert graph.json()["pipeline"] == "My Workflow"
        assert graph.json()["edges"] == []
        assert graph.json()["critical_path"] == ["unique_id"]


def test_seed_001_pipeline_saved_as_written(server: Server) -> None:
    create, _ = seed_001_bodies()
    editor = server.token("ds-editor", "editor", "ml-team")
    with server.client(editor) as c:  # the seed names an owner this token is not
        r = c.post("/api/v1/pipelines", json=create)
        assert r.status_code == 403, r.text
        assert [p["field"] for p in r.json()["problems"]] == ["owner"]
    with server.client(server.admin) as c:
        r = c.post("/api/v1/pipelines", json=create)
        assert r.status_code == 201, r.text
        assert r.json() | {"version": None} == {
            "name": "ml-training-pipeline",
            "version": None,
            "owner": "data-science-team",
            "created": True,
            "tasks": 3,
            "notes": [],
        }
        saved = c.get("/api/v1/pipelines/ml-training-pipeline").json()
        assert saved["owner"] == "data-science-team"
        graph = c.get("/api/v1/pipelines/ml-training-pipeline/graph").json()
        assert graph["critical_path"] == ["ingest-data", "validate-data", "train-model"]


def test_seed_001_run_body_on_the_seed_pipeline_names_the_undeclared_parameter(
    server: Server,
) -> None:
    create, run = seed_001_bodies()
    with server.client(server.admin) as c:
        c.post("/api/v1/pipelines", json=create)  # 201, or 200 when saved already
        body = run | {"pipeline_id": create["name"]}
        r = c.post("/api/v1/runs", json=body)
    assert r.status_code == 422, r.text
    [problem] = r.json()["problems"]
    assert (problem["task"], problem["field"]) == (None, "params.experiment_name")
    assert "declares no parameter 'experiment_name'" in problem["message"]
    assert "add it under `params:`" in problem["message"]


@pytest.fixture(scope="module")
def seed_run(server: Server) -> dict[str, Any]:
    """Seed 001's run body, on a small pipeline that declares its parameter."""
    _, run = seed_001_bodies()
    assert run["pipeline_id"] == "pipeline-uuid"
    small = {
        "name": "experiment",
        "owner": "data-science-team",
        "params": {"experiment_name": "default"},
        "tasks": [
            {
                "name": "announce",
                "operator": "notification",
                "parameters": {
                    "message": "experiment {params.experiment_name}",
                    "fail_on_error": False,
                },
            },
            {
                "name": "announce-again",
                "operator": "notification",
                "upstream_tasks": ["announce"],
                "parameters": {"message": "done", "fail_on_error": False},
            },
        ],
    }
    with server.client(server.admin) as c:
        r = c.post("/api/v1/pipelines", json=small)
        assert r.status_code == 201, r.text
        r = c.post("/api/v1/runs", json={**copy.deepcopy(run), "pipeline_id": "experiment"})
        assert r.status_code == 202, r.text
        queued = r.json()
    assert (queued["pipeline"], queued["state"]) == ("experiment", "queued")
    assert queued["status_url"] == f"/api/v1/runs/{queued['run_id']}"
    server.wait_run(server.admin, queued["run_id"], ("success", "failed"))
    return queued


def test_seed_001_run_body_runs_and_keeps_triggered_by(
    server: Server, seed_run: dict[str, Any]
) -> None:
    viewer = server.token("ds-viewer", "viewer", "data-science-team")
    with server.client(viewer) as c:
        r = c.get(f"/api/v1/runs/{seed_run['run_id']}")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["state"] == "success", doc
    assert doc["triggered_by"] == "data-scientist"
    assert doc["params"] == {"experiment_name": "baseline-model-v1"}
    assert doc["owner"] == "data-science-team"
    assert doc["version"] == seed_run["version"]
    assert {t: v["state"] for t, v in doc["tasks"].items()} == {
        "announce": "success",
        "announce-again": "success",
    }
    assert doc["critical_path"] == ["announce", "announce-again"]
    assert {a["task_id"] for a in doc["attempts"]} == {"announce", "announce-again"}
    assert all(a["state"] == "success" for a in doc["attempts"])


def test_seed_001_monitoring_routes(server: Server, seed_run: dict[str, Any]) -> None:
    with server.client() as c:
        for path in (
            "/monitoring/metrics",
            "/monitoring/health/detailed",
            "/monitoring/statistics?days=7",
        ):
            assert c.get(path).status_code == 401, path
    viewer = server.token("mon-viewer", "viewer", "data-science-team")
    with server.client(viewer) as c:
        metrics = c.get("/monitoring/metrics")
        health = c.get("/monitoring/health/detailed")
        stats = c.get("/monitoring/statistics", params={"days": 7})
        bad_days = c.get("/monitoring/statistics", params={"days": 0})
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert (
        'stageflow_http_requests_total{method="POST",route="/api/v1/runs",status="202"}'
        in metrics.text
    )

    assert health.status_code == 200, health.text
    body = health.json()
    assert (body["status"], body["failing"]) == ("ok", [])
    assert {k: v["status"] for k, v in body["checks"].items()} == {
        "database": "ok",
        "artifacts": "ok",
        "workers": "ok",
    }
    assert (body["checks"]["workers"]["alive"], body["checks"]["workers"]["wanted"]) == (1, 1)

    assert stats.status_code == 200, stats.text
    doc = stats.json()
    assert doc["days"] == 7
    # the viewer sees its owner's pipelines only
    by_name = {p["pipeline"]: p for p in doc["pipelines"]}
    assert set(by_name) == {"experiment", "ml-training-pipeline"}
    assert (by_name["experiment"]["runs"], by_name["experiment"]["runs_by_state"]) == (
        1,
        {"success": 1},
    )
    assert {t["task_id"]: t["successes"] for t in by_name["experiment"]["tasks"]} == {
        "announce": 1,
        "announce-again": 1,
    }
    assert by_name["ml-training-pipeline"]["runs"] == 0

    assert bad_days.status_code == 422
    assert [p["field"] for p in bad_days.json()["problems"]] == ["query.days"]
