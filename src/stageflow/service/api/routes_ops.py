"""Operations: ``/health`` (and ``/health/detailed``), ``/metrics`` (Prometheus).

``/health`` answers 200 ``ok`` when the store answers, the artifact store is
writable and the supervised workers (``stageflow serve``) are all alive; 200
``degraded`` naming the failing check when the store answers but something else
fails; 503 when the store does not answer (a load balancer takes this server out).
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from stageflow import operations as ops
from stageflow.errors import StageflowError
from stageflow.service.api.auth import identity
from stageflow.service.api.metrics import CONTENT_TYPE

__all__ = ["health_report", "router"]


def health_report(request: Request) -> tuple[int, dict[str, Any]]:
    """(status, body) of ``/health``: each check ``ok`` or why not."""
    ctx = request.app.state.ctx
    checks: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    try:
        ctx.store.run_counts()
        checks["database"] = {
            "status": "ok",
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }
    except StageflowError as exc:
        checks["database"] = {"status": "failing", "error": str(exc)}
    where, why = ops.artifacts_problem(ctx.settings)
    checks["artifacts"] = (
        {"status": "ok", "path": where} if why is None else {"status": "failing", "error": why}
    )
    if ctx.workers is not None:
        alive, wanted = ctx.workers()
        checks["workers"] = {
            "status": "ok" if alive >= wanted else "failing",
            "alive": alive,
            "wanted": wanted,
        }
    failing = [name for name, c in checks.items() if c["status"] != "ok"]
    if "database" in failing:
        status, overall = 503, "failing"
    else:
        status, overall = 200, ("degraded" if failing else "ok")
    body = {
        "status": overall,
        "failing": failing,
        "checks": checks,
        "uptime_s": round(time.time() - ctx.started_at, 1),
        "pid": os.getpid(),
    }
    return status, body


def router(open_metrics: bool = True) -> APIRouter:
    """The operations routes; ``open_metrics`` false puts ``/metrics`` behind a token."""
    routes = APIRouter(tags=["operations"])
    guard: list[Any] = [] if open_metrics else [Depends(identity)]

    @routes.get("/health", summary="Health: database, artifact store, workers")
    def health(request: Request) -> JSONResponse:
        status, body = health_report(request)
        return JSONResponse(body, status_code=status)

    @routes.get("/health/detailed", summary="Health with every check's detail")
    def health_detailed(request: Request) -> JSONResponse:
        status, body = health_report(request)
        return JSONResponse(body, status_code=status)

    @routes.get("/metrics", summary="Prometheus metrics", dependencies=guard)
    def metrics(request: Request) -> Response:
        return Response(request.app.state.ctx.metrics.text(), media_type=CONTENT_TYPE)

    return routes
