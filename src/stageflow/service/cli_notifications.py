"""The CLI's ``notifications`` commands, attached by ``attach(cli)``.

* ``stageflow notifications list [--run RUN_ID] [--state STATE] [--limit N]
  [--format json]``: the delivery log (``runtime.notify``), newest first: each
  notification's channel, target (a webhook as its scheme and host, a secret by name),
  state, attempts and last error.

A mistake exits 2 naming the option and the fix.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from stageflow.service.cli_options import FORMAT

__all__ = ["attach", "notifications"]

_STATES = ("pending", "sending", "delivered", "failed")  # operations.NOTIFICATION_STATES


def attach(cli: click.Group) -> None:
    """Add ``notifications`` to ``cli``."""
    cli.add_command(notifications)


@click.group()
def notifications() -> None:
    """Notifications sent by pipeline hooks (on_failure, on_success, on_retry) and alerts."""


@notifications.command("list")
@click.option("--run", "run_id", metavar="RUN_ID", default=None, help="Only this run's.")
@click.option("--state", type=click.Choice(_STATES), default=None, help="Only in this state.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def list_(settings: Any, run_id: str | None, state: str | None, limit: int, fmt: str) -> None:
    """The deliveries of notifications, newest first."""
    from stageflow import operations as ops

    if run_id is not None:
        ops.check_run_id(run_id, "--run")
    with ops.reading(settings) as store:
        found = ops.list_notifications(
            store, run_id=run_id, state=state, owner=None, see_all=True, limit=limit
        )
    if fmt == "json":
        click.echo(json.dumps([n.as_json() for n in found]))
        return
    if not found:
        click.echo("no notifications", err=True)
        return
    click.echo(
        f"{'ID':>5}  {'CREATED':<19}  {'KIND':<10}  {'RUN':<22}  {'CHANNEL':<7}  "
        f"{'STATE':<9}  {'TRIES':>5}  TARGET"
    )
    for n in found:
        created = f"{datetime.fromtimestamp(n.created_at, UTC):%Y-%m-%d %H:%M:%S}"
        click.echo(
            f"{n.id:>5}  {created:<19}  {n.kind:<10}  {n.run_id or '-':<22}  {n.channel:<7}  "
            f"{n.state:<9}  {n.attempts:>5}  {n.target}"
        )
        if n.last_error and n.state != "delivered":
            click.echo(f"{'':>7}last error: {n.last_error.splitlines()[0]}")
