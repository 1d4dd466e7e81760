"""The CLI's ``pipelines`` commands, attached to the main group by ``attach(cli)``.

* ``stageflow pipelines list``: every pipeline the store knows (saved when a run
  of it was created), with its versions, runs and newest version;
* ``stageflow pipelines versions NAME``: NAME's versions, newest first, with the
  runs of each (times in UTC);
* ``stageflow pipelines show NAME [--version V]``: a saved spec, as JSON.

They only read (``operations.pipelines``); an unknown name exits 1 naming the
closest one.
"""

from __future__ import annotations

import json
from typing import Any

import click

from stageflow.service.cli_options import FORMAT

__all__ = ["attach"]


def attach(cli: click.Group) -> None:
    """Add ``pipelines`` to ``cli``."""
    cli.add_command(pipelines)


@click.group()
def pipelines() -> None:
    """Pipelines saved in the store, and their versions."""


@pipelines.command("list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def pipelines_list(settings: Any, fmt: str) -> None:
    """Every pipeline in the store: versions, runs, newest version."""
    from stageflow import operations as ops
    from stageflow.service.tables import stamp

    with ops.reading(settings) as store:
        found = ops.list_pipelines(store)
    if fmt == "json":
        click.echo(json.dumps([p.as_json() for p in found]))
        return
    if not found:
        click.echo(
            "no pipelines yet; `stageflow run FILE` or `stageflow submit FILE` saves one",
            err=True,
        )
        return
    width = max(len("pipeline"), *(len(p.name) for p in found))
    click.echo(f"{'pipeline':<{width}}  {'versions':>8} {'runs':>6}  latest        last run")
    for p in found:
        click.echo(
            f"{p.name:<{width}}  {p.versions:>8} {p.runs:>6}  {p.latest_version:<12}  "
            f"{stamp(p.last_run_at)}"
        )


@pipelines.command("versions")
@click.argument("name")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def pipelines_versions(settings: Any, name: str, fmt: str) -> None:
    """NAME's saved versions, newest first, with the runs of each."""
    from stageflow import operations as ops
    from stageflow.service.tables import stamp

    with ops.reading(settings) as store:
        found = ops.pipeline_versions(store, name)
    if fmt == "json":
        click.echo(json.dumps([v.as_json() for v in found]))
        return
    click.echo(f"{'version':<12}  {'saved':<20} {'runs':>6}  last run")
    for v in found:
        click.echo(f"{v.version:<12}  {stamp(v.saved_at):<20} {v.runs:>6}  {stamp(v.last_run_at)}")


@pipelines.command("show")
@click.argument("name")
@click.option(
    "--version", "version", default="latest", show_default=True, help="Which saved version."
)
@click.pass_obj
def pipelines_show(settings: Any, name: str, version: str) -> None:
    """The saved spec of NAME (its canonical JSON, as runs of it used it)."""
    from stageflow import operations as ops

    with ops.reading(settings) as store:
        spec = ops.pipeline_spec(store, name, version)
    click.echo(json.dumps(spec, indent=2, sort_keys=True))
