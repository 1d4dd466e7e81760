"""``GET /api/v1/notifications``: the delivery log of notifications (``runtime.notify``).

Reading needs role viewer. A non-admin sees the deliveries of its owner's runs only,
as for runs; an admin sees all. ``run_id`` and ``state`` (``pending``, ``sending``,
``delivered``, ``failed``) filter; ``limit`` (1 to 1000) bounds the answer, newest
first. A delivery shows its channel's kind and target (a webhook as its scheme and
host, a secret by name), never a URL or a secret. A bad filter is a 400 naming it,
with the CLI's words.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from stageflow import operations as ops
from stageflow.operations.access import Identity
from stageflow.service.api.auth import identity, require

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["notifications"])
Who = Annotated[Identity, Depends(identity)]


@router.get("/notifications", summary="List notification deliveries")
def list_notifications(
    request: Request,
    who: Who,
    run_id: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The deliveries the caller may see, newest first."""
    require(who, "read")
    if run_id is not None:
        ops.check_run_id(run_id)
    found = ops.list_notifications(
        request.app.state.ctx.store,
        run_id=run_id,
        state=state,
        owner=who.owner,
        see_all=who.is_admin,
        limit=limit,
    )
    return {"notifications": [n.as_json() for n in found]}
