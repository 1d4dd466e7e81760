"""The ``stageflow`` command line: a contract other tools script against.

Exit codes: 0 success, 1 a run that failed (or a missing run), 2 an invalid
spec or a bad argument. Every message goes to stderr; ``--format json`` puts
exactly one JSON value on stdout. A user mistake never prints a traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, cast

import click

from stageflow.errors import StageflowError, UsageError
from stageflow.runtime.host import tune_gc
from stageflow.service.cli_options import FORMAT, PARAM_OPTION

__all__ = ["main"]

#: Bounds of counting options, so that a huge number is a usage error rather than
#: an overflow in the store: ``--max-parallel`` as ``max_parallel_tasks`` in a spec.
MAX_PARALLEL = 100_000
MAX_LISTED = 1_000_000


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the click app, turning user mistakes into exit codes."""
    tune_gc()  # this process exists to run pipelines (a host embedded elsewhere does not)
    try:
        cli.main(args=argv, prog_name="stageflow", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show(file=sys.stderr)
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except StageflowError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:  # a bug in stageflow: say so plainly
        if os.environ.get("STAGEFLOW_DEBUG"):
            raise
        click.echo(
            f"stageflow: internal error (a bug, please report it): "
            f"{type(exc).__name__}: {exc}; set STAGEFLOW_DEBUG=1 for the traceback",
            err=True,
        )
        sys.exit(70)
    sys.exit(0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stageflow")
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="STAGEFLOW_HOME",
    help="State folder (SQLite store, artifacts, logs). Default ./.stageflow",
)
@click.option(
    "--server",
    default=None,
    metavar="URL",
    help="Read and control runs through this `stageflow serve` (STAGEFLOW_SERVER; token: "
    "STAGEFLOW_TOKEN): runs list/show/diff/cost, logs, lineage RUN_ID/TASK, stats, "
    "statistics, gates, cancel, pause, unpause, approve, retry, submit. Other commands "
    "that read the store refuse it.",
)
@click.pass_context
def cli(ctx: click.Context, home: str | None, server: str | None) -> None:
    """stageflow: run ML pipelines (DAGs of tasks) durably, in parallel."""
    from dataclasses import replace

    from stageflow.runtime.settings import load_settings

    settings = load_settings()
    if server:
        settings = replace(settings, server_url=server)
    if home:
        settings = replace(settings, home=Path(home))
        # Code that reads settings itself (e.g. `use: NAME@VERSION`) sees the same home.
        os.environ["STAGEFLOW_HOME"] = home
    _configure_logging(settings.log_level)
    ctx.obj = settings


# -- run / resume -------------------------------------------------------------------


def _capacity_options(f: Any) -> Any:
    """``--cpus/--memory-gb/--gpus``: the capacity tasks' requests are admitted
    against (default: detected; ``STAGEFLOW_MAX_CPU_CORES`` etc. in the environment)."""

    def apply(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
        if value is not None and not math.isfinite(value):  # FloatRange lets nan through
            raise click.BadParameter(f"{value} is not a finite number", ctx, param)
        if value is not None:
            names = {"cpus": "CPU_CORES", "memory_gb": "MEMORY_GB", "gpus": "GPU_COUNT"}
            os.environ[f"STAGEFLOW_MAX_{names[str(param.name)]}"] = f"{value:g}"

    for name, kind, text in (
        ("--gpus", click.IntRange(min=0), "GPUs tasks may use (default: detected)"),
        ("--memory-gb", click.FloatRange(min=0), "memory tasks may use (default: the machine's)"),
        ("--cpus", click.FloatRange(min=0), "CPUs tasks may use (default: the machine's)"),
    ):
        f = click.option(
            name, type=kind, default=None, callback=apply, expose_value=False, help=text
        )(f)
    return f


@cli.command()
@click.argument("target")
@PARAM_OPTION
@click.option(
    "--executor", type=click.Choice(["thread", "process"]), default="thread", show_default=True
)
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1, max=MAX_PARALLEL),
    default=None,
    help="At most this many tasks at once (default: the pipeline's, else CPU count).",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Run tasks with `cache: true` anyway (their cache entries are refreshed).",
)
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@_capacity_options
@click.pass_obj
def run(
    settings: Any,
    target: str,
    params: tuple[str, ...],
    executor: str,
    max_parallel: int | None,
    no_cache: bool,
    fmt: str,
) -> None:
    """Validate and run TARGET (a .yaml/.json file, or module:pipeline).

    Tasks that declare `resources:` start only when their request fits in what is
    free of this machine's CPUs, memory and GPUs (--cpus/--memory-gb/--gpus)."""
    from stageflow import operations as ops
    from stageflow.errors import InvalidSpec
    from stageflow.runtime.loading import load_pipeline

    overrides = _parse_params(params)
    try:
        pipeline = load_pipeline(target, settings.limits)
    except StageflowError as exc:  # as `validate` reports it
        if fmt == "json":
            click.echo(_invalid_json(exc))
        raise
    try:
        _run_shown(
            fmt,
            lambda listener, on_start, interrupt: ops.start(
                settings,
                pipeline,
                overrides,
                executor=executor,
                max_parallel=max_parallel,
                use_cache=not no_cache,
                listener=listener,
                on_start=on_start,
                interrupt=interrupt,
            ),
        )
    except InvalidSpec as exc:  # refused before any task ran (parameters, resources)
        if fmt == "json":
            click.echo(_invalid_json(exc))
        raise


