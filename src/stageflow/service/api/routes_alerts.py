"""``/api/v1/alert-rules`` and ``/api/v1/alerts``: alert rules and the alerts they open.

Roles: viewers read rules and alerts; operators acknowledge and resolve alerts
(``POST /api/v1/alerts/{id}/ack``, ``/resolve``: the token's name is recorded);
editors add, change, enable, disable and delete rules; a rule with a ``command``
channel runs a program, so only an admin may add one; a non-admin's webhook channel
must post to a public host or one of ``STAGEFLOW_API_ALLOWED_HOSTS``
(``access.check_channels``, 403). A non-admin sees and changes
only its owner's rules and alerts; another owner's get 404, as a missing one
(``operations.alerts``). A mistake in a rule is a 422 with ``problems`` (each naming
its field and the fix, in the CLI's words); a bad filter a 400; acking an alert that
is not open a 400 saying its state.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stageflow.operations import alerts as alert_ops
from stageflow.operations.access import Identity, check_channels, confinement
from stageflow.service.api.auth import identity, require

__all__ = ["RuleRequest", "router"]

router = APIRouter(prefix="/api/v1", tags=["alerts"])
Who = Annotated[Identity, Depends(identity)]


class RuleRequest(BaseModel):
    """An alert rule, as ``stageflow alerts rules add`` takes it; ``cooldown`` in
    seconds, ``window`` seconds or ``90s``/``10m``/``2h``/``1d``; ``channels`` like a
    spec's (``{"webhook": URL}``, ``{"email": [...]}``)."""

    model_config = ConfigDict(extra="forbid")

    rule_id: str = Field(max_length=100)
    metric: str = Field(max_length=200)
    condition: str = Field(default="greater_than", max_length=50)
    threshold: float | str | None = None
    severity: str = Field(default="warning", max_length=20)
    cooldown: float = 300.0
    window: float | str = 3600.0
    k: float = 2.0
    runs: int = 10
    pipeline: str | None = Field(default=None, max_length=300)
    task: str | None = Field(default=None, max_length=128)
    description: str = Field(default="", max_length=2000)
    channels: list[dict[str, Any]] = Field(default_factory=list, max_length=20)
    enabled: bool = True


@router.get("/alert-rules", summary="List alert rules")
def list_rules(request: Request, who: Who) -> dict[str, Any]:
    require(who, "read")
    found = alert_ops.list_rules(request.app.state.ctx.store, owner=who.owner, see_all=who.is_admin)
    return {"rules": [alert_ops.rule_json(r) for r in found]}


@router.post("/alert-rules", status_code=201, summary="Add an alert rule (or change one)")
def add_rule(request: Request, who: Who, body: RuleRequest) -> JSONResponse:
    require(who, "edit")
    check_channels(body.channels, confinement(request.app.state.ctx.settings, who))
    rule = alert_ops.add_rule(
        request.app.state.ctx.store,
        body.rule_id,
        metric=body.metric,
        condition=body.condition,
        threshold=body.threshold,
        severity=body.severity,
        cooldown=body.cooldown,
        window=body.window,
        k=body.k,
        runs=body.runs,
        pipeline=body.pipeline,
        task=body.task,
        description=body.description,
        channels=body.channels,
        enabled=body.enabled,
        owner=who.owner,
        see_all=who.is_admin,
        may_run_commands=who.is_admin and request.app.state.ctx.allow_code,
    )
    return JSONResponse(alert_ops.rule_json(rule), status_code=201)


@router.get("/alert-rules/{rule_id}", summary="Show an alert rule")
def show_rule(request: Request, who: Who, rule_id: str) -> dict[str, Any]:
    require(who, "read")
    rule = alert_ops.show_rule(
        request.app.state.ctx.store, rule_id, owner=who.owner, see_all=who.is_admin
    )
    return alert_ops.rule_json(rule)


@router.delete("/alert-rules/{rule_id}", summary="Delete an alert rule")
def delete_rule(request: Request, who: Who, rule_id: str) -> dict[str, Any]:
    require(who, "edit")
    alert_ops.remove_rule(
        request.app.state.ctx.store, rule_id, owner=who.owner, see_all=who.is_admin
    )
    return {"rule_id": rule_id, "deleted": True}


@router.post("/alert-rules/{rule_id}/enable", summary="Enable an alert rule")
def enable_rule(request: Request, who: Who, rule_id: str) -> dict[str, Any]:
    require(who, "edit")
    rule = alert_ops.set_rule_enabled(
        request.app.state.ctx.store, rule_id, True, owner=who.owner, see_all=who.is_admin
    )
    return alert_ops.rule_json(rule)


@router.post("/alert-rules/{rule_id}/disable", summary="Disable an alert rule")
def disable_rule(request: Request, who: Who, rule_id: str) -> dict[str, Any]:
    require(who, "edit")
    rule = alert_ops.set_rule_enabled(
        request.app.state.ctx.store, rule_id, False, owner=who.owner, see_all=who.is_admin
    )
    return alert_ops.rule_json(rule)


@router.get("/alerts", summary="List alerts, newest first")
def list_alerts(
    request: Request,
    who: Who,
    state: Annotated[str | None, Query(max_length=20)] = None,
    severity: Annotated[str | None, Query(max_length=20)] = None,
    limit: int = 50,
) -> dict[str, Any]:
    require(who, "read")
    found = alert_ops.list_alerts(
        request.app.state.ctx.store,
        state=state,
        severity=severity,
        limit=limit,
        owner=who.owner,
        see_all=who.is_admin,
    )
    return {"alerts": [alert_ops.alert_json(a) for a in found]}


@router.get("/alerts/{alert_id}", summary="Show an alert")
def show_alert(request: Request, who: Who, alert_id: str) -> dict[str, Any]:
    require(who, "read")
    alert = alert_ops.show_alert(
        request.app.state.ctx.store, alert_id, owner=who.owner, see_all=who.is_admin
    )
    return alert_ops.alert_json(alert)


@router.post("/alerts/{alert_id}/ack", summary="Acknowledge an open alert")
def ack_alert(request: Request, who: Who, alert_id: str) -> dict[str, Any]:
    require(who, "operate")
    alert = alert_ops.ack_alert(
        request.app.state.ctx.store, alert_id, by=who.name, owner=who.owner, see_all=who.is_admin
    )
    return alert_ops.alert_json(alert)


@router.post("/alerts/{alert_id}/resolve", summary="Resolve an alert")
def resolve_alert(request: Request, who: Who, alert_id: str) -> dict[str, Any]:
    require(who, "operate")
    alert = alert_ops.resolve_alert(
        request.app.state.ctx.store, alert_id, by=who.name, owner=who.owner, see_all=who.is_admin
    )
    return alert_ops.alert_json(alert)
