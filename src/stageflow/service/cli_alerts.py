"""The CLI's ``alerts`` commands, attached by ``attach(cli)``.

* ``stageflow alerts rules add RULE_ID --metric M [--condition C] [--threshold T]
  [--severity S] [--cooldown SECONDS] [--window DURATION] [--k K] [--runs N]
  [--pipeline P] [--task T] [--description TEXT] [--webhook URL] [--email ADDRESS]
  [--disabled]``: create or change a rule;
* ``stageflow alerts rules apply FILE``: save the pipeline and register its ``alerts:``
  (as ``PIPELINE.ID``; saving it over the API, or ``schedules apply``, does too);
* ``stageflow alerts rules list|show RULE_ID|remove RULE_ID|enable RULE_ID|disable
  RULE_ID``;
* ``stageflow alerts metrics``: the metrics a rule may watch, with their units;
* ``stageflow alerts list [--state open|acknowledged|resolved] [--severity S]
  [--limit N]``;
* ``stageflow alerts ack ALERT_ID`` and ``stageflow alerts resolve ALERT_ID``
  (``--by NAME``: default the local user).

Rules sit under ``alerts rules`` (a noun group, as ``schedules`` is) so that ``alerts
list``/``ack``/``resolve`` read as what a person on call types most. Every command
takes ``--format json``. A mistake exits 2 naming the option and the fix.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Any

import click

from stageflow.service.cli_options import FORMAT

__all__ = ["alerts", "attach"]


def attach(cli: click.Group) -> None:
    """Add ``alerts`` to ``cli``."""
    cli.add_command(alerts)


@click.group()
def alerts() -> None:
    """Alerts: rules that watch metrics, deadlines, and the alerts they open."""


@alerts.group()
def rules() -> None:
    """Alert rules: what is watched, when it alerts, and where it is sent."""


def _when(t: float | None) -> str:
    return "-" if t is None else f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S} UTC"


def _threshold(text: str | None, condition: str) -> float | str | None:
    """A number unless the condition looks for text (``contains``) or it is not one."""
    if text is None or condition == "contains":
        return text
    try:
        return float(text)
    except ValueError:
        return text


def _print_rule(rule: Any, fmt: str) -> None:
    from stageflow.operations.alerts import rule_json

    if fmt == "json":
        click.echo(json.dumps(rule_json(rule)))
        return
    scope = rule.pipeline or "every pipeline"
    if rule.task:
        scope += f", task {rule.task}"
    test = (
        f"below baseline (k={rule.k:g}, last {rule.runs} runs)"
        if rule.condition == "below_baseline"
        else f"{rule.condition} {rule.threshold!r}"
    )
    state = "enabled" if rule.enabled else "disabled"
    click.echo(f"rule {rule.rule_id}: {rule.metric} {test} [{rule.severity}] ({scope}), {state}")
    click.echo(
        f"  cooldown {rule.cooldown_seconds:g}s   window {rule.window_seconds:g}s   "
        f"channels {len(rule.channels)}   source {rule.source}"
    )
    if rule.description:
        click.echo(f"  {rule.description}")


def _print_alert(alert: Any) -> None:
    who = ""
    if alert.acknowledged_by:
        who += f"  acked by {alert.acknowledged_by} at {_when(alert.acknowledged_at)}"
    if alert.resolved_by:
        who += f"  resolved by {alert.resolved_by} at {_when(alert.resolved_at)}"
    click.echo(
        f"{alert.alert_id}  {alert.state:<12} {alert.severity:<8} {_when(alert.opened_at)}  "
        f"{alert.message}{who}"
    )


@rules.command("add")
@click.argument("rule_id")
@click.option("--metric", required=True, help="What it watches (`stageflow alerts metrics`).")
@click.option(
    "--condition",
    default="greater_than",
    show_default=True,
    help="greater_than, less_than, equals, contains or below_baseline.",
)
@click.option("--threshold", default=None, help="A number (text for contains).")
@click.option("--severity", default="warning", show_default=True, help="info, warning, critical.")
@click.option("--cooldown", type=float, default=300.0, show_default=True, help="Seconds.")
@click.option("--window", default="1h", show_default=True, help="90s, 10m, 2h, 1d or seconds.")
@click.option("--k", "k", type=float, default=2.0, show_default=True, help="below_baseline: k.")
@click.option("--runs", type=int, default=10, show_default=True, help="below_baseline: runs.")
@click.option("--pipeline", default=None, help="Only this saved pipeline (default: all).")
@click.option("--task", default=None, help="Only this task.")
@click.option("--description", default="")
@click.option("--webhook", "webhooks", multiple=True, metavar="URL", help="Post alerts here.")
@click.option("--email", "emails", multiple=True, metavar="ADDRESS", help="Mail alerts here.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def add(
    settings: Any,
    rule_id: str,
    metric: str,
    condition: str,
    threshold: str | None,
    severity: str,
    cooldown: float,
    window: str,
    k: float,
    runs: int,
    pipeline: str | None,
    task: str | None,
    description: str,
    webhooks: tuple[str, ...],
    emails: tuple[str, ...],
    disabled: bool,
    fmt: str,
) -> None:
    """Create or change the alert rule RULE_ID."""
    from stageflow import operations as ops
    from stageflow.operations import alerts as alert_ops

    channels: list[dict[str, Any]] = [{"webhook": url} for url in webhooks]
    if emails:
        channels.append({"email": list(emails)})
    with ops.writing(settings) as store:
        rule = alert_ops.add_rule(
            store,
            rule_id,
            metric=metric,
            condition=condition,
            threshold=_threshold(threshold, condition),
            severity=severity,
            cooldown=cooldown,
            window=window,
            k=k,
            runs=runs,
            pipeline=pipeline,
            task=task,
            description=description,
            channels=channels,
            enabled=not disabled,
            owner=None,
            see_all=True,
            may_run_commands=True,
        )
    _print_rule(rule, fmt)


@rules.command("apply")
@click.argument("target", metavar="FILE")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def apply(settings: Any, target: str, fmt: str) -> None:
    """Save the pipeline in FILE and register its `alerts:` as PIPELINE.ID."""
    import time

    from stageflow import operations as ops
    from stageflow.errors import UsageError
    from stageflow.runtime.loading import load_pipeline
    from stageflow.runtime.plan import check

    pipeline = load_pipeline(target, settings.limits)
    check(pipeline)  # InvalidSpec: every problem, its alerts' and deadlines' included
    if not pipeline.alerts:
        raise UsageError(
            f"{target}: pipeline '{pipeline.name}' has no `alerts:`; add one "
            "({id: failing, metric: runs.failure_rate, threshold: 0.5}) or use "
            "`stageflow alerts rules add`",
            field="alerts",
        )
    with ops.writing(settings) as store:
        ops.publish_pipeline(
            store, pipeline, owner=pipeline.owner, now=time.time(), may_see_all=True
        )
        from stageflow.operations import alerts as alert_ops

        found = alert_ops.list_rules(store, owner=None, see_all=True)
    mine = [r for r in found if r.pipeline == pipeline.name and r.source == "spec"]
    if fmt == "json":
        click.echo(json.dumps({"rules": [alert_ops.rule_json(r) for r in mine]}))
        return
    for rule in mine:
        _print_rule(rule, fmt)


@rules.command("list")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def list_rules(settings: Any, fmt: str) -> None:
    """Every alert rule, by id."""
    from stageflow import operations as ops
    from stageflow.operations import alerts as alert_ops

    with ops.writing(settings) as store:
        found = alert_ops.list_rules(store, owner=None, see_all=True)
    if fmt == "json":
        click.echo(json.dumps({"rules": [alert_ops.rule_json(r) for r in found]}))
        return
    if not found:
        click.echo("no alert rules; add one with `stageflow alerts rules add`")
    for rule in found:
        _print_rule(rule, fmt)


@rules.command("show")
@click.argument("rule_id")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def show_rule(settings: Any, rule_id: str, fmt: str) -> None:
    """One alert rule."""
    from stageflow import operations as ops
    from stageflow.operations import alerts as alert_ops

    with ops.writing(settings) as store:
        rule = alert_ops.show_rule(store, rule_id, owner=None, see_all=True)
    _print_rule(rule, fmt)


@rules.command("remove")
@click.argument("rule_id")
@click.pass_obj
def remove_rule(settings: Any, rule_id: str) -> None:
    """Delete an alert rule (its alerts stay)."""
    from stageflow import operations as ops
    from stageflow.operations import alerts as alert_ops

    with ops.writing(settings) as store:
        alert_ops.remove_rule(store, rule_id, owner=None, see_all=True)
    click.echo(f"removed alert rule {rule_id}")


def _set_enabled(settings: Any, rule_id: str, enabled: bool, fmt: str) -> None:
    from stageflow import operations as ops
    from stageflow.operations import alerts as alert_ops

    with ops.writing(settings) as store:
        rule = alert_ops.set_rule_enabled(store, rule_id, enabled, owner=None, see_all=True)
    _print_rule(rule, fmt)


@rules.command("enable")
@click.argument("rule_id")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def enable(settings: Any, rule_id: str, fmt: str) -> None:
    """Evaluate the rule again."""
    _set_enabled(settings, rule_id, True, fmt)


@rules.command("disable")
@click.argument("rule_id")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def disable(settings: Any, rule_id: str, fmt: str) -> None:
    """Stop evaluating the rule (its open alerts stay)."""
    _set_enabled(settings, rule_id, False, fmt)


@alerts.command("metrics")
@click.option("--format", "fmt", type=FORMAT, default="text")
def metrics(fmt: str) -> None:
    """The metrics a rule may watch."""
    from stageflow.engine.alerts import METRICS

    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "metrics": [
                        {"name": m.name, "meaning": m.meaning, "unit": m.unit, "subject": m.subject}
                        for m in METRICS.values()
                    ]
                }
            )
        )
        return
    for m in METRICS.values():
        click.echo(f"{m.name:<24} {m.unit:<12} {m.meaning}")
    click.echo(f"{'task.<task id>.<name>':<24} {'as recorded':<12} a metric a task records")


@alerts.command("list")
@click.option("--state", default=None, help="open, acknowledged or resolved.")
@click.option("--severity", default=None, help="info, warning or critical.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def list_alerts(
    settings: Any, state: str | None, severity: str | None, limit: int, fmt: str
) -> None:
    """Alerts, newest first."""
    from stageflow import operations as ops
    from stageflow.operations import alerts as alert_ops

    with ops.writing(settings) as store:
        found = alert_ops.list_alerts(
            store, state=state, severity=severity, limit=limit, owner=None, see_all=True
        )
    if fmt == "json":
        click.echo(json.dumps({"alerts": [alert_ops.alert_json(a) for a in found]}))
        return
    if not found:
        click.echo("no alerts")
    for alert in found:
        _print_alert(alert)


def _move(settings: Any, alert_id: str, action: str, by: str | None, fmt: str) -> None:
    from stageflow import operations as ops
    from stageflow.operations import alerts as alert_ops

    who = by or getpass.getuser()
    with ops.writing(settings) as store:
        do = alert_ops.ack_alert if action == "ack" else alert_ops.resolve_alert
        alert = do(store, alert_id, by=who, owner=None, see_all=True)
    if fmt == "json":
        click.echo(json.dumps(alert_ops.alert_json(alert)))
    else:
        _print_alert(alert)


@alerts.command("ack")
@click.argument("alert_id")
@click.option("--by", default=None, help="Who acknowledges it (default: the local user).")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def ack(settings: Any, alert_id: str, by: str | None, fmt: str) -> None:
    """Acknowledge an open alert."""
    _move(settings, alert_id, "ack", by, fmt)


@alerts.command("resolve")
@click.argument("alert_id")
@click.option("--by", default=None, help="Who resolves it (default: the local user).")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def resolve(settings: Any, alert_id: str, by: str | None, fmt: str) -> None:
    """Resolve an open or acknowledged alert."""
    _move(settings, alert_id, "resolve", by, fmt)
