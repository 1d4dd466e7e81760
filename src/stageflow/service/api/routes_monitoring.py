"""``/api/v1/monitoring``: metric history, export, current gauges, statistics, gates.

``GET /metrics?names=a,b&from=&to=``: the monitor's samples (``runtime.monitor``) in a
range (times: ISO 8601, ``now`` or relative, ``-1h``; default the last hour);
``GET /metrics/export?format=csv|json&from=&to=&names=``: the same as a CSV or JSON
file (seed 003's ``export_metrics``); ``GET /current``: the newest sample of each
metric, per host and of the store; ``GET /statistics?days=7[&pipeline=P]``: each
pipeline's reliability (``engine.reliability``), only the pipelines the caller may
see; ``GET /gates/{pipeline}?days=&min_success_rate=&max_recovery=&max_duration=``:
seed 002's quality gates (200 either way; ``passed`` says which). Every route needs
role viewer. A bad argument is answered 422 with the CLI's words and the field
(``{"error", "problems"}``); a pipeline the caller may not see reads as unknown.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from stageflow import operations as ops
from stageflow.errors import UsageError
from stageflow.operations.access import Identity
from stageflow.service.api.auth import identity, require

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/monitoring", tags=["monitoring"])
Who = Annotated[Identity, Depends(identity)]
_Time = Annotated[str | None, Query(max_length=64)]
_Names = Annotated[str, Query(max_length=2000, description="comma-separated metric names")]
_Days = Annotated[int, Query(ge=1, le=ops.monitoring.MAX_DAYS)]


@router.get("/metrics", summary="The monitor's samples in a time range")
def metric_history(
    request: Request,
    who: Who,
    names: _Names = "",
    start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
) -> Response:
    require(who, "read")
    try:
        found = _history(request, names, start, end)
    except UsageError as exc:
        return _refused(exc)
    return JSONResponse(found.as_json())


@router.get("/metrics/export", summary="The samples in a range as a CSV or JSON file")
def metric_export(
    request: Request,
    who: Who,
    format: Annotated[str, Query(max_length=16)] = "csv",
    names: _Names = "",
    start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
) -> Response:
    require(who, "read")
    try:
        ops.monitoring.check_format(format, ops.monitoring.EXPORT_FORMATS)
        found = _history(request, names, start, end)
        text = ops.export_text(found.samples, format)
    except UsageError as exc:
        return _refused(exc)
    media = "text/csv" if format == "csv" else "application/json"
    return Response(
        text,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="metrics.{format}"'},
    )


@router.get("/current", summary="The newest sample of each metric")
def current(request: Request, who: Who) -> dict[str, Any]:
    require(who, "read")
    ctx = request.app.state.ctx
    found = ops.current_metrics(ctx.store, time.time(), ctx.settings.sampling_interval_seconds)
    return found.as_json()


@router.get("/statistics", summary="Each pipeline's reliability over N days")
def statistics(
    request: Request,
    who: Who,
    days: _Days = 7,
    pipeline: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    require(who, "read")
    store = request.app.state.ctx.store
    try:
        if pipeline is not None:
            _check_visible(store, who, pipeline)
        reports = ops.pipeline_statistics(
            store,
            pipeline,
            days=days,
            now=time.time(),
            visible=lambda name: ops.sees(who, store.pipeline_owner(name)[1]),
        )
    except UsageError as exc:
        return _refused(exc)
    return JSONResponse({"days": days, "pipelines": [r.as_json() for r in reports]})


@router.get("/gates/{pipeline}", summary="Seed 002's quality gates of a pipeline")
def quality_gates(
    request: Request,
    who: Who,
    pipeline: str,
    days: _Days = 7,
    min_success_rate: Annotated[float, Query(ge=0, le=100)] = 95.0,
    max_recovery: Annotated[str, Query(max_length=32)] = "30m",
    max_duration: Annotated[str, Query(max_length=32)] = "4h",
) -> Response:
    require(who, "read")
    from stageflow.engine.reliability import Thresholds
    from stageflow.spec.times import parse_duration

    store = request.app.state.ctx.store
    try:
        thresholds = Thresholds(
            min_success_rate=min_success_rate,
            max_recovery_seconds=parse_duration(max_recovery, "max_recovery"),
            max_duration_seconds=parse_duration(max_duration, "max_duration"),
        )
        _check_visible(store, who, pipeline)
        report = ops.quality_gates(
            store, pipeline, days=days, now=time.time(), thresholds=thresholds
        )
    except UsageError as exc:
        return _refused(exc)
    return JSONResponse(report.as_json())


def _history(
    request: Request, names: str, start: str | None, end: str | None
) -> ops.MetricsHistory:
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    since, until = ops.time_range(start, end, time.time(), names=("from", "to"))
    return ops.metrics_history(request.app.state.ctx.store, wanted, since, until)


def _check_visible(store: Any, who: Identity, pipeline: str) -> None:
    """An unknown pipeline, or one of another owner: the same ``UsageError``."""
    ops.monitoring.check_pipeline(store, pipeline)
    if not ops.sees(who, store.pipeline_owner(pipeline)[1]):
        raise UsageError(
            f"pipeline '{pipeline}' is not in the store; `GET /api/v1/pipelines` lists "
            "the pipelines you may see",
            pipeline=pipeline,
            field="pipeline",
        )


def _refused(exc: UsageError) -> JSONResponse:
    from stageflow.service.api.app import error_body

    return JSONResponse(error_body(exc), status_code=422)
