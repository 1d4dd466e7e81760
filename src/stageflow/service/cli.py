"""The ``stageflow`` command line: a contract other tools script against.

Exit codes: 0 success, 1 a run that failed (or a missing run), 2 an invalid
spec or a bad argument. Every message goes to stderr; ``--format json`` puts
exactly one JSON value on stdout. A user mistake never prints a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, cast

import click

from stageflow.errors import StageflowError, UsageError

__all__ = ["main"]

FORMAT = click.Choice(["text", "json"])


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the click app, turning user mistakes into exit codes."""
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
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """stageflow: run ML pipelines (DAGs of tasks) durably, in parallel."""
    from stageflow.runtime.settings import load_settings

    settings = load_settings()
    if home:
        from dataclasses import replace

        settings = replace(settings, home=Path(home))
        # Code that reads settings itself (e.g. `use: NAME@VERSION`) sees the same home.
        os.environ["STAGEFLOW_HOME"] = home
    _configure_logging(settings.log_level)
    ctx.obj = settings


# -- run / resume -------------------------------------------------------------------


@cli.command()
@click.argument("target")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a run parameter (JSON values are parsed: 3, true, [1,2]).",
)
@click.option(
    "--executor", type=click.Choice(["thread", "process"]), default="thread", show_default=True
)
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=None,
    help="At most this many tasks at once (default: the pipeline's, else CPU count).",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Run tasks with `cache: true` anyway (their cache entries are refreshed).",
)
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
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
    """Validate and run TARGET (a .yaml/.json file, or module:pipeline)."""
    from stageflow.runtime.loading import load_pipeline
    from stageflow.runtime.runner import run_pipeline

    overrides = _parse_params(params)
    pipeline = load_pipeline(target, settings.limits)
    with _progress(fmt, [t.id for t in pipeline.tasks]) as listener:
        result = run_pipeline(
            pipeline,
            params=overrides,
            executor=executor,
            max_parallel=max_parallel,
            settings=settings,
            listener=listener,
            use_cache=not no_cache,
        )
    _finish(result, fmt)


