"""``/api/v1/schedules``: add (or change), list, show, pause, resume, delete, trigger.

A schedule belongs to its pipeline's owner; a non-admin sees and changes only its
owner's schedules, may schedule only its owner's pipelines, and gets 404 for another
owner's schedule, as for one that does not exist (``operations.schedules``). Reading
needs role viewer; pausing, resuming and triggering operator; adding and deleting
editor. Scheduling or triggering a pipeline that runs arbitrary code needs admin, as
submitting it does. A mistake in a schedule is answered with the CLI's message and
the field it concerns: 400 for a bad value (a cron expression, a time zone, an
interval), 404 for a pipeline the caller has not got, 409 for a name another owner
holds, 422 for a parameter the pipeline does not declare or a body the schema refuses.
A manual trigger's run has ``triggered_by`` ``schedule:NAME (manual by TOKEN)``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stageflow import operations as ops
from stageflow.operations.access import Identity
from stageflow.service.api.auth import identity, require
from stageflow.service.api.routes_pipelines import check_code
from stageflow.spec.models import Pipeline

__all__ = ["ScheduleRequest", "TriggerRequest", "router"]

router = APIRouter(prefix="/api/v1", tags=["schedules"])
Who = Annotated[Identity, Depends(identity)]


class ScheduleRequest(BaseModel):
    """A schedule, as ``stageflow schedules add`` takes it: exactly one of ``cron``
    (with ``timezone``), ``every`` (``90s``, ``10m``, ``2h``, ``1d`` or seconds) and
    ``at`` (ISO 8601); ``start``/``end`` (ISO 8601) bound it; ``params`` are the runs'
    parameters; ``max_active_runs`` holds ticks back while that many runs are
    unfinished; ``enabled: false`` creates it paused."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=100)
    pipeline: str = Field(max_length=300)
    cron: str | None = Field(default=None, max_length=200)
    every: str | None = Field(default=None, max_length=64)
    at: str | None = Field(default=None, max_length=64)
    timezone: str = Field(default="UTC", max_length=100)
    start: str | None = Field(default=None, max_length=64)
    end: str | None = Field(default=None, max_length=64)
    catchup: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    max_active_runs: int | None = Field(default=None, le=1_000_000)
    enabled: bool = True


class TriggerRequest(BaseModel):
    """Parameters on top of the schedule's own, for this run only."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] = Field(default_factory=dict)


@router.get("/schedules", summary="List schedules")
def list_schedules(request: Request, who: Who) -> dict[str, Any]:
    """The schedules the caller may see, by name, with when each fires next."""
    require(who, "read")
    found = ops.list_schedules(
        request.app.state.ctx.store, owner=who.owner, see_all=who.is_admin, now=time.time()
    )
    return {"schedules": [s.as_json() for s in found]}


@router.post("/schedules", status_code=201, summary="Add a schedule (or change one)")
def add_schedule(request: Request, who: Who, body: ScheduleRequest) -> JSONResponse:
    """201 with the schedule. A name the caller's owner holds already is changed (its
    last tick stays); a name another owner holds is a 409."""
    require(who, "edit")

    def check(pipeline: Pipeline) -> None:
        check_code(request, who, pipeline)

    info = ops.add_schedule(
        request.app.state.ctx.store,
        body.name,
        body.pipeline,
        owner=who.owner,
        see_all=who.is_admin,
        cron=body.cron,
        every=body.every,
        at=body.at,
        timezone=body.timezone,
        start=body.start,
        end=body.end,
        catchup=body.catchup,
        params=body.params,
        priority=body.priority,
        max_active_runs=body.max_active_runs,
        enabled=body.enabled,
        check_pipeline=check,
        now=time.time(),
    )
    return JSONResponse(info.as_json(), status_code=201)


@router.get("/schedules/{name}", summary="A schedule: its next 5 fire times and latest runs")
def get_schedule(request: Request, who: Who, name: str) -> dict[str, Any]:
    require(who, "read")
    info = ops.show_schedule(
        request.app.state.ctx.store, name, owner=who.owner, see_all=who.is_admin, now=time.time()
    )
    return info.as_json()


@router.post("/schedules/{name}/pause", summary="Pause a schedule: it fires nothing")
def pause_schedule(request: Request, who: Who, name: str) -> dict[str, Any]:
    require(who, "operate")
    info = ops.set_schedule_enabled(
        request.app.state.ctx.store, name, False, owner=who.owner, see_all=who.is_admin
    )
    return info.as_json()


@router.post("/schedules/{name}/resume", summary="Resume a schedule")
def resume_schedule(request: Request, who: Who, name: str) -> dict[str, Any]:
    """Without catch-up, it fires its latest due tick, not the ones it missed."""
    require(who, "operate")
    info = ops.set_schedule_enabled(
        request.app.state.ctx.store, name, True, owner=who.owner, see_all=who.is_admin
    )
    return info.as_json()


@router.delete("/schedules/{name}", summary="Delete a schedule (the runs it made stay)")
def delete_schedule(request: Request, who: Who, name: str) -> dict[str, Any]:
    require(who, "edit")
    ops.remove_schedule(request.app.state.ctx.store, name, owner=who.owner, see_all=who.is_admin)
    return {"schedule": name, "deleted": True}


@router.post("/schedules/{name}/trigger", status_code=202, summary="Queue a run of it now")
def trigger_schedule(
    request: Request, who: Who, name: str, body: TriggerRequest | None = None
) -> JSONResponse:
    """202 with the run, as ``POST /api/v1/runs`` answers: the schedule's pipeline with
    its parameters and ``parameters`` on top, its priority; not a tick (its timing is
    unchanged). ``triggered_by``: ``schedule:NAME (manual by TOKEN)``."""
    require(who, "operate")
    ctx = request.app.state.ctx

    def check(pipeline: Pipeline) -> None:
        check_code(request, who, pipeline)

    submitted = ops.trigger_schedule(
        ctx.settings,
        ctx.store,
        name,
        body.parameters if body is not None else None,
        owner=who.owner,
        see_all=who.is_admin,
        by=who.name,
        check_pipeline=check,
    )
    return JSONResponse(
        {
            **submitted.as_json(),
            "version": submitted.pipeline_version,
            "status_url": f"/api/v1/runs/{submitted.run_id}",
        },
        status_code=202,
    )