@cli.command()
@click.argument("run_id")
@click.option(
    "--executor", type=click.Choice(["thread", "process"]), default="thread", show_default=True
)
@click.option("--max-parallel", type=click.IntRange(min=1, max=MAX_PARALLEL), default=None)
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@_capacity_options
@click.pass_obj
def resume(settings: Any, run_id: str, executor: str, max_parallel: int | None, fmt: str) -> None:
    """Finish RUN_ID after a crash: re-run exactly the tasks without a committed success.

    A paused run that a live process still runs is unpaused instead (see `unpause`)."""
    from stageflow import operations as ops

    _run_shown(
        fmt,
        lambda listener, on_start, interrupt: ops.resume(
            settings,
            run_id,
            executor=executor,
            max_parallel=max_parallel,
            listener=listener,
            on_start=on_start,
            interrupt=interrupt,
        ),
    )


# -- run control: retry / cancel / pause / unpause / approve ---------------------------


@cli.command()
@click.argument("run_id")
@click.option(
    "--from",
    "from_task",
    metavar="TASK",
    default=None,
    help="Also run TASK and everything downstream of it again, even if they succeeded.",
)
@click.option(
    "--executor", type=click.Choice(["thread", "process"]), default="thread", show_default=True
)
@click.option("--max-parallel", type=click.IntRange(min=1, max=MAX_PARALLEL), default=None)
@click.option("--no-cache", is_flag=True, help="Run tasks with `cache: true` anyway.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@_capacity_options
@click.pass_obj
def retry(
    settings: Any,
    run_id: str,
    from_task: str | None,
    executor: str,
    max_parallel: int | None,
    no_cache: bool,
    fmt: str,
) -> None:
    """Run the failed/cancelled tasks of the ended RUN_ID again, in the same run.

    Successful outputs are reused; attempt numbers go on. Through a server the run is
    queued again for its workers (the options of this process's executor do not apply)."""
    from stageflow import operations as ops

    if (remote := _remote(settings)) is not None:
        _server_takes_no(
            "retry", ("executor", "max_parallel", "no_cache", "cpus", "memory_gb", "gpus")
        )
        outcome = remote.retry(run_id, from_task)
        click.echo(outcome.message, err=True)
        if fmt == "json":
            click.echo(json.dumps(outcome.as_json()))
        return
    _run_shown(
        fmt,
        lambda listener, on_start, interrupt: ops.retry(
            settings,
            run_id,
            from_task=from_task,
            executor=executor,
            max_parallel=max_parallel,
            use_cache=not no_cache,
            listener=listener,
            on_start=on_start,
            interrupt=interrupt,
        ),
    )


#: Kept for scripts that pass it: without a server it may only repeat who runs the command
#: (``_caller``); with one, who asks is the token's name (``_remote``).
_BY = click.option(
    "--by",
    default=None,
    metavar="NAME",
    hidden=True,
    help="Who asks: only the operating-system user running the command (the default).",
)


@cli.command()
@click.argument("run_id")
@_BY
@click.pass_obj
def cancel(settings: Any, run_id: str, by: str | None) -> None:
    """Cancel RUN_ID: running attempts are stopped, every unfinished task is cancelled."""
    from stageflow import operations as ops

    if (remote := _remote(settings, by)) is not None:
        click.echo(remote.control(run_id, "cancel").message, err=True)
        return
    click.echo(ops.cancel(settings, run_id, by=_caller(by)).message, err=True)


@cli.command()
@click.argument("run_id")
@_BY
@click.pass_obj
def pause(settings: Any, run_id: str, by: str | None) -> None:
    """Pause RUN_ID: running tasks finish, no new task starts until `unpause`."""
    from stageflow import operations as ops

    if (remote := _remote(settings, by)) is not None:
        click.echo(remote.control(run_id, "pause").message, err=True)
        return
    click.echo(ops.pause(settings, run_id, by=_caller(by)).message, err=True)


@cli.command()
@click.argument("run_id")
@_BY
@click.pass_obj
def unpause(settings: Any, run_id: str, by: str | None) -> None:
    """Let the paused RUN_ID start tasks again."""
    from stageflow import operations as ops

    if (remote := _remote(settings, by)) is not None:
        click.echo(remote.control(run_id, "unpause").message, err=True)
        return
    click.echo(ops.unpause(settings, run_id, by=_caller(by)).message, err=True)


@cli.command()
@click.argument("run_id")
@click.argument("task")
@click.option("--reject", is_flag=True, help="Reject: the task fails instead of running.")
@click.option("--comment", default=None, metavar="TEXT", help="Why; recorded with the decision.")
@_BY
@click.pass_obj
def approve(
    settings: Any, run_id: str, task: str, reject: bool, comment: str | None, by: str | None
) -> None:
    """Decide the approval gate of TASK in RUN_ID: it runs (or, with --reject, fails)."""
    from stageflow import operations as ops

    if (remote := _remote(settings, by)) is not None:
        click.echo(remote.decide(run_id, task, not reject, comment).message, err=True)
        return
    decide = ops.reject if reject else ops.approve
    click.echo(decide(settings, run_id, task, comment=comment, by=_caller(by)).message, err=True)


# -- validate / graph -----------------------------------------------------------------


@cli.command()
@click.argument("target")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def validate(settings: Any, target: str, fmt: str) -> None:
    """Check TARGET without running it; print every problem at once.

    Resource requests larger than this machine are warnings here (exit 0): the
    pipeline may be meant for a bigger one; `run` here refuses them."""
    from stageflow.graph import critical_path, shape
    from stageflow.runtime.loading import load_pipeline
    from stageflow.runtime.plan import check
    from stageflow.runtime.resources import operator_defaults

    try:
        pipeline = load_pipeline(target, settings.limits)
        plan = check(pipeline, operator_defaults=operator_defaults())
        warnings = _fits_warnings(pipeline, plan, settings)
    except StageflowError as exc:  # InvalidSpec, or a file/module that cannot be loaded
        if fmt == "json":
            click.echo(_invalid_json(exc))
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    upstream = pipeline.upstream_map()
    s = shape(upstream)
    path = critical_path(upstream, {})
    notes: list[str] = getattr(pipeline, "_notes", [])
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "valid": True,
                    "errors": [],
                    "summary": {
                        "tasks": s.tasks,
                        "edges": s.edges,
                        "depth": s.depth,
                        "width": s.width,
                        "critical_path": path.tasks,
                    },
                    "notes": notes,
                    "warnings": [p.as_json() for p in warnings],
                }
            )
        )
    else:
        click.echo(
            f"{target}: pipeline '{pipeline.name}' is valid: {s.tasks} tasks, "
            f"{s.edges} edges, depth {s.depth}, width {s.width}"
        )
        for note in notes:  # accepted but not done (seed 002's email_on_failure)
            click.echo(f"note: {note}", err=True)
    if warnings:
        count = f"{len(warnings)} resource request{'s' if len(warnings) != 1 else ''}"
        click.echo(
            f"warning: {count} will not fit this machine; `stageflow run` here refuses "
            "them (the machine or cluster the pipeline runs on may have room):",
            err=True,
        )
        for problem in warnings:
            click.echo(f"  - {problem.render()}", err=True)