@cli.command()
@click.argument("run_id")
@click.option(
    "--executor", type=click.Choice(["thread", "process"]), default="thread", show_default=True
)
@click.option("--max-parallel", type=click.IntRange(min=1), default=None)
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def resume(settings: Any, run_id: str, executor: str, max_parallel: int | None, fmt: str) -> None:
    """Finish RUN_ID after a crash: re-run exactly the tasks without a committed success.

    A paused run that a live process still runs is unpaused instead (see `unpause`)."""
    from stageflow.runtime.runner import resume_run

    _check_run_id(run_id)
    if _paused_elsewhere(settings, run_id):
        from stageflow.runtime.control import unpause_run

        click.echo(unpause_run(run_id, settings=settings), err=True)
        return
    with _progress(fmt, []) as listener:
        result = resume_run(
            run_id,
            executor=executor,
            max_parallel=max_parallel,
            settings=settings,
            listener=listener,
        )
    _finish(result, fmt)


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
@click.option("--max-parallel", type=click.IntRange(min=1), default=None)
@click.option("--no-cache", is_flag=True, help="Run tasks with `cache: true` anyway.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
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

    Successful outputs are reused; attempt numbers go on."""
    from stageflow.runtime.runner import retry_run

    _check_run_id(run_id)
    if from_task is not None:
        _check_task_id(from_task, "--from")
    with _progress(fmt, []) as listener:
        result = retry_run(
            run_id,
            from_task=from_task,
            executor=executor,
            max_parallel=max_parallel,
            settings=settings,
            listener=listener,
            use_cache=not no_cache,
        )
    _finish(result, fmt)


_BY = click.option(
    "--by", default=None, metavar="NAME", help="Who asks (default: the operating system user)."
)


@cli.command()
@click.argument("run_id")
@_BY
@click.pass_obj
def cancel(settings: Any, run_id: str, by: str | None) -> None:
    """Cancel RUN_ID: running attempts are stopped, every unfinished task is cancelled."""
    from stageflow.runtime.control import cancel_run

    _check_run_id(run_id)
    click.echo(cancel_run(run_id, by=by, settings=settings), err=True)


@cli.command()
@click.argument("run_id")
@_BY
@click.pass_obj
def pause(settings: Any, run_id: str, by: str | None) -> None:
    """Pause RUN_ID: running tasks finish, no new task starts until `unpause`."""
    from stageflow.runtime.control import pause_run

    _check_run_id(run_id)
    click.echo(pause_run(run_id, by=by, settings=settings), err=True)


@cli.command()
@click.argument("run_id")
@_BY
@click.pass_obj
def unpause(settings: Any, run_id: str, by: str | None) -> None:
    """Let the paused RUN_ID start tasks again."""
    from stageflow.runtime.control import unpause_run

    _check_run_id(run_id)
    click.echo(unpause_run(run_id, by=by, settings=settings), err=True)


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
    from stageflow.runtime.control import decide_approval

    _check_run_id(run_id)
    _check_task_id(task, "TASK")
    if comment is not None and len(comment) > 2000:
        raise UsageError("--comment is over 2000 characters; shorten it", field="comment")
    click.echo(
        decide_approval(
            run_id, task, approve=not reject, comment=comment, by=by, settings=settings
        ),
        err=True,
    )


# -- validate / graph -----------------------------------------------------------------


@cli.command()
@click.argument("target")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def validate(settings: Any, target: str, fmt: str) -> None:
    """Check TARGET without running it; print every problem at once."""
    from stageflow.graph import critical_path, shape
    from stageflow.runtime.loading import load_pipeline
    from stageflow.runtime.plan import check

    try:
        pipeline = load_pipeline(target, settings.limits)
        check(pipeline)
    except StageflowError as exc:  # InvalidSpec, or a file/module that cannot be loaded
        if fmt == "json":
            click.echo(
                json.dumps(
                    {"valid": False, "errors": [p.as_json() for p in exc.problems], "summary": None}
                )
            )
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    upstream = pipeline.upstream_map()
    s = shape(upstream)
    path = critical_path(upstream, {})
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
                }
            )
        )
    else:
        click.echo(
            f"{target}: pipeline '{pipeline.name}' is valid: {s.tasks} tasks, "
            f"{s.edges} edges, depth {s.depth}, width {s.width}"
        )


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
        pipeline, result = _pipeline_of_run(settings, run_id)
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
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--pipeline", default=None, help="Only runs of this pipeline.")
@click.pass_obj
def runs_list(settings: Any, fmt: str, limit: int, pipeline: str | None) -> None:
    """Recorded runs, newest first."""
    from stageflow.runtime.result import iso

    with _store(settings) as store:
        records = store.list_runs(limit=limit, pipeline=pipeline)
    rows = [
        {
            "run_id": r.run_id,
            "pipeline": r.pipeline,
            "state": r.state,
            "started_at": iso(r.started_at),
            "ended_at": iso(r.ended_at),
        }
        for r in records
    ]
    if fmt == "json":
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no runs yet; start one with `stageflow run PIPELINE`", err=True)
        return
    for r in rows:
        click.echo(
            f"{r['run_id']}  {r['pipeline']:<24} {r['state']:<10} "
            f"{r['started_at'] or '-'}  {r['ended_at'] or '-'}"
        )


@runs.command("show")
@click.argument("run_id")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def runs_show(settings: Any, run_id: str, fmt: str) -> None:
    """One run: its state and every task's state, attempts, times and error."""
    from stageflow.service.progress import render_summary

    _, result = _pipeline_of_run(settings, run_id)
    if fmt == "json":
        click.echo(json.dumps(result.as_json()))
    else:
        render_summary(result, sys.stdout, outputs=False)


@cli.command()
@click.argument("run_id")
@click.argument("task")
@click.option(
    "--attempt", type=click.IntRange(min=1), default=None, help="Only this attempt (default: all)."
)
@click.pass_obj
def logs(settings: Any, run_id: str, task: str, attempt: int | None) -> None:
    """Print the captured stdout/stderr/logging of TASK in RUN_ID."""
    from stageflow.runtime.logs import attempt_log
    from stageflow.spec.validate import id_problem

    _check_run_id(run_id)
    why = id_problem(task)
    if why is not None:
        raise UsageError(why, field="task")
    with _store(settings) as store:
        store.get_run(run_id)
        known = {t.task_id for t in store.task_runs(run_id)}
    if task not in known:
        from stageflow.spec.suggest import did_you_mean

        hint = did_you_mean(task, sorted(known))
        raise UsageError(
            f"run '{run_id}' has no task '{task}'" + (f"; did you mean '{hint}'?" if hint else ""),
            task=task,
        )
    files = attempt_log(settings.logs_dir, run_id, task)
    if attempt is not None:
        files = [f for f in files if f.stem == f"attempt-{attempt}"]
    if not files:
        click.echo(f"task '{task}' of run '{run_id}' wrote no output", err=True)
        return
    for f in files:
        if len(files) > 1:
            click.echo(f"--- {f.stem} ---", err=True)
        sys.stdout.write(f.read_text(encoding="utf-8", errors="replace"))
    sys.stdout.flush()


# -- helpers -------------------------------------------------------------------------------


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
    from stageflow.spec.params import parse_param_value

    out: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--param {item!r}: expected KEY=VALUE, e.g. --param epochs=10", field="param"
            )
        out[key.strip()] = parse_param_value(value)
    return out


