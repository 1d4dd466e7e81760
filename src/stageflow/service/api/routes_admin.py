"""Administration (role admin): tokens and the audit log; and ``/api/v1/me``."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stageflow import operations as ops
from stageflow.operations.access import Identity
from stageflow.service.api.auth import identity, require

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["administration"])
Who = Annotated[Identity, Depends(identity)]


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    role: str
    owner: str | None = Field(default=None, max_length=64)
    expires_days: float | None = None


@router.get("/me", summary="Who the token is")
def me(who: Who) -> dict[str, Any]:
    return who.as_json()


@router.post("/tokens", status_code=201, summary="Make a token (its secret is shown once)")
def create_token(request: Request, who: Who, body: TokenRequest) -> JSONResponse:
    require(who, "admin")
    now = time.time()
    made = ops.create_token(
        request.app.state.ctx.store,
        body.name,
        body.role,
        owner=body.owner,
        expires_days=body.expires_days,
        now=now,
    )
    return JSONResponse({"token": made.token, **made.info.as_json(now)}, status_code=201)


@router.get("/tokens", summary="List tokens (never their secrets)")
def list_tokens(request: Request, who: Who) -> dict[str, Any]:
    require(who, "admin")
    now = time.time()
    return {"tokens": [t.as_json(now) for t in ops.list_tokens(request.app.state.ctx.store)]}


@router.delete("/tokens/{name}", summary="Revoke a token")
def revoke_token(request: Request, who: Who, name: str) -> dict[str, Any]:
    require(who, "admin")
    ops.revoke_token(request.app.state.ctx.store, name, now=time.time())
    return {"name": name, "revoked": True}


@router.get("/audit", summary="The audit log, newest first")
def audit(
    request: Request,
    who: Who,
    since: str | None = None,
    actor: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    require(who, "admin")
    page = ops.audit_log(
        request.app.state.ctx.store,
        since=ops.parse_instant(since, "since") if since else None,
        actor=actor,
        cursor=cursor,
        limit=limit,
    )
    return page.as_json()