def _invalid_json(exc: StageflowError) -> str:
    """``validate``'s JSON answer for a spec that is refused: ``valid`` false and
    every problem."""
    return json.dumps(
        {"valid": False, "errors": [p.as_json() for p in exc.problems], "summary": None}
    )


def _fits_warnings(pipeline: Any, plan: Any, settings: Any) -> list[Any]:
    """Requests that can never fit this machine: warnings here, since a pipeline is
    often validated on a laptop for a bigger server or a cluster (``run`` on the
    local executors refuses them)."""
    if not plan.needs_admission():
        return []
    from stageflow.runtime.resources import detect_capacity, resource_problems

    return resource_problems(pipeline, plan, detect_capacity(settings.home))


@cli.command()
@click.argument("target", required=False)
@click.option("--run", "run_id", help="Draw the pipeline of this run, coloured by task state.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "dot", "mermaid", "svg", "png"]),
    default="text",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to this file (required for png).",
)
@click.option(
    "--collapse", is_flag=True, help="Draw each task group (`use:` template) as one node."
)
@click.pass_obj
def graph(
    settings: Any,
    target: str | None,
    run_id: str | None,
    fmt: str,
    output: str | None,
    collapse: bool,
) -> None:
    """Analyse and draw TARGET's DAG: order, levels, critical path, a picture."""
    from stageflow.graph import DrawFormat, critical_path, draw, levels

    states: dict[str, str] | None = None
    durations: dict[str, float] = {}
    if (target is None) == (run_id is None):
        raise UsageError("give either a pipeline file/module or --run RUN_ID")
    if run_id is not None:
        import time

        from stageflow import operations as ops

        _local_only(settings, "graph --run")
        with ops.reading(settings) as store:
            detail = ops.show_run(store, run_id, now=time.time())
        pipeline, result = detail.pipeline, detail.result
        states = {tid: t.state for tid, t in result.tasks.items()}
        durations = {
            tid: t.duration_s for tid, t in result.tasks.items() if t.duration_s is not None
        }
    else:
        from stageflow.runtime.loading import load_pipeline
        from stageflow.runtime.plan import check

        pipeline = load_pipeline(target or "", settings.limits)
        check(pipeline)
    upstream = pipeline.upstream_map()
    if collapse:
        upstream, states = _collapsed(pipeline, upstream, states)
        durations = {}
    if fmt == "png" and output is None:
        raise UsageError("--format png writes binary data: give -o FILE.png")
    picture = draw(upstream, cast(DrawFormat, fmt), states=states, title=pipeline.name)
    if isinstance(picture, str) and fmt == "text":
        path = critical_path(upstream, durations)
        lv = levels(upstream)
        picture = (
            f"{picture}\n"
            f"critical path: {' -> '.join(path.tasks)} ({path.length:g}"
            f"{'s measured' if durations else ' task units'})\n"
            f"levels: {len(lv)}, width: {max((len(x) for x in lv), default=0)}\n"
        )
    if output is not None:
        data = picture if isinstance(picture, bytes) else picture.encode()
        Path(output).write_bytes(data)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(picture if isinstance(picture, str) else picture.decode(), nl=False)


