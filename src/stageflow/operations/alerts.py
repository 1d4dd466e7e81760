"""Alert rules and alerts: what the CLI (``stageflow alerts``) and the API
(``/api/v1/alert-rules``, ``/api/v1/alerts``) do, in one place.

Rules. ``add_rule`` checks every term first (``engine.alerts.rule_problems``: a known
metric, a condition, a threshold of the condition's type, a severity, a cooldown of 0
or more, a window) and raises ``InvalidAlertRule`` with all the problems (the API's
422, exit 2) before it writes anything. A rule names its pipeline (optional: none
watches every pipeline) and task (optional); a pipeline named must be saved.
``apply_spec_rules`` registers a saved spec's ``alerts:`` as ``<pipeline>.<id>``
(``publish_pipeline`` calls it: saving a pipeline registers its rules), and removes the
spec rules of that pipeline the spec no longer lists. A channel that runs a
``command`` is arbitrary code: only a caller that ``may_run_commands`` (an admin over
the API; the local CLI) may add one.

Alerts. ``list_alerts`` filters by state and severity; ``ack_alert`` and
``resolve_alert`` move one (``engine.alerts.move``: open -> acknowledged -> resolved)
as a compare-and-set in the store, recording who; a move the table has not (acking a
resolved alert) is a ``UsageError`` naming the state and what is possible.

Owners. A rule belongs to its pipeline's owner (``None`` for one the CLI adds); a
caller that may not see all (a non-admin over the API) sees and changes only its
owner's rules and alerts, and another owner's gets the same ``AlertNotFound`` as a
missing one. The CLI passes ``see_all=True``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stageflow.errors import InvalidSpec, Problem, UsageError
from stageflow.operations.pipelines import Forbidden, NotFound
from stageflow.operations.stores import Store

if TYPE_CHECKING:
    from stageflow.runtime.store.base import AlertRecord, AlertRuleRecord
    from stageflow.spec.models import Pipeline

__all__ = [
    "STATES",
    "AlertNotFound",
    "InvalidAlertRule",
    "ack_alert",
    "add_rule",
    "alert_json",
    "apply_spec_rules",
    "list_alerts",
    "list_rules",
    "remove_rule",
    "resolve_alert",
    "rule_json",
    "set_rule_enabled",
    "show_alert",
    "show_rule",
]

STATES = ("open", "acknowledged", "resolved")


class AlertNotFound(NotFound):
    """No such rule or alert, or not the caller's to see (404; exit 2 on the CLI)."""

    exit_code = 2


class InvalidAlertRule(InvalidSpec):
    """A rule's terms are wrong (the API's 422, exit 2): every problem, each naming its
    field and the fix; nothing was written."""

    def __init__(self, rule_id: str, problems: list[Problem]) -> None:
        super().__init__(problems)
        count = len(problems)
        head = f"alert rule '{rule_id}' refused ({count} problem{'s' if count != 1 else ''}):"
        self.args = ("\n".join([head, *(f"  - {p.render()}" for p in problems)]),)


def add_rule(
    store: Store,
    rule_id: str,
    *,
    metric: str,
    condition: str = "greater_than",
    threshold: float | str | None = None,
    severity: str = "warning",
    cooldown: float = 300.0,
    window: float | str = 3600.0,
    k: float = 2.0,
    runs: int = 10,
    pipeline: str | None = None,
    task: str | None = None,
    description: str = "",
    channels: Sequence[Mapping[str, Any]] = (),
    enabled: bool = True,
    owner: str | None,
    see_all: bool,
    may_run_commands: bool,
    source: str = "user",
    now: float | None = None,
) -> AlertRuleRecord:
    """Create (or change) the rule ``rule_id`` after checking all of it (module
    docstring). Raises ``InvalidAlertRule``, ``AlertNotFound`` (a pipeline the caller
    has not got), ``Forbidden`` (a command channel)."""
    from stageflow.engine.alerts import RuleTerms, rule_problems, window_seconds
    from stageflow.runtime.store.base import AlertRuleRecord

    now = time.time() if now is None else now
    seconds = window_seconds(window)
    terms = RuleTerms(metric, condition, threshold, severity, cooldown, k, runs, seconds)
    found = [Problem(message, field=f) for f, message in rule_problems(terms)]
    if not _RULE_ID.fullmatch(rule_id):
        found.insert(
            0,
            Problem(
                f"rule id '{rule_id}' must be 1-100 letters, digits, '_', '-', '.', "
                "starting with a letter or digit",
                field="id",
            ),
        )
    checked = _checked_channels(channels, found)
    if found:
        raise InvalidAlertRule(rule_id, found)
    if any("command" in c for c in checked) and not may_run_commands:
        raise Forbidden(
            f"alert rule '{rule_id}': a command channel runs a program; only an admin may "
            "add one (use a webhook or email channel)",
            field="channels",
        )
    if pipeline is not None:
        exists, holder = store.pipeline_owner(pipeline)
        if not exists or not (see_all or holder == owner):
            raise AlertNotFound(
                f"pipeline '{pipeline}' is not saved; save it first (stageflow pipelines list)",
                field="pipeline",
            )
        owner = holder if see_all else owner
    old = store.get_alert_rule(rule_id)
    if old is not None and not _sees(old.owner, owner, see_all):
        raise AlertNotFound(f"alert rule '{rule_id}' is taken; choose another id", field="id")
    record = AlertRuleRecord(
        rule_id=rule_id,
        pipeline=pipeline,
        task=task,
        metric=metric,
        condition=condition,
        threshold=threshold,
        severity=severity,
        cooldown_seconds=float(cooldown),
        window_seconds=seconds,
        k=float(k),
        runs=int(runs),
        enabled=enabled,
        description=description,
        channels=checked,
        owner=owner,
        source=source,
        created_at=now if old is None else old.created_at,
        updated_at=now,
    )
    store.put_alert_rule(record)
    return record


