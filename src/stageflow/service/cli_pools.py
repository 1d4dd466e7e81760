"""The CLI's ``pools`` commands, attached to the main group by ``attach(cli)``.

Global pools (``runtime.pools``) are kept in the store and shared by every
worker and ``stageflow run`` process on it:

* ``stageflow pools set NAME SLOTS``: create a pool or change its size;
* ``stageflow pools list [--format text|json]``: each pool's size and who holds
  its slots now (run, task, attempt, since when); pools in ``STAGEFLOW_POOLS``
  that the store lacks are created first, as a run would;
* ``stageflow pools remove NAME``: delete a pool (tasks naming it then fail
  validation).

A bad name or size, or an unknown pool to remove, exits 2 with the reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from stageflow.service.cli_options import FORMAT

__all__ = ["attach", "pools"]


def attach(cli: click.Group) -> None:
    """Add ``pools`` to ``cli``."""
    cli.add_command(pools)


@click.group()
def pools() -> None:
    """Global pools: slots shared by every process on the store (like Airflow's pools)."""


# ``ignore_unknown_options``: a negative SLOTS ("-1") is an argument to refuse with a
# clear message, not an unknown option.
@pools.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("slots")
@click.pass_obj
def set_(settings: Any, name: str, slots: str) -> None:
    """Create pool NAME with SLOTS slots, or change its size (holders keep theirs)."""
    from stageflow import operations as ops

    size = ops.set_pool(settings, name, slots)
    click.echo(f"pool '{name}': {size} slot{'s' if size != 1 else ''}", err=True)


@pools.command("list")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def list_(settings: Any, fmt: str) -> None:
    """Each pool's size and the tasks holding its slots now."""
    from stageflow import operations as ops

    found = ops.list_pools(settings)
    if fmt == "json":
        click.echo(json.dumps([p.as_json() for p in found]))
        return
    if not found:
        click.echo("no pools; create one with `stageflow pools set NAME SLOTS`", err=True)
        return
    width = max(4, *(len(p.name) for p in found))
    click.echo(f"{'POOL':<{width}}  SLOTS  USED  HOLDERS")
    for p in found:
        holders = ", ".join(
            f"run {h.run_id} task {h.task_id} (attempt {h.attempt}) since "
            f"{datetime.fromtimestamp(h.acquired_at, UTC):%H:%M:%S} UTC"
            for h in p.holders
        )
        click.echo(f"{p.name:<{width}}  {p.slots:>5}  {p.used:>4}  {holders or '-'}")


@pools.command("remove")
@click.argument("name")
@click.pass_obj
def remove(settings: Any, name: str) -> None:
    """Delete pool NAME and its holdings."""
    from stageflow import operations as ops

    ops.remove_pool(settings, name)
    click.echo(f"pool '{name}' removed", err=True)