# -- runs / logs ----------------------------------------------------------------------------


@cli.group()
def runs() -> None:
    """Inspect recorded runs."""


@runs.command("list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.option("--limit", type=click.IntRange(min=1, max=MAX_LISTED), default=50, show_default=True)
@click.option("--pipeline", default=None, help="Only runs of this pipeline.")
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help="Only runs in this state (repeatable): queued, running, paused, success, failed, "
    "cancelled.",
)
@click.option(
    "--since", default=None, metavar="TIME", help="Only runs created at or after TIME (ISO-8601)."
)
@click.option("--until", default=None, metavar="TIME", help="Only runs created before TIME.")
@click.option(
    "--cursor",
    default=None,
    metavar="CURSOR",
    help="Start after the last run of the previous page (its cursor is printed on stderr).",
)
@click.pass_obj
def runs_list(
    settings: Any,
    fmt: str,
    limit: int,
    pipeline: str | None,
    states: tuple[str, ...],
    since: str | None,
    until: str | None,
    cursor: str | None,
) -> None:
    """Recorded runs, newest first, a page of --limit at a time.

    A run whose lease expired says so: ``running — host:pid silent since 12:01:07 UTC,
    will be taken over``."""
    import time

    from stageflow import operations as ops
    from stageflow.runtime.result import iso

    if (remote := _remote(settings)) is not None:
        page = remote.list_runs(
            pipeline=pipeline,
            states=states,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
    else:
        which = ops.RunFilter(
            pipeline=pipeline,
            states=states,
            since=None if since is None else ops.parse_instant(since, "since"),
            until=None if until is None else ops.parse_instant(until, "until"),
            limit=limit,
            cursor=cursor,
        )
        with ops.reading(settings) as store:
            page = ops.list_runs(store, which, now=time.time())
    if fmt == "json":
        click.echo(json.dumps([r.as_json() for r in page.runs]))
    elif not page.runs:
        click.echo("no runs yet; start one with `stageflow run PIPELINE`", err=True)
    else:
        for r in page.runs:
            click.echo(
                f"{r.run_id}  {r.pipeline:<24} {r.status:<10} "
                f"{iso(r.started_at) or '-'}  {iso(r.ended_at) or '-'}"
                + (f"  attempt {r.attempt}" if r.attempt > 1 else "")  # a run-level retry
            )
    if page.cursor is not None:
        click.echo(f"more runs: `stageflow runs list --cursor {page.cursor}`", err=True)


@runs.command("show")
@click.argument("run_id")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def runs_show(settings: Any, run_id: str, fmt: str) -> None:
    """One run: its state and every task's state, attempts, times and error.

    A run whose lease expired says so after its state (as in ``runs list``); the
    JSON is the shape ``run --format json`` prints."""
    import io
    import time

    from stageflow import operations as ops
    from stageflow.service.progress import render_summary
    from stageflow.service.tables import render_run_report

    report = None
    retries: list[str] = []
    if (remote := _remote(settings)) is not None:  # the usage report at the server's prices
        result, note, retries = remote.show_run(run_id)
        report = remote.usage(run_id, result.pipeline) if fmt == "text" else None
    else:
        with ops.reading(settings) as store:
            detail = ops.show_run(store, run_id, now=time.time())
            retries = detail.retry_lines()
            report = (
                ops.usage(store, run_id, settings.cost_prices, detail=detail)
                if fmt == "text"
                else None
            )
        result, note = detail.result, detail.lease.note if detail.lease else None
    if fmt == "json":
        click.echo(json.dumps(result.as_json()))
        return
    text = io.StringIO()
    render_summary(result, text, outputs=False)
    head, _, rest = text.getvalue().partition("\n")
    if note:  # the first line ends with the run's state
        head = f"{head} — {note}"
    head = "\n".join([head, *(f"  {line}" for line in retries)])  # its run-level retries
    sys.stdout.write(f"{head}\n{rest}")
    for line in render_run_report(report) if report is not None else ():
        click.echo(line)


@runs.command("gantt")
@click.argument("run_id")
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE.png|FILE.svg",
    help="Write the chart here; the suffix picks the format.",
)
@click.pass_obj
def runs_gantt(settings: Any, run_id: str, output: str) -> None:
    """Draw RUN_ID's attempts on a timeline: one bar per attempt, a row per task.

    x is seconds from the run's start; a bar's colour is its attempt's final state;
    the lighter segment before it is the time the attempt waited in the queue."""
    from stageflow import operations as ops
    from stageflow.service.gantt import gantt

    ops.check_run_id(run_id)
    path = Path(output)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        shown = f"unsupported suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise UsageError(
            f"-o {output}: {shown}; name a .png or .svg file, e.g. -o run.svg", field="output"
        )
    _check_output_path(path, output)
    with ops.reading(settings) as store:
        timeline = ops.run_timeline(store, run_id)
    attempts = timeline.attempts
    picture = gantt(timeline.run, timeline.task_ids, attempts, "png" if fmt == "png" else "svg")
    try:
        if isinstance(picture, bytes):
            path.write_bytes(picture)
        else:
            path.write_text(picture, encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"-o {output}: cannot write it ({exc.strerror or exc}); choose a writable path",
            field="output",
        ) from None
    tasks = len({a.task_id for a in attempts})
    click.echo(f"wrote {output} ({len(attempts)} attempts of {tasks} tasks)", err=True)


