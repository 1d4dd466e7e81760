"""``/api/v1/pipelines``: save (a new version per change), list, read, versions,
delete, validate, draw.

A pipeline belongs to an owner (a team): the saving token's, or for an admin the
spec's ``owner:``. Saving needs role editor; a pipeline that runs arbitrary code
(``operations.code_tasks``) needs admin, and nobody may save one when the server
was started with arbitrary code switched off. A spec sent here is parsed safely,
reads no file and imports no module (``operations.build_pipeline``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from stageflow import operations as ops
from stageflow.errors import InvalidSpec, StageflowError
from stageflow.operations.access import Identity, confinement
from stageflow.runtime.result import iso
from stageflow.service.api.auth import identity, require
from stageflow.spec.models import HOOKS, Pipeline

__all__ = ["TooLarge", "router"]


class TooLarge(StageflowError):
    """The request body is over the limit (413)."""


router = APIRouter(prefix="/api/v1/pipelines", tags=["pipelines"])
Who = Annotated[Identity, Depends(identity)]
#: The largest request body a spec may come in (the spec's own limit applies too).
MAX_BODY_BYTES = 8 * 1024 * 1024

_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


async def read_spec(request: Request) -> object:
    """The spec a request carries (JSON, or YAML by its content type)."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge(
            f"the request body is {len(body):,} bytes, over the limit of {MAX_BODY_BYTES:,}"
        )
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    return ops.parse_spec(body, media, request.app.state.ctx.settings.limits)


def _check_command_hooks(request: Request, who: Identity, pipeline: Pipeline) -> None:
    """``Forbidden`` when a hook's channel runs a command (``{command: [...]}``) and
    ``who`` may not run arbitrary code, as for ``bash`` tasks."""
    found = [
        f"{hook}[{i}].command"
        for hook in HOOKS
        for i, channel in enumerate(getattr(pipeline, hook))
        if channel.command is not None
    ]
    # Alert rules' and deadlines' channels run commands the same way (runtime.alerting).
    deadlines = [("deadline", pipeline.deadline)] + [
        (f"tasks[{t.id}].deadline", t.deadline) for t in pipeline.tasks
    ]
    found += [
        f"{where}.channels[{i}].command"
        for where, channels in [(f"alerts[{k}]", r.channels) for k, r in enumerate(pipeline.alerts)]
        + [(where, d.channels) for where, d in deadlines if d is not None]
        for i, channel in enumerate(channels)
        if channel.command is not None
    ]
    if not found or (who.is_admin and request.app.state.ctx.allow_code):
        return
    why = (
        "which this server does not accept over the API"
        if not request.app.state.ctx.allow_code
        else f"only an admin may save or run it, and token '{who.name}' has role {who.role}"
    )
    raise ops.Forbidden(
        f"{found[0]} runs a command (arbitrary code); {why}",
        pipeline=pipeline.name,
        field=found[0],
    )


def check_code(request: Request, who: Identity, pipeline: Pipeline) -> None:
    """``Forbidden`` when ``pipeline`` runs arbitrary code and ``who`` may not."""
    _check_command_hooks(request, who, pipeline)
    code = ops.code_tasks(pipeline)
    if not code:
        return
    listed = ", ".join(code[:5]) + (" ..." if len(code) > 5 else "")
    first = pipeline.task(code[0])
    field = "call" if first.call is not None else "operator"
    if not request.app.state.ctx.allow_code:
        raise ops.Forbidden(
            f"tasks {listed} run arbitrary code (bash, custom_script, python, call:), "
            "which this server does not accept over the API",
            pipeline=pipeline.name,
            task=first.id,
            field=field,
        )
    if not who.is_admin:
        raise ops.Forbidden(
            f"tasks {listed} run arbitrary code (bash, custom_script, python, call:); "
            f"only an admin may save or run them, and token '{who.name}' has role {who.role}",
            pipeline=pipeline.name,
            task=first.id,
            field=field,
        )


def check_paths(request: Request, who: Identity, pipeline: Pipeline) -> None:
    """``Forbidden`` naming each file path a non-admin may not use (``ops.path_problems``:
    outside the data roots, or climbing out with ``..``)."""
    if who.is_admin:
        return
    settings = request.app.state.ctx.settings
    roots = settings.api_data_roots or (str((settings.home / "data").absolute()),)
    found = ops.path_problems(pipeline, roots)
    if found:
        task, field, why = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ops.Forbidden(
            f"{why}{more}; a spec saved over the API by a non-admin may name files under "
            "STAGEFLOW_API_DATA_ROOTS only",
            pipeline=pipeline.name,
            task=task,
            field=field,
        )


def owner_for(who: Identity, pipeline: Pipeline) -> str | None:
    """The owner a saved pipeline gets: the token's; an admin's may name another."""
    if pipeline.owner is None or pipeline.owner == who.owner:
        return who.owner
    if who.is_admin:
        return pipeline.owner
    raise ops.Forbidden(
        f"the spec names owner '{pipeline.owner}', but token '{who.name}' belongs to "
        f"{repr(who.owner) if who.owner else 'no owner'}; remove `owner:` or ask an admin",
        pipeline=pipeline.name,
        field="owner",
    )


