"""``/api/v1/schedules``: add (or change), list, show, pause, resume, delete, trigger;
``/api/v1/events/{event}``: fire an event.

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
A schedule's ``run_retries``, ``retry_strategy``, ``retry_delay`` and
``execution_timeout`` govern its runs (``runtime.run_retries``); ``on_object`` (with
``poll``) makes it an object schedule (``runtime.schedule_objects``).

Events. ``POST /api/v1/events/{event}`` (role operator) queues a run for each enabled
schedule listening to the event (``on_event``) that the caller may see, with the body, a
JSON object of at most 64 KiB (413 over), as parameters on top of the schedule's own; 202
with ``{"event", "runs": [{"schedule", "pipeline", "run_id"}]}``. A key one schedule's
pipeline does not declare refuses them all (422 naming ``payload.KEY`` and the schedule,
nothing queued); no schedule listening: 404 with the command that adds one. The runs'
``triggered_by`` is ``event:EVENT (by TOKEN)``.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stageflow import operations as ops
from stageflow.operations.access import Identity, confinement
from stageflow.service.api.auth import identity, require
from stageflow.service.api.routes_pipelines import TooLarge, check_code
from stageflow.spec.models import Pipeline

__all__ = ["MAX_EVENT_BYTES", "ScheduleRequest", "TriggerRequest", "router"]

router = APIRouter(prefix="/api/v1", tags=["schedules"])
Who = Annotated[Identity, Depends(identity)]
#: The largest event body (its payload).
MAX_EVENT_BYTES = 64 * 1024
_EVENT_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {"type": "object", "description": "parameters for the runs"}
            }
        },
    }
}


class ScheduleRequest(BaseModel):
    """A schedule, as ``stageflow schedules add`` takes it: exactly one of ``cron``
    (with ``timezone``), ``every`` (``90s``, ``10m``, ``2h``, ``1d`` or seconds), ``at``
    (ISO 8601), ``on_event`` (an event's name: ``POST /api/v1/events/{on_event}``
    fires it) and ``after`` (a saved pipeline's name: it fires when a run of it ends in
    one of ``after_states``: ``success`` by default, ``failed``, ``cancelled``);
    ``start``/``end`` (ISO 8601) bound it; ``params`` are the runs'
    parameters; ``max_active_runs`` holds ticks back while that many runs are
    unfinished; ``enabled: false`` creates it paused."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=100)
    pipeline: str = Field(max_length=300)
    cron: str | None = Field(default=None, max_length=200)
    every: str | None = Field(default=None, max_length=64)
    at: str | None = Field(default=None, max_length=64)
    on_event: str | None = Field(default=None, max_length=100)
    after: str | None = Field(default=None, max_length=128)
    after_states: list[str] | None = Field(default=None, max_length=3)
    timezone: str = Field(default="UTC", max_length=100)
    start: str | None = Field(default=None, max_length=64)
    end: str | None = Field(default=None, max_length=64)
    catchup: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    max_active_runs: int | None = Field(default=None, le=1_000_000)
    enabled: bool = True
    # Kind object: each new object under an fsspec URL with a glob, listed every poll.
    on_object: str | None = Field(default=None, max_length=1000)
    poll: str | None = Field(default=None, max_length=64)
    # For its runs: a failed run queued again (wins over the pipeline's run_retries), and
    # a run still unfinished ``execution_timeout`` after it started cancelled.
    run_retries: int | None = Field(default=None, ge=0, le=100)
    retry_strategy: Literal["none", "fixed", "linear", "exponential"] | None = None
    retry_delay: str | None = Field(default=None, max_length=64)
    execution_timeout: str | None = Field(default=None, max_length=64)


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
        on_event=body.on_event,
        after=body.after,
        after_states=body.after_states,
        timezone=body.timezone,
        start=body.start,
        end=body.end,
        catchup=body.catchup,
        params=body.params,
        priority=body.priority,
        max_active_runs=body.max_active_runs,
        enabled=body.enabled,
        on_object=body.on_object,
        poll=body.poll,
        run_retries=body.run_retries,
        retry_strategy=body.retry_strategy,
        retry_delay=body.retry_delay,
        execution_timeout=body.execution_timeout,
        check_pipeline=check,
        confine=confinement(request.app.state.ctx.settings, who),
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
        confine=confinement(ctx.settings, who),
    )
    return JSONResponse(
        {
            **submitted.as_json(),
            "version": submitted.pipeline_version,
            "status_url": f"/api/v1/runs/{submitted.run_id}",
        },
        status_code=202,
    )


@router.post(
    "/events/{event}",
    status_code=202,
    openapi_extra=_EVENT_BODY,
    summary="Fire an event: a run of each schedule listening to it",
)
async def fire_event(request: Request, who: Who, event: str) -> JSONResponse:
    """202 with ``{"event", "runs": [{"schedule", "pipeline", "run_id"}]}``: a run of
    each enabled schedule listening to ``event`` that the caller may see, the body (a
    JSON object, at most 64 KiB; none: ``{}``) as parameters on top of the schedule's.
    ``triggered_by``: ``event:EVENT (by TOKEN)``."""
    from starlette.concurrency import run_in_threadpool

    require(who, "operate")
    payload = _payload(await _limited_body(request))
    ctx = request.app.state.ctx

    def check(pipeline: Pipeline) -> None:
        check_code(request, who, pipeline)

    def fire() -> ops.EventFired:
        return ops.fire_event(
            ctx.settings,
            ctx.store,
            event,
            payload,
            owner=who.owner,
            see_all=who.is_admin,
            by=who.name,
            check_pipeline=check,
            confine=confinement(ctx.settings, who),
        )

    fired = await run_in_threadpool(fire)
    return JSONResponse(fired.as_json(), status_code=202)


async def _limited_body(request: Request) -> bytes:
    """The request body; ``TooLarge`` (413) past ``MAX_EVENT_BYTES``, read no further."""
    too_large = TooLarge(
        f"the event's body is over the limit of 64 KiB ({MAX_EVENT_BYTES:,} bytes); send a "
        "smaller payload (parameters, not data: pass large data by reference)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_EVENT_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_EVENT_BYTES:
            raise too_large
    return bytes(body)


def _payload(body: bytes) -> dict[str, Any]:
    """The event's payload: the body, a JSON object (none: ``{}``); anything else is
    refused as FastAPI refuses a body (422 naming ``body``)."""
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        why = f"the body is not JSON ({exc})"
    else:
        if isinstance(doc, dict):
            return doc
        got = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
        what = got.get(type(doc), "a number")
        why = f"the body must be a JSON object of parameters, got {what}"
    raise RequestValidationError(
        [
            {
                "loc": ("body",),
                "msg": f'{why}; e.g. {{"model": "m-7"}}',
                "type": "value_error",
            }
        ]
    )