@runs.command("cost")
@click.option("--pipeline", default=None, help="Only runs of this pipeline.")
@click.option(
    "--days",
    type=click.IntRange(min=1, max=3660),
    default=7,
    show_default=True,
    help="Runs created in the last N UTC days, today included.",
)
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def runs_cost(settings: Any, pipeline: str | None, days: int, fmt: str) -> None:
    """Runs, task-hours and cost per pipeline per UTC day.

    An attempt costs the resources it requested times its run time times the
    prices in STAGEFLOW_COST (e.g. cpu_hour=0.05,memory_gb_hour=0.01,gpu_hour=2.5);
    a task that declares no resources costs nothing."""
    import time

    from stageflow import operations as ops
    from stageflow.service.tables import prices_text, render_cost

    if (remote := _remote(settings)) is not None:  # at the server's prices
        report = remote.cost(days, pipeline)
    else:
        with ops.reading(settings) as store:
            report = ops.cost(
                store, settings.cost_prices, days=days, now=time.time(), pipeline=pipeline
            )
    no_prices = (
        "no prices configured: set STAGEFLOW_COST, e.g. "
        "STAGEFLOW_COST=cpu_hour=0.05,memory_gb_hour=0.01,gpu_hour=2.5, to see costs"
    )
    if fmt == "json":
        click.echo(json.dumps(report.as_json()))
    elif not report.rows:
        which = f" of pipeline '{pipeline}'" if pipeline else ""
        click.echo(f"no runs{which} created in the last {days} days", err=True)
        return
    else:
        for line in render_cost(report.rows, report.prices):
            click.echo(line)
    if not report.prices:
        click.echo(no_prices, err=True)
    elif fmt == "text":
        click.echo(
            f"prices: {prices_text(report.prices)} per unit requested per hour; "
            "tasks that declare no resources cost 0",
            err=True,
        )


