"""The CLI's ``stats`` command, attached to the main group by ``attach(cli)``.

``stageflow stats PIPELINE [--days N] [--format text|json|csv]``: per-task runs,
successes, failures, success rate, duration p50/p95 and last failure over the
pipeline's recent runs (``operations.stats``; ``runtime.stats`` says what counts).
It only reads: the store is opened read-only.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from typing import Any

import click

__all__ = ["attach"]

#: The CSV columns: a task's JSON fields, in this order.
CSV_COLUMNS = (
    "task_id",
    "runs",
    "successes",
    "failures",
    "other",
    "success_rate",
    "p50_seconds",
    "p95_seconds",
    "last_failure_at",
    "last_failure_run_id",
    "last_failure",
)


def attach(cli: click.Group) -> None:
    """Add ``stats`` to ``cli``."""
    cli.add_command(stats)


@click.command()
@click.argument("pipeline")
@click.option(
    "--days",
    type=click.IntRange(min=1, max=3660),
    default=30,
    show_default=True,
    help="Runs created in the last N UTC days, today included.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "csv"]),
    default="text",
    show_default=True,
)
@click.pass_obj
def stats(settings: Any, pipeline: str, days: int, fmt: str) -> None:
    """Per-task statistics of PIPELINE across its recent runs.

    For each task: task runs counted, successes, failures, success rate, duration
    p50/p95 of its successful attempts, and its last failure. A mapped task's
    elements (train[3]) count under the task (train). Exit 1 for an unknown
    pipeline."""
    from stageflow import operations as ops
    from stageflow.runtime.stats import MAX_TASK_RUNS
    from stageflow.service.cli import _remote
    from stageflow.service.tables import render_stats

    if (remote := _remote(settings)) is not None:
        report = remote.stats(pipeline, days)
    else:
        with ops.reading(settings) as store:
            report = ops.stats(store, pipeline, days=days, now=time.time())
    if not report.tasks:
        click.echo(f"no runs of pipeline '{pipeline}' created in the last {days} days", err=True)
    if fmt == "json":
        click.echo(json.dumps(report.as_json()))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for task in report.tasks:
            writer.writerow(task.as_json())
    elif report.tasks:
        for line in render_stats(report):
            click.echo(line)
    if report.truncated:
        click.echo(
            f"only the newest {MAX_TASK_RUNS} task runs were read (runs by state count "
            "them all); lower --days for a complete window",
            err=True,
        )