def apply_spec_rules(
    store: Store, pipeline: Pipeline, *, owner: str | None, now: float
) -> list[AlertRuleRecord]:
    """Register ``pipeline``'s ``alerts:`` (checked with the spec) as ``<name>.<id>``,
    owned by ``owner``; remove that pipeline's spec rules the spec no longer lists."""
    from stageflow.engine.alerts import window_seconds
    from stageflow.runtime.store.base import AlertRuleRecord

    records = []
    for rule in pipeline.alerts:
        rule_id = f"{pipeline.name}.{rule.id}"
        old = store.get_alert_rule(rule_id)
        records.append(
            AlertRuleRecord(
                rule_id=rule_id,
                pipeline=pipeline.name,
                task=rule.task,
                metric=rule.metric,
                condition=rule.condition,
                threshold=rule.threshold,
                severity=rule.severity,
                cooldown_seconds=float(rule.cooldown),
                window_seconds=window_seconds(rule.window),
                k=float(rule.k),
                runs=rule.runs,
                enabled=rule.enabled,
                description=rule.description,
                channels=[c.model_dump(exclude_none=True) for c in rule.channels],
                owner=owner,
                source="spec",
                created_at=now if old is None else old.created_at,
                updated_at=now,
            )
        )
    for record in records:
        store.put_alert_rule(record)
    listed = {r.rule_id for r in records}
    for old in store.alert_rules(pipeline=pipeline.name):
        if old.source == "spec" and old.rule_id not in listed:
            store.delete_alert_rule(old.rule_id)
    return records


def list_rules(store: Store, *, owner: str | None, see_all: bool) -> list[AlertRuleRecord]:
    return [r for r in store.alert_rules() if _sees(r.owner, owner, see_all)]


def show_rule(store: Store, rule_id: str, *, owner: str | None, see_all: bool) -> AlertRuleRecord:
    rule = store.get_alert_rule(rule_id)
    if rule is None or not _sees(rule.owner, owner, see_all):
        raise AlertNotFound(
            f"no alert rule '{rule_id}'; see `stageflow alerts rules list`", field="rule_id"
        )
    return rule


def set_rule_enabled(
    store: Store, rule_id: str, enabled: bool, *, owner: str | None, see_all: bool
) -> AlertRuleRecord:
    show_rule(store, rule_id, owner=owner, see_all=see_all)
    store.set_alert_rule_enabled(rule_id, enabled, time.time())
    return show_rule(store, rule_id, owner=owner, see_all=see_all)


def remove_rule(store: Store, rule_id: str, *, owner: str | None, see_all: bool) -> None:
    """Delete the rule (its alerts stay, readable)."""
    show_rule(store, rule_id, owner=owner, see_all=see_all)
    store.delete_alert_rule(rule_id)


def list_alerts(
    store: Store,
    *,
    state: str | None = None,
    severity: str | None = None,
    limit: int = 50,
    owner: str | None,
    see_all: bool,
) -> list[AlertRecord]:
    """Newest first; ``UsageError`` naming ``--state``/``--severity``/``--limit`` for a
    value outside what they take."""
    from stageflow.engine.alerts import SEVERITIES

    if state is not None and state not in STATES:
        raise UsageError(
            f"--state '{state}' is unknown; use one of {', '.join(STATES)}", field="state"
        )
    if severity is not None and severity not in SEVERITIES:
        raise UsageError(
            f"--severity '{severity}' is unknown; use one of {', '.join(SEVERITIES)}",
            field="severity",
        )
    if not 1 <= limit <= 10_000:
        raise UsageError(f"--limit {limit} must be between 1 and 10000", field="limit")
    # Another owner's are filtered after the read: read more so a page stays full.
    found = store.alerts(state=state, severity=severity, limit=limit if see_all else 10_000)
    return [a for a in found if _sees(a.owner, owner, see_all)][:limit]