def _check_run_id(run_id: str) -> None:
    from stageflow.spec.validate import id_problem

    why = id_problem(run_id, "run id")
    if why is not None:
        raise UsageError(f"{why}; see `stageflow runs list`", field="run_id")


def _check_task_id(task: str, what: str) -> None:
    from stageflow.spec.validate import id_problem

    why = id_problem(task)
    if why is not None:
        raise UsageError(f"{what}: {why}", field="task")


def _paused_elsewhere(settings: Any, run_id: str) -> bool:
    """True when RUN_ID is paused and a live process (not a crashed one) runs it."""
    from stageflow.runtime.control import live_owner

    with _store(settings) as store:
        run = store.get_run(run_id)
    return run.state == "paused" and live_owner(run) is not None


class _store:
    def __init__(self, settings: Any) -> None:
        from stageflow.runtime.store import open_store

        self.store = open_store(settings.database_url, settings.home)

    def __enter__(self) -> Any:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def _pipeline_of_run(settings: Any, run_id: str) -> tuple[Any, Any]:
    from stageflow.graph import critical_path
    from stageflow.runtime.result import RunResult
    from stageflow.spec.load import pipeline_from_data

    _check_run_id(run_id)
    with _store(settings) as store:
        record = store.get_run(run_id)
        result = RunResult.from_records(record, store.task_runs(run_id))
        spec = store.get_pipeline(record.pipeline, record.pipeline_version)
    pipeline = pipeline_from_data(json.loads(spec.spec_json))
    durations = {tid: t.duration_s for tid, t in result.tasks.items() if t.duration_s is not None}
    result.critical_path = critical_path(pipeline.upstream_map(), durations, default=0.0).tasks
    return pipeline, result


def _progress(fmt: str, task_ids: list[str]) -> Any:
    from stageflow.service.progress import LineProgress, LiveProgress

    if fmt == "text" and sys.stderr.isatty() and task_ids and not os.environ.get("CI"):
        return LiveProgress(task_ids)
    return LineProgress(sys.stderr)


def _finish(result: Any, fmt: str) -> NoReturn:
    if fmt == "json":
        click.echo(json.dumps(result.as_json()))
    else:
        from stageflow.service.progress import render_summary

        render_summary(result, sys.stdout)
    sys.exit(0 if result.state == "success" else 1)


# The ML commands (operators, runs diff, lineage, models serve, run --track).
from stageflow.service import cli_ml  # noqa: E402  (after `cli` exists)

cli_ml.attach(cli)
