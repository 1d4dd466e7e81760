"""The FastAPI application: its context, error answers, audit and metrics middleware.

Errors. Every ``StageflowError`` is answered with its status (``STATUS``) and the
body ``{"error": message, "problems": [{"task", "field", "message"}, ...]}`` — the
CLI's messages; a request the schema refuses (FastAPI's validation) gets the same
shape with 422; an unknown route 404, a wrong method 405. A bug is a 500 whose body
says only that (the traceback goes to the server's log), never a client's mistake.

Audit. Every request that changes something (``POST``, ``PUT``, ``PATCH``,
``DELETE``) is written to the audit log once answered: who (the token's name, or
``anonymous``), what (method and route), its target (the path's ids), from where,
and the status.

The context (``app.state.ctx``): settings, one store for the process (its methods
hold a lock: safe from the thread pool that runs the routes), the authenticator,
the metrics, and ``workers``: how the supervisor of ``stageflow serve`` reports its
worker processes (``None``: no worker is supervised here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stageflow import errors
from stageflow import operations as ops
from stageflow.operations.stores import Store
from stageflow.runtime.claim import lease_terms
from stageflow.runtime.settings import Settings
from stageflow.service.api.auth import (
    Authenticator,
    FailedLogins,
    TooManyFailures,
    Unauthorized,
)
from stageflow.service.api.metrics import ApiMetrics
from stageflow.service.api.routes_pipelines import MAX_BODY_BYTES, TooLarge

__all__ = ["STATUS", "ApiContext", "create_app", "error_body"]

logger = logging.getLogger(__name__)

#: The HTTP status of each error class (the first that matches, in this order).
STATUS: tuple[tuple[type[errors.StageflowError], int], ...] = (
    (Unauthorized, 401),
    (TooManyFailures, 429),
    (TooLarge, 413),
    (ops.Forbidden, 403),
    (ops.NotFound, 404),
    (errors.RunNotFound, 404),
    (ops.Conflict, 409),
    (errors.ControlRefused, 409),
    (errors.RunOwned, 409),
    (errors.InvalidSpec, 422),
    (errors.UnknownOperator, 422),
    (errors.StoreUnreachable, 503),
    (errors.StoreError, 503),
    (errors.MissingExtra, 501),
    (errors.UsageError, 400),
    (errors.StageflowError, 400),
)
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    auth: Authenticator
    metrics: ApiMetrics
    started_at: float = field(default_factory=time.time)
    #: () -> (alive, wanted): the worker processes ``serve`` supervises; None: none.
    workers: Callable[[], tuple[int, int]] | None = None
    allow_code: bool = True  # whether admins may save and run arbitrary code over the API


def error_body(exc: errors.StageflowError) -> dict[str, Any]:
    return {"error": str(exc), "problems": [p.as_json() for p in exc.problems]}


def status_of(exc: errors.StageflowError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    workers: Callable[[], tuple[int, int]] | None = None,
    allow_code: bool = True,
    open_metrics: bool = True,
) -> FastAPI:
    """The API over ``settings``' store (opened here unless given). ``allow_code``
    false: nobody, admins included, may save or run a pipeline with arbitrary code
    over the API. ``open_metrics`` false: ``/metrics`` needs a token too."""
    from stageflow.service.api import (
        routes_admin,
        routes_alerts,
        routes_monitoring,
        routes_notifications,
        routes_ops,
        routes_pipelines,
        routes_runs,
        routes_schedules,
        routes_seeds,
    )

    store = store or ops.open_for_service(settings)
    app = FastAPI(
        title="stageflow",
        version="1",
        description=(
            "The stageflow REST API: pipelines, runs, tokens, the audit log, health and "
            "metrics. Every route but /health and /metrics needs `Authorization: Bearer "
            "<token>`. The routes of seeds 000 and 001 (/workflows, /executions, "
            "/monitoring) are aliases of the /api/v1 routes."
        ),
    )
    metrics = ApiMetrics(store, lease_seconds=lease_terms(settings).seconds)
    app.state.ctx = ApiContext(
        settings=settings,
        store=store,
        auth=Authenticator(store, FailedLogins(limit=settings.api_failed_logins_per_minute)),
        metrics=metrics,
        workers=workers,
        allow_code=allow_code,
    )
    for module in (routes_pipelines, routes_runs, routes_schedules, routes_admin, routes_seeds):
        app.include_router(module.router)
    app.include_router(routes_notifications.router)
    app.include_router(routes_runs.reports)
    app.include_router(routes_alerts.router)
    app.include_router(routes_monitoring.router)
    app.include_router(routes_ops.router(open_metrics))

    @app.exception_handler(errors.StageflowError)
    async def stageflow_error(request: Request, exc: errors.StageflowError) -> Response:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(error_body(exc), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            problems.append(
                {"task": None, "field": where, "message": f"{where}: {err.get('msg', 'invalid')}"}
            )
        first = problems[0]["message"] if problems else "the request is not valid"
        return JSONResponse({"error": first, "problems": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        body = {"error": message, "problems": [{"task": None, "field": None, "message": message}]}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> Response:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        message = "internal error in stageflow (a bug): the server's log has its traceback"
        return JSONResponse(
            {"error": message, "problems": [{"task": None, "field": None, "message": message}]},
            status_code=500,
        )

    app.add_middleware(_LimitBody, limit=MAX_BODY_BYTES)
    app.add_middleware(_Observe, metrics=metrics, store=store)

    return app


class _LimitBody:
    """Pure ASGI middleware: a request body over ``limit`` bytes is answered 413 with
    the usual error body and read no further, by its ``Content-Length`` before a byte
    is read or as it streams in (chunked). The app then sees the client gone, and
    whatever it would still answer is dropped."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, int(declared))
            return
        seen = 0
        refused = False

        async def limited() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    await self._refuse(send, None)
                    return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited, unless_refused)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, send: Send, declared: int | None) -> None:
        size = f" ({declared:,} bytes)" if declared is not None else ""
        body = error_body(
            TooLarge(
                f"the request body{size} is over the limit of {self.limit:,} bytes; "
                "send a smaller one (pass large data by reference)"
            )
        )
        await JSONResponse(body, status_code=413)({"type": "http"}, _nothing, send)


async def _nothing() -> Message:  # a response that is sent reads no request
    return {"type": "http.disconnect"}


class _Observe:
    """Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a task and a
    stream per request): times each request for the metrics and writes the audit
    entry of each mutating one once it is answered."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, store: Store) -> None:
        self.app = app
        self.metrics = metrics
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.observe_request(method, template, status, time.perf_counter() - started)
            if method in _MUTATING and status != 429:  # refused before anything: not audited
                await self._audit(scope, method, template, status)

    async def _audit(self, scope: Scope, method: str, template: str, status: int) -> None:
        from starlette.concurrency import run_in_threadpool

        who = (scope.get("state") or {}).get("identity")
        targets = scope.get("path_params") or {}
        target = ",".join(f"{k}={v}" for k, v in sorted(targets.items())) or None
        client = scope.get("client")
        try:
            await run_in_threadpool(
                ops.record_audit,
                self.store,
                at=time.time(),
                actor=who.name if who is not None else "anonymous",
                role=who.role if who is not None else None,
                owner=who.owner if who is not None else None,
                action=f"{method} {template}",
                target=target,
                client=client[0] if client else None,
                status=status,
            )
        except errors.StageflowError:  # the store is down: the answer says so already
            logger.warning("could not write the audit entry of %s %s", method, template)
