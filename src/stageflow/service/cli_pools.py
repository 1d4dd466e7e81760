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
import time
from datetime import UTC, datetime
from typing import Any

import click

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
    from stageflow.operations import writing
    from stageflow.runtime import pools as global_pools

    with writing(settings) as store:
        size = global_pools.set_pool(store, name, slots, time.time())
    click.echo(f"pool '{name}': {size} slot{'s' if size != 1 else ''}", err=True)


@pools.command("list")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def list_(settings: Any, fmt: str) -> None:
    """Each pool's size and the tasks holding its slots now."""
    from stageflow.operations import writing
    from stageflow.runtime import pools as global_pools
    from stageflow.runtime.resources import configured_pools

    now = time.time()
    with writing(settings) as store:
        found = global_pools.list_pools(store, configured_pools(), now)
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
    from stageflow.operations import writing
    from stageflow.runtime import pools as global_pools

    with writing(settings) as store:
        global_pools.remove_pool(store, name)
    click.echo(f"pool '{name}' removed", err=True)
