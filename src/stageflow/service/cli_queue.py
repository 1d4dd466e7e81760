"""The CLI's queue commands, attached to the main group by ``attach(cli)``.

* ``stageflow submit FILE|module:pipeline [--param k=v] [--priority N]``: validate
  and record a run as ``queued`` in the store; print its id at once;
* ``stageflow worker [--concurrency N] [--name NAME]``: claim queued runs (and
  runs whose owner went silent) from the store and run them, until SIGTERM or
  Ctrl-C drains it (``runtime.worker``).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from stageflow.errors import StageflowError
from stageflow.service.cli_options import FORMAT, PARAM_OPTION

__all__ = ["attach"]


def attach(cli: click.Group) -> None:
    """Add ``submit`` and ``worker`` to ``cli``."""
    cli.add_command(submit)
    cli.add_command(worker)


@click.command()
@click.argument("target")
@PARAM_OPTION
@click.option(
    "--priority",
    type=click.IntRange(min=-1_000_000, max=1_000_000),
    default=0,
    show_default=True,
    help="Workers take higher priorities first, then older runs.",
)
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def submit(settings: Any, target: str, params: tuple[str, ...], priority: int, fmt: str) -> None:
    """Validate TARGET and queue a run of it for a `stageflow worker`; print its id.

    Nothing is queued when the pipeline or a parameter is wrong (exit 2, every
    problem listed)."""
    from stageflow import operations as ops
    from stageflow.service.cli import _invalid_json, _parse_params, _remote

    overrides = _parse_params(params)
    try:
        remote = _remote(settings)
        if remote is not None:
            run = remote.submit(Path(target), overrides, priority)
        else:
            run = ops.submit(settings, target, overrides, priority=priority)
    except StageflowError as exc:
        if fmt == "json" and exc.problems:
            click.echo(_invalid_json(exc))
        raise
    if fmt == "json":
        click.echo(json.dumps(run.as_json()))
    else:
        click.echo(run.run_id)
    click.echo(
        f"queued run {run.run_id} of pipeline '{run.pipeline}' (priority {priority}); "
        f"a `stageflow worker` on this store runs it (`stageflow runs show {run.run_id}`)",
        err=True,
    )


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=1000),
    default=None,
    help="Runs at once (default: MAX_CONCURRENT_RUNS, 4).",
)
@click.option(
    "--name", default=None, metavar="NAME", help="Shown as the runs' owner (default: host:pid)."
)
@click.option(
    "--executor", type=click.Choice(["thread", "process"]), default="thread", show_default=True
)
@click.option(
    "--poll-seconds",
    type=click.FloatRange(min=0.005, max=60),
    default=0.05,
    show_default=True,
    help="How often an idle worker looks for runs.",
)
@click.option(
    "--grace-seconds",
    type=click.FloatRange(min=0, max=86_400),
    default=30.0,
    show_default=True,
    help="When draining, how long runs may go on before they are handed back to the queue.",
)
@click.option(
    "--idle-exit",
    type=click.FloatRange(min=0, max=86_400),
    default=None,
    metavar="SECONDS",
    help="Exit after this long with nothing to run (default: never).",
)
@click.option(
    "--no-schedules",
    is_flag=True,
    help="Do not fire the store's schedules here (a `stageflow scheduler` or another worker does).",
)
@click.pass_obj
def worker(
    settings: Any,
    concurrency: int | None,
    name: str | None,
    executor: str,
    poll_seconds: float,
    grace_seconds: float,
    idle_exit: float | None,
    no_schedules: bool,
) -> None:
    """Claim queued runs from the store and run them, several at once.

    Runs whose owner went silent (its lease expired) are taken over and resumed.
    SIGTERM or Ctrl-C drains: nothing more is claimed, runs in progress get
    --grace-seconds to end, the rest go back to the queue; a second Ctrl-C exits
    at once (the leases then expire and another worker takes the runs).
    SIGUSR1 prints every thread's stack to stderr and changes nothing."""
    import os

    from stageflow import operations as ops
    from stageflow.runtime.worker import Worker

    if name is not None and (not name.strip() or len(name) > 100 or "\n" in name):
        from stageflow.errors import UsageError

        raise UsageError("--name must be 1 to 100 characters on one line", field="name")
    ops.check_store(settings)  # unreachable: say so now

    def say(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        click.echo(f"{stamp} {line}", err=True)

    w = Worker(
        settings,
        name=name,
        concurrency=concurrency or settings.max_concurrent_runs,
        executor=executor,
        poll_seconds=poll_seconds,
        grace_seconds=grace_seconds,
        say=say,
        schedules=not no_schedules,
    )
    signals = {"count": 0}

    def drain(signum: int, frame: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1 and signum == signal.SIGINT:
            click.echo(
                "second Ctrl-C: exiting now; its runs are taken over when their leases expire",
                err=True,
            )
            os._exit(130)
        click.echo(
            f"{signal.Signals(signum).name}: draining: no new runs; runs in progress get "
            f"{grace_seconds:g}s, then go back to the queue",
            err=True,
        )
        w.drain()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, drain)
        signal.signal(signal.SIGINT, drain)
        # `kill -USR1 PID` prints every thread's stack to stderr (a worker that seems
        # stuck says where), and the worker goes on.
        import faulthandler

        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    where = ops.store_location(settings)
    say(
        f"worker {w.owner} ready: {w.concurrency} run(s) at once, executor {executor}, "
        f"store {where}"
    )
    report = w.serve(idle_exit=idle_exit)
    say(
        f"worker {w.owner} stopped: {len(report.finished)} run(s) finished, "
        f"{len(report.handed_back)} handed back, {len(report.lost)} taken over by others"
    )
    sys.exit(0)
