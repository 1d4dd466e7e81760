"""The seeds' routes, as thin aliases of the ``/api/v1`` handlers (same checks, same
answers): seed 000's ``/workflows`` and ``/executions`` (a workflow is a pipeline,
an execution a run; ``{id}`` is the pipeline's name or the run's id) and seed 001's
``/monitoring``. They take the same bearer tokens.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from stageflow import operations as ops
from stageflow.operations.access import Identity
from stageflow.service.api import routes_ops, routes_pipelines, routes_runs
from stageflow.service.api.auth import identity, require

__all__ = ["router"]

router = APIRouter(tags=["seed aliases"])
Who = Annotated[Identity, Depends(identity)]


class Execute(BaseModel):
    """``POST /workflows/{id}/execute``'s optional body."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] = Field(default_factory=dict)
    triggered_by: str | None = Field(default=None, max_length=200)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)


@router.post(
    "/workflows",
    status_code=201,
    openapi_extra=routes_pipelines._SPEC_BODY,
    summary="Alias of POST /api/v1/pipelines",
)
async def create_workflow(request: Request, who: Who) -> JSONResponse:
    return await routes_pipelines.create_pipeline(request, who)


@router.get("/workflows", summary="Alias of GET /api/v1/pipelines")
def list_workflows(
    request: Request,
    who: Who,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    return routes_pipelines.list_pipelines(request, who, limit=limit, offset=offset)


@router.get("/workflows/{workflow_id}", summary="Alias of GET /api/v1/pipelines/{name}")
def get_workflow(request: Request, who: Who, workflow_id: str) -> dict[str, Any]:
    return routes_pipelines.get_pipeline(request, who, workflow_id)


@router.delete("/workflows/{workflow_id}", summary="Alias of DELETE /api/v1/pipelines/{name}")
def delete_workflow(request: Request, who: Who, workflow_id: str) -> dict[str, Any]:
    return routes_pipelines.delete_pipeline(request, who, workflow_id)


@router.post(
    "/workflows/{workflow_id}/execute",
    status_code=202,
    summary="Alias of POST /api/v1/runs for this pipeline",
)
def execute_workflow(
    request: Request, who: Who, workflow_id: str, body: Execute | None = None
) -> JSONResponse:
    body = body or Execute()
    run = routes_runs.submit_run(
        request,
        who,
        routes_runs.RunRequest(
            pipeline_id=workflow_id,
            parameters=body.parameters,
            triggered_by=body.triggered_by,
            priority=body.priority,
        ),
    )
    return JSONResponse({**run, "execution_id": run["run_id"]}, status_code=202)


@router.get("/workflows/{workflow_id}/status", summary="The pipeline's latest run")
def workflow_status(request: Request, who: Who, workflow_id: str) -> dict[str, Any]:
    require(who, "read")
    ctx = request.app.state.ctx
    ops.owned_pipeline(ctx.store, workflow_id, owner=who.owner, see_all=who.is_admin)
    page = ops.list_runs(
        ctx.store,
        ops.RunFilter(
            pipeline=workflow_id, limit=1, owned_by=None if who.is_admin else (who.owner,)
        ),
        now=time.time(),
    )
    latest = page.runs[0] if page.runs else None
    return {
        "workflow_id": workflow_id,
        "status": latest.state if latest else "never_run",
        "latest_execution": latest.as_json() if latest else None,
    }


@router.get("/workflows/{workflow_id}/visualize", summary="Alias of .../graph?format=json")
def visualize_workflow(request: Request, who: Who, workflow_id: str) -> Response:
    return routes_pipelines.get_graph(request, who, workflow_id)


@router.get("/executions", summary="Alias of GET /api/v1/runs")
def list_executions(
    request: Request,
    who: Who,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    return routes_runs.list_runs(request, who, cursor=cursor, limit=limit)


@router.get("/executions/{execution_id}", summary="Alias of GET /api/v1/runs/{run_id}")
def get_execution(request: Request, who: Who, execution_id: str) -> dict[str, Any]:
    return routes_runs.get_run(request, who, execution_id)


@router.get(
    "/executions/{execution_id}/results", summary="Alias of GET /api/v1/runs/{run_id}/results"
)
def execution_results(request: Request, who: Who, execution_id: str) -> dict[str, Any]:
    return routes_runs.run_results(request, who, execution_id)


@router.get("/monitoring/metrics", summary="Alias of /metrics (Prometheus text)")
def monitoring_metrics(request: Request, who: Who) -> Response:
    require(who, "read")
    from stageflow.service.api.metrics import CONTENT_TYPE

    return Response(request.app.state.ctx.metrics.text(), media_type=CONTENT_TYPE)


@router.get("/monitoring/health/detailed", summary="Alias of /health/detailed")
def monitoring_health(request: Request, who: Who) -> JSONResponse:
    status, body = routes_ops.health_report(request)
    return JSONResponse(body, status_code=status)


@router.get("/monitoring/statistics", summary="Runs and tasks of each pipeline over N days")
def monitoring_statistics(
    request: Request, who: Who, days: Annotated[int, Query(ge=1, le=3650)] = 7
) -> dict[str, Any]:
    """``stageflow stats`` for every pipeline the caller may see."""
    require(who, "read")
    store = request.app.state.ctx.store
    now = time.time()
    out = []
    for summary in ops.list_pipelines(store):
        if ops.sees(who, summary.owner):
            out.append(ops.stats(store, summary.name, days=days, now=now).as_json())
    return {"days": days, "pipelines": out}