@cli.command()
@click.argument("run_id")
@click.argument("task")
@click.option(
    "--attempt",
    type=click.IntRange(min=1, max=MAX_LISTED),
    default=None,
    help="Only this attempt (default: all).",
)
@click.pass_obj
def logs(settings: Any, run_id: str, task: str, attempt: int | None) -> None:
    """Print the captured stdout/stderr/logging of TASK in RUN_ID."""
    from stageflow import operations as ops

    if (remote := _remote(settings)) is not None:
        found = remote.task_logs(run_id, task, attempt)
    else:
        with ops.reading(settings) as store:
            found = ops.task_logs(store, settings.logs_dir, run_id, task, attempt=attempt)
    if not found.files:
        click.echo(f"task '{task}' of run '{run_id}' wrote no output", err=True)
        return
    for f in found.files:
        if len(found.files) > 1:
            click.echo(f"--- attempt-{f.attempt} ---", err=True)
        sys.stdout.write(f.text)
    sys.stdout.flush()


# -- helpers -------------------------------------------------------------------------------


def _remote(settings: Any, by: str | None = None) -> Any:
    """The server the command talks to (``--server``/``STAGEFLOW_SERVER``), or ``None``:
    the store. With a server the caller is its token's name, so ``--by`` is refused."""
    if not settings.server_url:
        return None
    if by is not None:
        raise UsageError(
            f"--by {by}: through a server you act as the name of your token "
            f"(STAGEFLOW_TOKEN); leave --by out, and use {by}'s token to act as {by}",
            field="by",
        )
    from stageflow.operations.remote import Remote

    return Remote(settings.server_url, settings.server_token)


def _local_only(settings: Any, command: str) -> None:
    """A ``UsageError`` (exit 2) when a server is named: ``command`` reads or changes the
    store directly and has no way through a server, so it never quietly reads a local one."""
    if settings.server_url:
        raise UsageError(
            f"`stageflow {command}` does not go through a server (--server "
            f"{settings.server_url}, or STAGEFLOW_SERVER): it reads the store directly. "
            + _INSTEAD.get(command.split(" --")[0], "")
            + "Run it without --server (unset STAGEFLOW_SERVER) where the store is reachable "
            "(--home, or STAGEFLOW_DATABASE_URL)",
            field="server",
        )


#: What a server offers instead of a command that reads the store directly.
_INSTEAD = {
    "run": "Through a server, `stageflow submit FILE` queues a run for its workers. ",
    "resume": "Through a server, a run whose worker died is taken over by another worker "
    "once its lease expires, and `stageflow retry RUN_ID` queues an ended run again. ",
    "graph": "Through a server, `stageflow runs show RUN_ID` gives its tasks' states. ",
}