def show_alert(store: Store, alert_id: str, *, owner: str | None, see_all: bool) -> AlertRecord:
    alert = store.get_alert(alert_id)
    if alert is None or not _sees(alert.owner, owner, see_all):
        raise AlertNotFound(f"no alert '{alert_id}'; see `stageflow alerts list`", field="alert_id")
    return alert


def ack_alert(
    store: Store, alert_id: str, *, by: str, owner: str | None, see_all: bool
) -> AlertRecord:
    """Acknowledge an open alert, recording ``by``. Raises ``AlertNotFound``,
    ``UsageError`` (it is not open)."""
    return _move(store, alert_id, "ack", by=by, owner=owner, see_all=see_all)


def resolve_alert(
    store: Store, alert_id: str, *, by: str, owner: str | None, see_all: bool
) -> AlertRecord:
    """Resolve an open or acknowledged alert, recording ``by``."""
    return _move(store, alert_id, "resolve", by=by, owner=owner, see_all=see_all)


def rule_json(rule: AlertRuleRecord) -> dict[str, Any]:
    from stageflow.engine.alerts import metric_of
    from stageflow.runtime.result import iso

    metric = metric_of(rule.metric)
    return {
        "rule_id": rule.rule_id,
        "pipeline": rule.pipeline,
        "task": rule.task,
        "metric": rule.metric,
        "unit": None if metric is None else metric.unit,
        "condition": rule.condition,
        "threshold": rule.threshold,
        "k": rule.k,
        "runs": rule.runs,
        "window_seconds": rule.window_seconds,
        "severity": rule.severity,
        "cooldown_seconds": rule.cooldown_seconds,
        "enabled": rule.enabled,
        "description": rule.description,
        "channels": [_channel_shown(c) for c in rule.channels],
        "owner": rule.owner,
        "source": rule.source,
        "created_at": iso(rule.created_at),
        "updated_at": iso(rule.updated_at),
    }


def alert_json(alert: AlertRecord) -> dict[str, Any]:
    from stageflow.runtime.result import iso

    return {
        "alert_id": alert.alert_id,
        "rule_id": alert.rule_id,
        "subject": alert.subject,
        "state": alert.state,
        "severity": alert.severity,
        "message": alert.message,
        "value": alert.value,
        "pipeline": alert.pipeline,
        "run_id": alert.run_id,
        "task": alert.task,
        "opened_at": iso(alert.opened_at),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": iso(alert.acknowledged_at),
        "resolved_by": alert.resolved_by,
        "resolved_at": iso(alert.resolved_at),
    }


_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _move(
    store: Store, alert_id: str, action: str, *, by: str, owner: str | None, see_all: bool
) -> AlertRecord:
    from stageflow.engine.alerts import AlertState, move
    from stageflow.errors import IllegalTransition

    alert = show_alert(store, alert_id, owner=owner, see_all=see_all)
    try:
        target = move(AlertState(alert.state), action)
    except IllegalTransition:
        verb = "acknowledge" if action == "ack" else "resolve"
        raise UsageError(
            f"alert '{alert_id}' is {alert.state}; only an open alert can be acknowledged, "
            f"and an open or acknowledged one resolved, so there is nothing to {verb}",
            field="alert_id",
        ) from None
    now = time.time()
    if not store.move_alert(alert_id, alert.state, target.value, by=by, now=now):
        # Another process moved it between the read and the write: say where it is now.
        now_state = show_alert(store, alert_id, owner=owner, see_all=see_all).state
        raise UsageError(
            f"alert '{alert_id}' changed meanwhile (it is {now_state} now); list it again",
            field="alert_id",
        )
    return show_alert(store, alert_id, owner=owner, see_all=see_all)


def _checked_channels(
    channels: Sequence[Mapping[str, Any]], found: list[Problem]
) -> list[dict[str, Any]]:
    from pydantic import ValidationError

    from stageflow.spec.models import Channel

    checked = []
    for k, raw in enumerate(channels):
        try:
            checked.append(Channel.model_validate(dict(raw)).model_dump(exclude_none=True))
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"])
                found.append(
                    Problem(
                        f"channels[{k}]{'.' + where if where else ''}: {error['msg']}",
                        field=f"channels[{k}]",
                    )
                )
    return checked


def _channel_shown(channel: Mapping[str, Any]) -> dict[str, Any]:
    """A channel as shown: a webhook URL's path may hold a token, so only its host."""
    shown = dict(channel)
    url = shown.get("webhook")
    if isinstance(url, str) and not url.startswith("${"):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        shown["webhook"] = f"{parts.scheme}://{parts.netloc}/..."
    return shown


def _sees(holder: str | None, owner: str | None, see_all: bool) -> bool:
    return see_all or holder == owner