def save(request: Request, who: Identity, doc: object) -> JSONResponse:
    require(who, "edit")
    ctx = request.app.state.ctx
    pipeline = ops.build_pipeline(doc, ctx.settings.limits)
    check_code(request, who, pipeline)
    check_paths(request, who, pipeline)
    # Hosts it reaches, other pipelines its task sensors read (its files: just above).
    ops.check_confined(ctx.store, pipeline, {}, confinement(ctx.settings, who), what="a spec saved")
    now = time.time()
    owner = owner_for(who, pipeline)
    # Its schedules (``schedule:``, ``schedules:``) register with it; whatever would stop
    # them is refused first, so a refused save writes nothing.
    ops.check_spec_schedules(
        ctx.store,
        pipeline,
        owner=who.owner,
        see_all=who.is_admin,
        now=now,
        confine=confinement(ctx.settings, who),
    )
    saved = ops.publish_pipeline(
        ctx.store, pipeline, owner=owner, now=now, may_see_all=who.is_admin
    )
    body = saved.as_json()
    if pipeline.schedule_entries():
        applied = ops.apply_schedules(
            ctx.store, pipeline, owner=who.owner, see_all=who.is_admin, now=now
        )
        body["schedules"] = [s.as_json() for s in applied]
    return JSONResponse(body, status_code=201 if saved.created else 200)


@router.post("", status_code=201, openapi_extra=_SPEC_BODY, summary="Save a pipeline version")
async def create_pipeline(request: Request, who: Who) -> JSONResponse:
    """Save the spec in the body (JSON, or YAML with ``Content-Type: application/yaml``):
    201 with its new version, 200 when that spec is the latest version already."""
    doc = await read_spec(request)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(save, request, who, doc)


@router.post("/validate", openapi_extra=_SPEC_BODY, summary="Check a spec; nothing is saved")
async def validate_pipeline(request: Request, who: Who) -> JSONResponse:
    """Every problem of the spec in the body; 200 with ``valid: true`` when it has none,
    422 with the problems otherwise."""
    require(who, "read")
    try:
        doc = await read_spec(request)
    except InvalidSpec as exc:  # does not even parse
        return JSONResponse(ops.Validation(False, exc.problems).as_json(), status_code=422)
    result = ops.validate_spec(doc, request.app.state.ctx.settings.limits)
    return JSONResponse(result.as_json(), status_code=200 if result.valid else 422)


@router.get("", summary="List pipelines")
def list_pipelines(
    request: Request,
    who: Who,
    owner: str | None = None,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The pipelines the caller may see, by name (``name``: those whose name contains
    it; ``owner``: an admin's filter)."""
    require(who, "read")
    found = [
        p
        for p in ops.list_pipelines(request.app.state.ctx.store)
        if ops.sees(who, p.owner)
        and (owner is None or p.owner == owner)
        and (name is None or name in p.name)
    ]
    page = found[offset : offset + limit]
    return {
        "pipelines": [p.as_json() for p in page],
        "total": len(found),
        "offset": offset,
        "limit": limit,
    }


def _visible(request: Request, who: Identity, name: str, version: str = "latest") -> Any:
    return ops.owned_pipeline(
        request.app.state.ctx.store,
        name,
        owner=who.owner,
        see_all=who.is_admin,
        version=version,
    )


@router.get("/{name}", summary="A pipeline's spec")
def get_pipeline(request: Request, who: Who, name: str, version: str = "latest") -> dict[str, Any]:
    """The spec of the latest version (or ``?version=``), with its version and owner."""
    import json

    require(who, "read")
    record = _visible(request, who, name, version)
    return {
        "name": record.name,
        "version": record.version,
        "owner": record.owner,
        "saved_at": iso(record.created_at),
        "deleted": record.deleted_at is not None,
        "spec": json.loads(record.spec_json),
    }


@router.get("/{name}/versions", summary="A pipeline's versions")
def get_versions(request: Request, who: Who, name: str) -> dict[str, Any]:
    require(who, "read")
    _visible(request, who, name)
    versions = ops.pipeline_versions(request.app.state.ctx.store, name)
    return {"pipeline": name, "versions": [v.as_json() for v in versions]}


@router.delete("/{name}", summary="Delete a pipeline (its runs stay readable)")
def delete_pipeline(request: Request, who: Who, name: str) -> dict[str, Any]:
    require(who, "edit")
    ops.delete_pipeline(
        request.app.state.ctx.store,
        name,
        owner=who.owner,
        see_all=who.is_admin,
        now=time.time(),
    )
    return {"pipeline": name, "deleted": True}


@router.get("/{name}/graph", summary="A pipeline's DAG: JSON, DOT, Mermaid or SVG")
def get_graph(
    request: Request,
    who: Who,
    name: str,
    version: str = "latest",
    format: Literal["json", "dot", "mermaid", "svg"] = "json",
) -> Response:
    require(who, "read")
    pipeline, graph = ops.pipeline_graph(_visible(request, who, name, version))
    if format == "json":
        return JSONResponse(graph.as_json())
    from stageflow.graph import DrawFormat, draw

    picture = draw(pipeline.upstream_map(), cast(DrawFormat, format), title=pipeline.name)
    media = "image/svg+xml" if format == "svg" else "text/plain; charset=utf-8"
    return PlainTextResponse(str(picture), media_type=media)