def _server_takes_no(command: str, options: tuple[str, ...]) -> None:
    """A ``UsageError`` naming the first of ``options`` given on the command line: the
    server's workers decide those, so through a server they are refused, not ignored."""
    ctx = click.get_current_context()
    for param in ctx.command.params:
        if param.name not in options:
            continue
        if ctx.get_parameter_source(param.name) not in (
            click.core.ParameterSource.DEFAULT,
            None,
        ):
            flag = param.opts[-1] if param.opts else param.name
            raise UsageError(
                f"{flag}: through a server (--server, STAGEFLOW_SERVER) `stageflow {command}` "
                "queues the run for the server's workers, which decide it; leave it out, or "
                "run without --server to do it in this process",
                field=str(param.name),
            )


def _caller(by: str | None) -> str:
    """Who asks of the store (no server): the operating-system user running this process,
    by its effective uid (``runtime.control.default_requester``). ``--by`` may only repeat
    that name: a name anyone could type is no identity."""
    from stageflow.runtime.control import default_requester, requester

    me = default_requester()
    if by is not None and requester(by) != me:
        raise UsageError(
            f"--by {by}: without a server you act as your operating-system user ({me}); "
            f"run the command as {by}, or through a server with {by}'s token "
            "(--server, STAGEFLOW_TOKEN)",
            field="by",
        )
    return me


def _collapsed(
    pipeline: Any, upstream: dict[str, list[str]], states: dict[str, str] | None
) -> tuple[dict[str, list[str]], dict[str, str] | None]:
    """The DAG with each top-level task group as one node; a group's state is its
    worst member's (failed before running before success)."""
    node = {t.id: (t.group.split(".")[0] if t.group else t.id) for t in pipeline.tasks}
    collapsed: dict[str, list[str]] = {}
    for tid, ups in upstream.items():
        edges = collapsed.setdefault(node[tid], [])
        for u in ups:
            if node[u] != node[tid] and node[u] not in edges:
                edges.append(node[u])
    if states is None:
        return collapsed, None
    rank = [
        "failed",
        "upstream_failed",
        "cancelled",
        "running",
        "up_for_retry",
        "queued",
        "pending",
        "skipped",
        "success",
    ]
    order = {state: i for i, state in enumerate(rank)}
    merged: dict[str, str] = {}
    for tid, state in states.items():
        current = merged.get(node[tid])
        if current is None or order.get(state, 3) < order.get(current, 3):
            merged[node[tid]] = state
    return collapsed, merged


def _configure_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _parse_params(params: tuple[str, ...]) -> dict[str, Any]:
    from stageflow.spec.params import param_name_problem, parse_param_value

    out: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--param {item!r}: expected KEY=VALUE, e.g. --param epochs=10", field="param"
            )
        why = param_name_problem(key.strip())
        if why is not None:
            raise UsageError(f"--param {item!r}: {why}", field="param")
        out[key.strip()] = parse_param_value(value, key.strip())
    return out


