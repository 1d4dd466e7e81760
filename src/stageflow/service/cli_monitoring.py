"""The CLI's monitoring commands, attached to the main group by ``attach(cli)``.

``stageflow metrics history NAME... [--from T] [--to T] [--format table|json]``,
``stageflow metrics current [--format table|json]``, ``stageflow metrics export
[--from T] [--to T] [--format csv|json] [--output FILE] [--name NAME...]``: the
monitor's samples (``runtime.monitor``; every worker and scheduler records them).
``stageflow statistics [PIPELINE] [--days N] [--format table|json]``: runs, success
rate, durations, MTTR/MTBF, failures by task and error type, queue wait, per pipeline
(``engine.reliability``; ``stageflow stats`` beside it gives per-task figures).
``stageflow gates PIPELINE [--days N] [--min-success-rate P] [--max-recovery D]
[--max-duration D] [--format table|json]``: seed 002's quality gates; exit 0 when
all pass, 1 when one fails, 2 for bad input. Times: ISO 8601, ``now`` or relative
(``-1h``). Everything here only reads: the store is opened read-only.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from stageflow.operations.monitoring import GateReport, PipelineReliability

__all__ = ["attach"]


def attach(cli: click.Group) -> None:
    """Add ``metrics``, ``statistics`` and ``gates`` to ``cli``."""
    cli.add_command(metrics)
    cli.add_command(statistics)
    cli.add_command(gates)


_FROM = click.option(
    "--from",
    "start",
    metavar="TIME",
    help="Start (inclusive): ISO 8601, now, or relative (-1h, -30m, -2d). Default: an "
    "hour before --to.",
)
_TO = click.option("--to", "end", metavar="TIME", help="End (inclusive), as --from. Default: now.")
_DAYS = click.option(
    "--days",
    type=click.IntRange(min=1, max=3660),
    default=7,
    show_default=True,
    help="Runs created in the last N x 24 hours.",
)


@click.group()
def metrics() -> None:
    """The monitor's samples: host CPU, memory, disk, load; running task processes'
    memory and CPU; queued and running runs, live workers (every worker and scheduler
    samples them every STAGEFLOW_SAMPLING_INTERVAL_SECONDS)."""


@metrics.command("history")
@click.argument("names", nargs=-1, required=True)
@_FROM
@_TO
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def history(
    settings: Any, names: tuple[str, ...], start: str | None, end: str | None, fmt: str
) -> None:
    """The samples of the metrics NAMES between --from and --to."""
    from stageflow import operations as ops

    now = time.time()
    since, until = ops.time_range(start, end, now)
    with ops.reading(settings) as store:
        found = ops.metrics_history(store, names, since, until)
    if fmt == "json":
        click.echo(json.dumps(found.as_json()))
        return
    if not found.samples:
        click.echo(f"no samples of {', '.join(names)} in that range", err=True)
        return
    click.echo(f"{'at (UTC)':<26} {'name':<18} {'host':<20} {'value':>16}")
    for s in found.samples:
        click.echo(f"{_utc(s.at):<26} {s.name:<18} {s.host or '-':<20} {_value(s.value):>16}")


@metrics.command("current")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def current(settings: Any, fmt: str) -> None:
    """The newest sample of each metric, per host and of the store."""
    from stageflow import operations as ops

    with ops.reading(settings) as store:
        found = ops.current_metrics(store, time.time(), settings.sampling_interval_seconds)
    if fmt == "json":
        click.echo(json.dumps(found.as_json()))
        return
    if found.sampled_at is None:
        click.echo(
            "no recent samples: a `stageflow worker` or `stageflow scheduler` records them "
            f"every {settings.sampling_interval_seconds:g}s",
            err=True,
        )
        return
    click.echo(f"sampled at {_utc(found.sampled_at)}")
    for host, values in sorted(found.hosts.items()):
        click.echo(f"host {host}:")
        for name, value in sorted(values.items()):
            click.echo(f"  {name:<20} {_value(value):>16}")
    if found.store:
        click.echo("store:")
        for name, value in sorted(found.store.items()):
            click.echo(f"  {name:<20} {_value(value):>16}")
    for s in found.tasks:
        where = f"{s.labels.get('run_id')}/{s.labels.get('task_id')}"
        click.echo(f"task {where} on {s.host}: {s.name} {_value(s.value)}")


@metrics.command("export")
@_FROM
@_TO
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (default: standard output).",
)
@click.option("--name", "names", multiple=True, help="Only this metric (repeatable).")
@click.pass_obj
def export(
    settings: Any,
    start: str | None,
    end: str | None,
    fmt: str,
    output: Path | None,
    names: tuple[str, ...],
) -> None:
    """Every sample between --from and --to as CSV (a header, one row per sample, times
    in ISO 8601 UTC) or a JSON list."""
    from stageflow import operations as ops
    from stageflow.errors import UsageError

    now = time.time()
    since, until = ops.time_range(start, end, now)
    with ops.reading(settings) as store:
        found = ops.metrics_history(store, names, since, until)
    text = ops.export_text(found.samples, fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise UsageError(
            f"--output {output}: cannot write it ({exc.strerror}); name a file in a folder "
            "that exists",
            field="output",
        ) from None
    click.echo(f"{len(found.samples)} samples written to {output}", err=True)


@click.command()
@click.argument("pipeline", required=False)
@_DAYS
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def statistics(settings: Any, pipeline: str | None, days: int, fmt: str) -> None:
    """Reliability of PIPELINE (or of every pipeline) over its recent runs: runs,
    success rate, duration p50/p95/p99, queue wait p50/p95, MTTR, MTBF, failures by
    task and by error type. Exit 2 for an unknown pipeline."""
    from stageflow import operations as ops
    from stageflow.service.cli import _remote

    if (remote := _remote(settings)) is not None:
        reports = remote.statistics(pipeline, days)
    else:
        with ops.reading(settings) as store:
            reports = ops.pipeline_statistics(store, pipeline, days=days, now=time.time())
    if fmt == "json":
        click.echo(json.dumps({"days": days, "pipelines": [r.as_json() for r in reports]}))
        return
    if not reports:
        click.echo("no pipelines in the store", err=True)
    for report in reports:
        for line in _statistics_lines(report):
            click.echo(line)


@click.command()
@click.argument("pipeline")
@_DAYS
@click.option(
    "--min-success-rate",
    type=click.FloatRange(min=0, max=100),
    default=95.0,
    show_default=True,
    help="Reliability: the success rate must be above this percent.",
)
@click.option(
    "--max-recovery",
    default="30m",
    show_default=True,
    metavar="DURATION",
    help="Recovery: MTTR (and a failure not yet recovered) must stay below this (90s, 30m, 2h).",
)
@click.option(
    "--max-duration",
    default="4h",
    show_default=True,
    metavar="DURATION",
    help="Execution time: the p95 run duration must be below this.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def gates(
    settings: Any,
    pipeline: str,
    days: int,
    min_success_rate: float,
    max_recovery: str,
    max_duration: str,
    fmt: str,
) -> None:
    """Seed 002's quality gates on PIPELINE's recent runs: reliability (success rate >
    95%), recovery (MTTR < 30 min), execution time (p95 < 4 h). Exit 0 when every gate
    passes, 1 when one fails, 2 for bad input."""
    from stageflow import operations as ops
    from stageflow.engine.reliability import Thresholds
    from stageflow.spec.times import parse_duration

    thresholds = Thresholds(
        min_success_rate=min_success_rate,
        max_recovery_seconds=parse_duration(max_recovery, "--max-recovery"),
        max_duration_seconds=parse_duration(max_duration, "--max-duration"),
    )
    from stageflow.service.cli import _remote

    if (remote := _remote(settings)) is not None:  # the limits are checked here first
        report = remote.gates(pipeline, days, min_success_rate, max_recovery, max_duration)
    else:
        with ops.reading(settings) as store:
            report = ops.quality_gates(
                store, pipeline, days=days, now=time.time(), thresholds=thresholds
            )
    if fmt == "json":
        click.echo(json.dumps(report.as_json()))
    else:
        for line in _gate_lines(report):
            click.echo(line)
    if not report.passed:
        sys.exit(1)


def _statistics_lines(report: PipelineReliability) -> list[str]:
    s = report.stats
    rate = "-" if s.success_rate is None else f"{s.success_rate * 100:.1f}%"
    states = ", ".join(f"{k} {v}" for k, v in sorted(s.runs_by_state.items())) or "none"
    lines = [
        f"pipeline {report.pipeline} (last {report.days} days): {s.runs} runs ({states})",
        f"  success rate      {rate}",
        f"  duration          p50 {_secs(s.duration_p50)}  p95 {_secs(s.duration_p95)}  "
        f"p99 {_secs(s.duration_p99)}",
        f"  queue wait        p50 {_secs(s.queue_wait_p50)}  p95 {_secs(s.queue_wait_p95)}",
        f"  MTTR              {_secs(s.mttr_seconds)} ({s.recoveries} recoveries)",
        f"  MTBF              {_secs(s.mtbf_seconds)} ({s.failures} failed runs)",
    ]
    if s.open_incident_since is not None:
        lines.append(f"  failing since     {_utc(s.open_incident_since)} (not recovered)")
    if s.failures_by_task:
        by_task = ", ".join(f"{k} {v}" for k, v in s.failures_by_task.items())
        lines.append(f"  failures by task  {by_task}")
    if s.failures_by_error:
        by_error = ", ".join(f"{k} {v}" for k, v in s.failures_by_error.items())
        lines.append(f"  failures by error {by_error}")
    return lines


def _gate_lines(report: GateReport) -> list[str]:
    lines = [f"quality gates of {report.pipeline} (last {report.days} days):"]
    for g in report.gates:
        figure = "-" if g.figure is None else f"{g.figure:.1f}{g.unit}"
        lines.append(
            f"  {'PASS' if g.passed else 'FAIL'}  {g.gate:<15} {figure:>12}  "
            f"threshold {g.threshold:g}{g.unit}  ({g.reason})"
        )
    lines.append("all gates pass" if report.passed else "a gate failed")
    return lines


def _utc(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _value(value: float) -> str:
    return f"{value:.0f}" if value.is_integer() else f"{value:.3f}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"
