"""``/api/v1/runs``: submit (queued for a worker), list, show, control, approve,
logs, results.

A run belongs to its pipeline's owner; a caller that may not see it gets 404, as
for a run that does not exist. Submitting and controlling need role operator; a
run of a pipeline with arbitrary code needs admin. Control requests go through the
store to whichever worker owns the run (``operations.cancel`` and friends), in the
caller's name.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from stageflow import operations as ops
from stageflow.engine.states import FINAL_RUN_STATES, FINAL_TASK_STATES
from stageflow.errors import RunNotFound
from stageflow.operations.access import Identity, confinement
from stageflow.runtime.result import iso
from stageflow.service.api.auth import identity, require
from stageflow.service.api.routes_pipelines import check_code

if TYPE_CHECKING:
    from stageflow.runtime.store.base import RunRecord

__all__ = ["RunRequest", "reports", "router", "submit_run", "visible_run"]

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
Who = Annotated[Identity, Depends(identity)]


class RunRequest(BaseModel):
    """Seed 001's body: which pipeline (``name`` or ``name@version``), its parameters,
    who asked (a label kept with the run; the audit log keeps the token's name), and
    the priority in the queue (higher first)."""

    model_config = ConfigDict(extra="forbid")

    pipeline_id: str = Field(min_length=1, max_length=300)
    parameters: dict[str, Any] = Field(default_factory=dict)
    triggered_by: str | None = Field(default=None, max_length=200)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=2000)


def visible_run(request: Request, who: Identity, run_id: str) -> RunRecord:
    """The run, if ``who`` may see it; ``RunNotFound``/``NotFound`` (404) otherwise."""
    ops.check_run_id(run_id)
    # One answer whether the run is missing or another owner's: nothing tells it exists
    # (nor where the store is).
    missing = ops.NotFound(f"no run '{run_id}'; `GET /api/v1/runs` lists yours")
    try:
        run: RunRecord = request.app.state.ctx.store.get_run(run_id)
    except RunNotFound:
        raise missing from None
    if not ops.sees(who, run.owner):
        raise missing
    return run


def submit_run(request: Request, who: Identity, body: RunRequest) -> dict[str, Any]:
    require(who, "operate")
    ctx = request.app.state.ctx
    name, _, version = body.pipeline_id.partition("@")
    record = ops.owned_pipeline(
        ctx.store, name, owner=who.owner, see_all=who.is_admin, version=version or "latest"
    )
    pipeline, _ = ops.pipeline_graph(record)
    check_code(request, who, pipeline)
    submitted = ops.submit_saved(
        ctx.settings,
        ctx.store,
        record,
        body.parameters,
        priority=body.priority,
        triggered_by=body.triggered_by or who.name,
        confine=confinement(ctx.settings, who),
    )
    return {
        **submitted.as_json(),
        "version": submitted.pipeline_version,
        "status_url": f"/api/v1/runs/{submitted.run_id}",
    }


@router.post("", status_code=202, summary="Queue a run of a saved pipeline")
def create_run(request: Request, who: Who, body: RunRequest) -> JSONResponse:
    """202 with the run id: a worker runs it (``GET /api/v1/runs/{run_id}`` follows it)."""
    return JSONResponse(submit_run(request, who, body), status_code=202)


@router.get("", summary="List runs")
def list_runs(
    request: Request,
    who: Who,
    pipeline: str | None = None,
    state: Annotated[list[str] | None, Query()] = None,
    since: str | None = None,
    until: str | None = None,
    triggered_by: str | None = None,
    owner: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """Newest first; ``next_cursor`` fetches the next page. ``since``/``until``: ISO-8601.
    A non-admin sees its owner's runs only (``owner`` is an admin's filter)."""
    require(who, "read")
    owned_by: tuple[str | None] | None
    owned_by = ((owner,) if owner is not None else None) if who.is_admin else (who.owner,)
    which = ops.RunFilter(
        pipeline=pipeline,
        states=tuple(state or ()),
        since=ops.parse_instant(since, "since") if since else None,
        until=ops.parse_instant(until, "until") if until else None,
        limit=limit,
        cursor=cursor,
        triggered_by=triggered_by,
        owned_by=owned_by,
    )
    page = ops.list_runs(request.app.state.ctx.store, which, now=time.time())
    return {"runs": [r.as_json() for r in page.runs], "next_cursor": page.cursor}


def run_json(request: Request, who: Identity, run_id: str) -> dict[str, Any]:
    run = visible_run(request, who, run_id)
    detail = ops.show_run(request.app.state.ctx.store, run_id, now=time.time())
    doc = detail.result.as_json()
    doc.update(
        {
            "version": run.pipeline_version,
            "status": detail.status,
            "owner": run.owner,
            "triggered_by": run.triggered_by,
            "priority": run.priority,
            "params": run.params,
            "created_at": iso(run.created_at),
            "lease": detail.lease.as_json() if detail.lease else None,
            "retry": detail.retry_json(),  # its run-level retry chain
            "critical_path": detail.result.critical_path,
            "attempts": [
                {
                    "task_id": a.task_id,
                    "attempt": a.attempt,
                    "state": a.state,
                    "started_at": iso(a.started_at),
                    "ended_at": iso(a.ended_at),
                    "error": a.error,
                    "cpu_seconds": a.cpu_seconds,
                    "peak_rss_mb": a.peak_rss_mb,
                }
                for a in detail.attempts
            ],
        }
    )
    return doc


def _download(run_id: str, task_id: str, uri: str | None) -> str | None:
    """The artifact route of a stored output file (``None``: it is inline)."""
    if not uri:
        return None
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return f"/api/v1/runs/{run_id}/artifacts/outputs/{task_id}/{name}"


@router.get("/{run_id}", summary="A run: its tasks, attempts and lease")
def get_run(request: Request, who: Who, run_id: str) -> dict[str, Any]:
    require(who, "read")
    return run_json(request, who, run_id)


def control(request: Request, who: Identity, run_id: str, what: str) -> dict[str, Any]:
    require(who, "operate")
    visible_run(request, who, run_id)
    settings = request.app.state.ctx.settings
    command = {"cancel": ops.cancel, "pause": ops.pause, "unpause": ops.unpause}[what]
    return command(settings, run_id, by=who.name).as_json()


@router.post("/{run_id}/cancel", summary="Cancel a run")
def cancel_run(request: Request, who: Who, run_id: str) -> dict[str, Any]:
    return control(request, who, run_id, "cancel")


@router.post("/{run_id}/pause", summary="Pause a run: no new task starts")
def pause_run(request: Request, who: Who, run_id: str) -> dict[str, Any]:
    return control(request, who, run_id, "pause")


@router.post("/{run_id}/unpause", summary="Unpause a run")
def unpause_run(request: Request, who: Who, run_id: str) -> dict[str, Any]:
    return control(request, who, run_id, "unpause")


class Retry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_task: str | None = Field(default=None, max_length=300)


@router.post("/{run_id}/retry", summary="Queue an ended run again for a worker")
def retry_run(request: Request, who: Who, run_id: str, body: Retry | None = None) -> dict[str, Any]:
    """Its tasks that did not succeed run again (with ``from_task``: that task and
    everything downstream of it too), in the same run, on a worker; committed
    successes are kept. A run of a pipeline with arbitrary code needs an admin."""
    require(who, "operate")
    run = visible_run(request, who, run_id)
    ctx = request.app.state.ctx
    record = ctx.store.get_pipeline(run.pipeline, run.pipeline_version)
    pipeline, _ = ops.pipeline_graph(record)
    check_code(request, who, pipeline)
    from_task = body.from_task if body is not None else None
    outcome = ops.requeue_retry(
        ctx.store,
        run_id,
        from_task=from_task,
        by=who.name,
        now=time.time(),
        confine=confinement(ctx.settings, who),
    )
    return outcome.as_json()


def decide(
    request: Request, who: Identity, run_id: str, task_id: str, approved: bool, body: Decision
) -> dict[str, Any]:
    require(who, "operate")
    visible_run(request, who, run_id)
    settings = request.app.state.ctx.settings
    command = ops.approve if approved else ops.reject
    return command(settings, run_id, task_id, comment=body.comment, by=who.name).as_json()


@router.post("/{run_id}/tasks/{task_id}/approve", summary="Approve a task's gate")
def approve_task(
    request: Request, who: Who, run_id: str, task_id: str, body: Decision | None = None
) -> dict[str, Any]:
    """The approver is the token's name: a gate's ``approvers`` are checked against it."""
    return decide(request, who, run_id, task_id, True, body or Decision())


@router.post("/{run_id}/tasks/{task_id}/reject", summary="Reject a task's gate")
def reject_task(
    request: Request, who: Who, run_id: str, task_id: str, body: Decision | None = None
) -> dict[str, Any]:
    return decide(request, who, run_id, task_id, False, body or Decision())


@router.get(
    "/{run_id}/tasks/{task_id}/logs",
    summary="What a task wrote",
    response_class=PlainTextResponse,
)
async def task_logs(
    request: Request,
    who: Who,
    run_id: str,
    task_id: str,
    attempt: Annotated[int | None, Query(ge=1)] = None,
    follow: bool = False,
) -> Response:
    """Each attempt's captured output, one after another under a ``== attempt N ==``
    line. ``follow=true``: streamed as it is written, until the task has ended."""
    from starlette.concurrency import run_in_threadpool

    require(who, "read")
    await run_in_threadpool(visible_run, request, who, run_id)
    ctx = request.app.state.ctx

    def read() -> ops.TaskLogs:
        return ops.task_logs(ctx.store, ctx.settings.logs_dir, run_id, task_id, attempt=attempt)

    logs = await run_in_threadpool(read)
    if not follow:
        return PlainTextResponse(
            "".join(f"== attempt {f.attempt} ==\n{f.text}" for f in logs.files)
        )

    def task_ended() -> bool:
        states = {t.task_id: t.state for t in ctx.store.task_runs(run_id)}
        return states.get(task_id) in FINAL_TASK_STATES

    async def stream() -> AsyncIterator[str]:
        import asyncio

        sent: dict[int, int] = {}
        current = logs
        while True:
            ended = await run_in_threadpool(task_ended)
            if ended:  # what it wrote before its end was committed is all there is
                current = await run_in_threadpool(read)
            for f in current.files:
                done = sent.get(f.attempt)
                if done is None:
                    yield f"== attempt {f.attempt} ==\n"
                    done = 0
                if len(f.text) > done:
                    yield f.text[done:]
                sent[f.attempt] = len(f.text)
            if ended or await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)
            current = await run_in_threadpool(read)

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


@router.get("/{run_id}/results", summary="Each task's state and output summary")
def run_results(request: Request, who: Who, run_id: str) -> dict[str, Any]:
    require(who, "read")
    run = visible_run(request, who, run_id)
    store = request.app.state.ctx.store
    outputs = store.outputs(run_id)
    tasks = {}
    for t in store.task_runs(run_id):
        out = outputs.get(t.task_id)
        tasks[t.task_id] = {
            "state": t.state,
            "attempts": t.attempts,
            "error": t.error,
            "output": None
            if out is None
            else {
                "kind": out.kind,
                "serializer": out.serializer,
                "size": out.size,
                "sha256": out.sha256,
                "uri": out.uri,
                "download": _download(run_id, t.task_id, out.uri),
            },
        }
    return {"run_id": run_id, "pipeline": run.pipeline, "state": run.state, "tasks": tasks}


@router.get(
    "/{run_id}/artifacts/{path:path}",
    summary="Download a file of the run: outputs/TASK/FILE or files/TASK/FILE",
    response_class=Response,
)
def run_artifact(request: Request, who: Who, run_id: str, path: str) -> Response:
    """A task's stored output (``outputs/TASK/attempt-N``) or a file an operator wrote
    (``files/TASK/NAME``); a path leading anywhere else is refused."""
    require(who, "read")
    visible_run(request, who, run_id)
    found = ops.run_artifact(request.app.state.ctx.settings.artifacts_root, run_id, path)
    name = path.rsplit("/", 1)[-1].replace('"', "")
    return Response(
        found.data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/{run_id}/usage", summary="A run's critical path, usage per task and cost")
def run_usage(request: Request, who: Who, run_id: str) -> dict[str, Any]:
    require(who, "read")
    visible_run(request, who, run_id)
    ctx = request.app.state.ctx
    report: dict[str, Any] = ops.usage(ctx.store, run_id, ctx.settings.cost_prices).as_json()
    return report


@router.get("/{run_id}/record", summary="A run's reproducibility record")
def run_record(request: Request, who: Who, run_id: str) -> dict[str, Any]:
    """Its spec version, code, environment, seeds, data read and tracking, as
    ``stageflow runs show`` prints them (``record`` null: an older run has none)."""
    require(who, "read")
    visible_run(request, who, run_id)
    return {"run_id": run_id, "record": ops.record(request.app.state.ctx.store, run_id)}


@router.get("/{run_a}/diff/{run_b}", summary="What changed between two runs")
def run_diff(request: Request, who: Who, run_a: str, run_b: str) -> dict[str, Any]:
    require(who, "read")
    visible_run(request, who, run_a)
    visible_run(request, who, run_b)
    found: dict[str, Any] = ops.diff(request.app.state.ctx.store, run_a, run_b).as_json()
    return found


@router.get("/{run_id}/lineage/{task_id}", summary="Where a task's output came from and went")
def run_lineage(request: Request, who: Who, run_id: str, task_id: str) -> dict[str, Any]:
    require(who, "read")
    visible_run(request, who, run_id)
    ops.check_task_id(task_id, mapped=True)
    found: dict[str, Any] = ops.lineage(
        request.app.state.ctx.store, f"{run_id}/{task_id}"
    ).as_json()
    return found


reports = APIRouter(prefix="/api/v1", tags=["reports"])


@reports.get("/cost", summary="Cost of the runs of the last N days, per pipeline per day")
def cost(
    request: Request,
    who: Who,
    days: Annotated[int, Query(ge=1, le=3650)] = 7,
    pipeline: str | None = None,
) -> dict[str, Any]:
    require(who, "admin")  # it sums every owner's runs
    ctx = request.app.state.ctx
    found: dict[str, Any] = ops.cost(
        ctx.store, ctx.settings.cost_prices, days=days, now=time.time(), pipeline=pipeline
    ).as_json()
    return found


@reports.get("/pipelines/{name}/stats", summary="Per-task statistics over N days")
def pipeline_stats(
    request: Request, who: Who, name: str, days: Annotated[int, Query(ge=1, le=3650)] = 7
) -> dict[str, Any]:
    require(who, "read")
    store = request.app.state.ctx.store
    ops.owned_pipeline(store, name, owner=who.owner, see_all=who.is_admin)
    found: dict[str, Any] = ops.stats(store, name, days=days, now=time.time()).as_json()
    return found


#: How often a stream looks for new events (the store is the bus: a run executed by a
#: worker on another host streams too), and sends a keep-alive comment when idle.
POLL_S = 0.25
KEEPALIVE_S = 15.0


@router.get(
    "/{run_id}/events",
    summary="The run's state changes as server-sent events",
    response_class=StreamingResponse,
)
async def run_event_stream(
    request: Request,
    who: Who,
    run_id: str,
    follow: bool = True,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """``text/event-stream``: one ``run`` or ``task`` event per state change (its ``id``
    resumes the stream: send it back as ``Last-Event-ID``), then ``end`` once the run
    has ended. ``follow=false``: what happened so far, then ``end``."""
    from starlette.concurrency import run_in_threadpool

    require(who, "read")
    await run_in_threadpool(visible_run, request, who, run_id)
    store = request.app.state.ctx.store
    first = await run_in_threadpool(ops.run_events, store, run_id, after=last_event_id)

    async def stream() -> AsyncIterator[str]:
        import asyncio
        import json

        def frame(item: ops.RunEventItem) -> str:
            kind = "run" if item.event.task_id is None else "task"
            return f"id: {item.event_id}\nevent: {kind}\ndata: {json.dumps(item.as_json())}\n\n"

        items, position, idle = first, last_event_id, 0.0
        while True:
            for item in items:
                yield frame(item)
                position = item.event_id
            state = (await run_in_threadpool(store.get_run, run_id)).state
            if not follow or state in FINAL_RUN_STATES:
                # The final state and its events commit together: read what came since.
                while rest := await run_in_threadpool(
                    ops.run_events, store, run_id, after=position
                ):
                    for item in rest:
                        yield frame(item)
                        position = item.event_id
                yield f"event: end\ndata: {json.dumps({'run_id': run_id, 'state': state})}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)
            idle = 0.0 if items else idle + POLL_S
            if idle >= KEEPALIVE_S:
                idle = 0.0
                yield ": keep-alive\n\n"
            items = await run_in_threadpool(ops.run_events, store, run_id, after=position)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