def _check_output_path(path: Path, shown: str) -> None:
    """A clear ``UsageError`` before any work when ``path`` cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"-o {shown} is a folder; name a file in it", field="output")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"-o {shown}: {str(parent)!r} is not a folder", field="output")
    if not parent.is_dir():
        raise UsageError(
            f"-o {shown}: folder {str(parent)!r} does not exist; create it first",
            field="output",
        )
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(
            f"-o {shown}: not writable by this user; choose another path", field="output"
        )


def _run_shown(fmt: str, call: Callable[[Any, Any, Any], Any]) -> NoReturn:
    """Run ``call(listener, on_start, interrupt)`` with progress on stderr (a live
    view on a terminal) and Ctrl-C handling (``service.interrupts``); then print
    the result and exit: 0 success, 130 cancelled by Ctrl-C, 1 otherwise. A call
    that made a request instead (an ``operations.ControlOutcome``) says what it did
    and exits 0."""
    from stageflow.service.interrupts import CtrlC
    from stageflow.service.progress import LineProgress, LiveProgress

    live = fmt == "text" and sys.stderr.isatty() and not os.environ.get("CI")
    progress: Any = LiveProgress() if live else LineProgress(sys.stderr)
    with progress, CtrlC(progress.interrupted) as ctrl_c:

        def on_start(info: Any) -> None:
            ctrl_c.run_id = info.run_id
            progress.started(info)

        result = call(progress, on_start, ctrl_c.interrupt)
    from stageflow.operations import ControlOutcome

    if isinstance(result, ControlOutcome):  # a request instead of a run (resume: unpause)
        click.echo(result.message, err=True)
        sys.exit(0)
    interrupted = ctrl_c.count > 0 and result.state == "cancelled"
    if fmt == "json":
        click.echo(json.dumps(result.as_json()))
    else:
        from stageflow.service.progress import render_summary

        render_summary(result, sys.stdout)
    if interrupted:
        click.echo(
            f"run {result.run_id} cancelled by Ctrl-C; `stageflow retry {result.run_id}` "
            "runs its unfinished tasks again",
            err=True,
        )
        sys.exit(130)
    sys.exit(0 if result.state == "success" else 1)


# The ML commands (operators, runs diff, lineage, models serve, run --track).
from stageflow.service import cli_ml  # noqa: E402  (after `cli` exists)

cli_ml.attach(cli)

# The queue commands (submit, worker).
from stageflow.service import cli_queue  # noqa: E402  (after `cli` exists)

cli_queue.attach(cli)

# The statistics command (stats).
from stageflow.service import cli_stats  # noqa: E402  (after `cli` exists)

cli_stats.attach(cli)

# The monitoring commands (metrics history / current / export, statistics, gates).
from stageflow.service import cli_monitoring  # noqa: E402  (after `cli` exists)

cli_monitoring.attach(cli)

# The notification commands (notifications list).
from stageflow.service import cli_notifications  # noqa: E402  (after `cli` exists)

cli_notifications.attach(cli)

# The pipeline commands (pipelines list / versions / show).
from stageflow.service import cli_pipelines  # noqa: E402  (after `cli` exists)

cli_pipelines.attach(cli)

# The pool commands (pools set / list / remove).
from stageflow.service import cli_pools  # noqa: E402  (after `cli` exists)

cli_pools.attach(cli)

# The schedule commands (schedules add / list / show / ..., scheduler).
from stageflow.service import cli_schedules  # noqa: E402  (after `cli` exists)

cli_schedules.attach(cli)

# The alert commands (alerts rules add / list / ..., alerts list / ack / resolve).
from stageflow.service import cli_alerts  # noqa: E402  (after `cli` exists)

cli_alerts.attach(cli)

# The service commands (serve, tokens, audit).
from stageflow.service import cli_serve  # noqa: E402  (after `cli` exists)

cli_serve.attach(cli)


# -- commands through a server ---------------------------------------------------------

#: With a server named (``--server``/``STAGEFLOW_SERVER``) these commands go through it
#: (``_remote``); ``graph`` and ``lineage`` do for the forms the API has and refuse the
#: others themselves.
THROUGH_SERVER = frozenset(
    {
        "runs list",
        "runs show",
        "runs diff",
        "runs cost",
        "logs",
        "lineage",
        "stats",
        "statistics",
        "gates",
        "cancel",
        "pause",
        "unpause",
        "approve",
        "retry",
        "submit",
        "graph",
    }
)
#: Commands that never open a store, and the processes a server is made of (which are
#: given the store itself): a server named in the environment does not concern them.
NO_SERVER_NEEDED = frozenset(
    {
        "validate",
        "operators list",
        "operators show",
        "models serve",
        "alerts metrics",
        "serve",
        "worker",
        "scheduler",
    }
)


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every leaf command under ``group``, by its full name (``runs list``)."""
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found += _commands(command, f"{full} ")
        else:
            found.append((full, command))
    return found


def _refused_through_a_server(name: str, command: click.Command) -> None:
    """Wrap ``command`` so that, with a server named, it exits 2 (``_local_only``)
    instead of reading or changing the local store."""
    original = command.callback
    if original is None:
        return

    def callback(*args: Any, **kwargs: Any) -> Any:
        settings = click.get_current_context().find_root().obj
        if settings is not None:
            _local_only(settings, name)
        return original(*args, **kwargs)

    callback.__doc__ = original.__doc__
    command.callback = callback


for _name, _command in _commands(cli):
    if _name not in THROUGH_SERVER and _name not in NO_SERVER_NEEDED:
        _refused_through_a_server(_name, _command)
