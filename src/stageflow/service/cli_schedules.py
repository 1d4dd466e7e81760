"""The CLI's ``schedules`` commands and ``stageflow scheduler``, attached by ``attach(cli)``.

* ``stageflow schedules add NAME PIPELINE (--cron EXPR | --every DURATION | --at TIME |
  --on-event EVENT | --after UPSTREAM [--after-state STATE ...]) [--timezone TZ]
  [--start T] [--end T] [--catchup] [--param K=V] [--priority N] [--max-active N]
  [--paused]``: create or change a schedule of a saved pipeline;
* ``stageflow schedules apply FILE``: save the pipeline and register the schedules its
  spec carries (``schedule:``, ``schedules:``);
* ``stageflow schedules list|show NAME [--format json]``: when each fires next (``show``:
  the next 5 fire times and the latest runs);
* ``stageflow schedules pause|resume|remove NAME``;
* ``stageflow schedules trigger NAME [--param K=V]``: queue a run now;
* ``stageflow schedules fire EVENT [--param K=V]``: a run of each enabled schedule
  listening to EVENT (``--on-event``), as ``POST /api/v1/events/EVENT`` does;
* ``stageflow scheduler [--poll-seconds S]``: fire the store's schedules until SIGTERM or
  Ctrl-C (``stageflow worker`` and ``stageflow serve`` fire them too; each tick fires
  once however many run);
* ``stageflow backfill PIPELINE --from TIME --to TIME [--schedule NAME] [--max-active N]
  [--param K=V]`` (also spelt ``backfill start PIPELINE ...``): the runs of a schedule's
  past ticks, as one backfill the schedule loop fires oldest first, N at a time;
  ``stageflow backfill status NAME``, ``backfill list`` and ``backfill cancel NAME``.

A mistake exits 2 naming the option and the fix.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import click

from stageflow.service.cli_options import FORMAT, PARAM_OPTION

__all__ = ["attach", "backfill", "scheduler", "schedules"]


def attach(cli: click.Group) -> None:
    """Add ``schedules``, ``scheduler`` and ``backfill`` to ``cli``."""
    cli.add_command(schedules)
    cli.add_command(scheduler)
    cli.add_command(backfill)


@click.group()
def schedules() -> None:
    """Schedules: runs of a saved pipeline fired by cron, an interval, once, an event,
    another pipeline's runs ending or a new object under a URL."""


def _when(t: float | None) -> str:
    return "-" if t is None else f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S} UTC"


def _print(info: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(info.as_json()))
        return
    state = "enabled" if info.enabled else "paused"
    click.echo(f"schedule {info.name}: pipeline '{info.pipeline}', {info.timing}, {state}")
    click.echo(f"  next: {_when(info.next_at)}   last tick: {_when(info.last_tick)}")
    limit = f" of at most {info.max_active_runs}" if info.max_active_runs is not None else ""
    click.echo(
        f"  unfinished runs: {info.active_runs}{limit}   priority {info.priority}   "
        f"catch-up {'on' if info.catchup else 'off'}"
        + (f"   params {json.dumps(info.params, sort_keys=True)}" if info.params else "")
    )
    if info.object_url is not None:
        click.echo(f"  object: {info.object_url}   polled every {info.poll_seconds:g}s")
    if info.run_retries is not None:
        r = info.run_retries
        click.echo(
            f"  run retries: {r['max_retries']}, {r['strategy']}, delay {r['retry_delay']:g}s"
        )
    if info.execution_timeout is not None:
        click.echo(f"  execution timeout: {info.execution_timeout:g}s (then its run is cancelled)")
    if info.upcoming:
        click.echo("  fires next at:")
        for t in info.upcoming:
            click.echo(f"    {_when(t)}")
    if info.runs:
        click.echo("  latest runs:")
        for tick, run_id, run_state in info.runs:
            click.echo(f"    {_when(tick)}  {run_id}  {run_state}")


@schedules.command("add")
@click.argument("name")
@click.argument("pipeline")
@click.option("--cron", default=None, metavar="EXPR", help='A cron expression: "0 2 * * *".')
@click.option("--every", default=None, metavar="DURATION", help="An interval: 90s, 10m, 2h, 1d.")
@click.option("--at", default=None, metavar="TIME", help="Once, at an ISO-8601 time.")
@click.option(
    "--on-event",
    default=None,
    metavar="EVENT",
    help="On each POST /api/v1/events/EVENT (or `schedules fire EVENT`).",
)
@click.option(
    "--after",
    default=None,
    metavar="PIPELINE",
    help="Each time a run of the saved PIPELINE ends (in success: see --after-state).",
)
@click.option(
    "--after-state",
    "after_states",
    multiple=True,
    metavar="STATE",
    help="With --after: the upstream end state that fires it: success (default), failed, "
    "cancelled; repeat for several.",
)
@click.option("--timezone", default="UTC", show_default=True, help="The cron's time zone.")
@click.option("--start", default=None, metavar="TIME", help="Fire nothing before it.")
@click.option("--end", default=None, metavar="TIME", help="Fire nothing after it.")
@click.option("--catchup", is_flag=True, help="Fire every tick missed (default: the latest).")
@PARAM_OPTION
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--max-active", type=int, default=None, help="Unfinished runs at most.")
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.option(
    "--on-object",
    default=None,
    metavar="URL",
    help="Each new object under an fsspec URL with a glob: 'file:///data/in/*.csv'.",
)
@click.option("--poll", default=None, metavar="DURATION", help="With --on-object: 30s (default).")
@click.option(
    "--run-retries",
    type=int,
    default=None,
    metavar="N",
    help="Queue a failed run again, at most N times (wins over the pipeline's run_retries).",
)
@click.option(
    "--retry-strategy",
    default=None,
    metavar="STRATEGY",
    help="fixed (default), linear, exponential or none.",
)
@click.option("--retry-delay", default=None, metavar="DURATION", help="30s, 10m: before a retry.")
@click.option(
    "--execution-timeout",
    default=None,
    metavar="DURATION",
    help="Cancel a run it fired still unfinished this long after it started: 2h.",
)
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def add(
    settings: Any,
    name: str,
    pipeline: str,
    cron: str | None,
    every: str | None,
    at: str | None,
    on_event: str | None,
    after: str | None,
    after_states: tuple[str, ...],
    timezone: str,
    start: str | None,
    end: str | None,
    catchup: bool,
    params: tuple[str, ...],
    priority: int,
    max_active: int | None,
    paused: bool,
    on_object: str | None,
    poll: str | None,
    run_retries: int | None,
    retry_strategy: str | None,
    retry_delay: str | None,
    execution_timeout: str | None,
    fmt: str,
) -> None:
    """Create (or change) schedule NAME firing runs of the saved PIPELINE."""
    from stageflow import operations as ops
    from stageflow.service.cli import _parse_params

    values = _parse_params(params)
    with ops.writing(settings) as store:
        info = ops.add_schedule(
            store,
            name,
            pipeline,
            owner=None,
            see_all=True,  # a local user, no server: every schedule
            cron=cron,
            every=every,
            at=at,
            on_event=on_event,
            after=after,
            after_states=list(after_states) if after_states else None,
            timezone=timezone,
            start=start,
            end=end,
            catchup=catchup,
            params=values,
            priority=priority,
            max_active_runs=max_active,
            enabled=not paused,
            on_object=on_object,
            poll=poll,
            run_retries=run_retries,
            retry_strategy=retry_strategy,
            retry_delay=retry_delay,
            execution_timeout=execution_timeout,
        )
    _print(info, fmt)


@schedules.command("apply")
@click.argument("target")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def apply(settings: Any, target: str, fmt: str) -> None:
    """Save TARGET (a spec file, or module:pipeline) as a version of its pipeline and
    register the schedules its spec carries (`schedule:`, `schedules:`). Nothing is
    saved when the spec or a schedule is wrong."""
    import time as clock

    from stageflow import operations as ops
    from stageflow.runtime.loading import load_pipeline
    from stageflow.runtime.plan import check

    pipeline = load_pipeline(target, settings.limits)
    check(pipeline)  # InvalidSpec: every problem, schedules' included
    if not pipeline.schedule_entries():
        from stageflow.errors import UsageError

        raise UsageError(
            f"{target}: pipeline '{pipeline.name}' has no `schedule:` or `schedules:`; add "
            'one (schedule: "0 2 * * *") or use `stageflow schedules add`',
            field="schedules",
        )
    now = clock.time()
    with ops.writing(settings) as store:
        ops.check_spec_schedules(store, pipeline, owner=None, see_all=True, now=now)
        ops.publish_pipeline(store, pipeline, owner=pipeline.owner, now=now, may_see_all=True)
        applied = ops.apply_schedules(store, pipeline, owner=None, see_all=True, now=now)
    if fmt == "json":
        click.echo(json.dumps([s.as_json() for s in applied]))
        return
    for info in applied:
        _print(info, fmt)


@schedules.command("list")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def list_(settings: Any, fmt: str) -> None:
    """Every schedule and when it fires next."""
    from stageflow import operations as ops

    with ops.reading(settings) as store:
        found = ops.list_schedules(store, owner=None, see_all=True)
    if fmt == "json":
        click.echo(json.dumps([s.as_json() for s in found]))
        return
    if not found:
        click.echo("no schedules; add one with `stageflow schedules add`", err=True)
        return
    width = max(8, *(len(s.name) for s in found))
    click.echo(
        f"{'SCHEDULE':<{width}}  {'PIPELINE':<16}  {'STATE':<7}  NEXT                     TIMING"
    )
    for s in found:
        state = "enabled" if s.enabled else "paused"
        click.echo(
            f"{s.name:<{width}}  {s.pipeline:<16}  {state:<7}  {_when(s.next_at):<23}  {s.timing}"
        )


@schedules.command("show")
@click.argument("name")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def show(settings: Any, name: str, fmt: str) -> None:
    """Schedule NAME: its next 5 fire times and its latest runs."""
    from stageflow import operations as ops

    with ops.reading(settings) as store:
        info = ops.show_schedule(store, name, owner=None, see_all=True)
    _print(info, fmt)


@schedules.command("pause")
@click.argument("name")
@click.pass_obj
def pause(settings: Any, name: str) -> None:
    """Pause schedule NAME: it fires nothing until resumed."""
    from stageflow import operations as ops

    with ops.writing(settings) as store:
        ops.set_schedule_enabled(store, name, False, owner=None, see_all=True)
    click.echo(f"schedule '{name}' paused", err=True)


@schedules.command("resume")
@click.argument("name")
@click.pass_obj
def resume(settings: Any, name: str) -> None:
    """Resume schedule NAME (without catch-up, it fires its latest due tick only)."""
    from stageflow import operations as ops

    with ops.writing(settings) as store:
        info = ops.set_schedule_enabled(store, name, True, owner=None, see_all=True)
    click.echo(f"schedule '{name}' resumed; next {_when(info.next_at)}", err=True)


@schedules.command("remove")
@click.argument("name")
@click.pass_obj
def remove(settings: Any, name: str) -> None:
    """Delete schedule NAME (the runs it made stay)."""
    from stageflow import operations as ops

    with ops.writing(settings) as store:
        ops.remove_schedule(store, name, owner=None, see_all=True)
    click.echo(f"schedule '{name}' removed", err=True)


@schedules.command("trigger")
@click.argument("name")
@PARAM_OPTION
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def trigger(settings: Any, name: str, params: tuple[str, ...], fmt: str) -> None:
    """Queue a run of schedule NAME's pipeline now, with its parameters (and --param)."""
    from stageflow import operations as ops
    from stageflow.service.cli import _parse_params

    overrides = _parse_params(params)
    with ops.writing(settings) as store:
        run = ops.trigger_schedule(settings, store, name, overrides, owner=None, see_all=True)
    click.echo(json.dumps(run.as_json()) if fmt == "json" else run.run_id)
    click.echo(
        f"queued run {run.run_id} of pipeline '{run.pipeline}' for schedule '{name}'; "
        "a `stageflow worker` runs it",
        err=True,
    )


@schedules.command("fire")
@click.argument("event")
@PARAM_OPTION
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def fire(settings: Any, event: str, params: tuple[str, ...], fmt: str) -> None:
    """Fire EVENT: queue a run of each enabled schedule listening to it (`schedules add
    ... --on-event EVENT`), with its parameters and --param on top, as POST
    /api/v1/events/EVENT does. Prints the run ids; nothing is queued when a --param does
    not fit one of them."""
    from stageflow import operations as ops
    from stageflow.runtime.control import default_requester
    from stageflow.service.cli import _parse_params

    payload = _parse_params(params)
    with ops.writing(settings) as store:
        fired = ops.fire_event(
            settings,
            store,
            event,
            payload,
            owner=None,
            see_all=True,  # a local user, no server: every schedule
            by=default_requester(),
        )
    if fmt == "json":
        click.echo(json.dumps(fired.as_json()))
    else:
        for _, _, run_id in fired.runs:
            click.echo(run_id)
    for schedule, pipeline, run_id in fired.runs:
        click.echo(
            f"queued run {run_id} of pipeline '{pipeline}' for schedule '{schedule}' "
            f"(event '{event}'); a `stageflow worker` runs it",
            err=True,
        )


@click.command()
@click.option(
    "--poll-seconds",
    type=click.FloatRange(min=0.05, max=60),
    default=1.0,
    show_default=True,
    help="How often the schedules are read.",
)
@click.pass_obj
def scheduler(settings: Any, poll_seconds: float) -> None:
    """Fire the store's schedules until SIGTERM or Ctrl-C: each due tick queues a run for
    the workers. Any number of schedulers (and workers, and `serve`) may run on one
    store: each tick fires once."""
    from stageflow import operations as ops
    from stageflow.runtime.duties import background_duties
    from stageflow.runtime.schedule_loop import ScheduleLoop

    ops.check_store(settings)  # unreachable: say so now
    with ops.writing(settings) as store:
        loop = ScheduleLoop(
            settings, store, poll_seconds=poll_seconds, duties=background_duties(settings, store)
        )

        got: list[str] = []

        def stop(signum: int, frame: Any) -> None:  # a flag only: safe at any instant
            got.append(signal.Signals(signum).name)
            loop.stop_soon()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        click.echo(
            f"{time.strftime('%H:%M:%S')} scheduler ready: store {ops.store_location(settings)}",
            err=True,
        )
        loop.serve_forever()
    click.echo(f"{got[0] if got else 'stopped'}: the scheduler stops", err=True)
    sys.exit(0)


# -- backfill ---------------------------------------------------------------------------------


class _BackfillGroup(click.Group):
    """``stageflow backfill PIPELINE ...`` is ``stageflow backfill start PIPELINE ...``: a
    first argument that names no subcommand starts a backfill (a pipeline named like a
    subcommand: ``backfill start list --from ...``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_BackfillGroup)
def backfill() -> None:
    """Backfills: `stageflow backfill PIPELINE --from TIME --to TIME` makes the runs of a
    schedule's past ticks, oldest first, as one backfill (status, list, cancel)."""


def _backfill_line(info: Any) -> str:
    runs = info.runs
    counts = ", ".join(
        f"{runs.get(state, 0)} {state}"
        for state in ("queued", "running", "success", "failed", "cancelled")
    )
    if runs.get("paused"):
        counts += f", {runs['paused']} paused"
    return f"{info.fired} of {info.total} ticks fired; runs: {counts}"


def _print_backfill(info: Any) -> None:
    source = f"schedule '{info.schedule}', " if info.schedule else ""
    click.echo(f"backfill {info.name}: pipeline '{info.pipeline}', {source}{info.timing}")
    limit = (
        f", at most {info.max_active_runs} unfinished at once"
        if info.max_active_runs is not None
        else ""
    )
    click.echo(f"  from {_when(info.start)} to {_when(info.end)}{limit}")
    skipped = info.handled - info.fired
    click.echo(
        f"  {_backfill_line(info)}"
        + (f"; {skipped} skipped (the pipeline could not run)" if skipped > 0 else "")
    )
    waiting = info.unfinished
    click.echo(
        f"  state: {info.state}"
        + (f" ({waiting} run{'s' if waiting != 1 else ''} still stopping)" if waiting else "")
        if info.state == "cancelled"
        else f"  state: {info.state}"
    )


@backfill.command("start")
@click.argument("pipeline")
@click.option("--from", "start", required=True, metavar="TIME", help="The first tick's earliest.")
@click.option("--to", "end", required=True, metavar="TIME", help="The last tick's latest (past).")
@click.option("--schedule", default=None, metavar="NAME", help="Whose timing (default: the only).")
@click.option(
    "--max-active", type=int, default=1, show_default=True, help="Unfinished runs at most."
)
@PARAM_OPTION
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def backfill_start(
    settings: Any,
    pipeline: str,
    start: str,
    end: str,
    schedule: str | None,
    max_active: int,
    params: tuple[str, ...],
    fmt: str,
) -> None:
    """Make the runs of the ticks of PIPELINE's schedule between --from and --to (both
    inclusive, --to not in the future), oldest first, at most --max-active unfinished at
    once, with the schedule's parameters and priority (and --param on top). Every
    `stageflow worker` and `stageflow scheduler` fires them; prints the backfill's name."""
    from stageflow import operations as ops
    from stageflow.service.cli import _parse_params

    overrides = _parse_params(params)
    with ops.writing(settings) as store:
        info = ops.start_backfill(
            store,
            pipeline,
            start=start,
            end=end,
            schedule=schedule,
            max_active_runs=max_active,
            overrides=overrides,
            owner=None,
            see_all=True,  # a local user, no server: every schedule
        )
    if fmt == "json":
        click.echo(json.dumps(info.as_json()))
    else:
        click.echo(info.name)
    click.echo(
        f"backfill {info.name}: {info.total} run{'s' if info.total != 1 else ''} of pipeline "
        f"'{pipeline}' (schedule '{info.schedule}', {info.timing}) from {_when(info.start)} "
        f"to {_when(info.end)}, oldest first, at most {max_active} at once; every "
        f"`stageflow worker` and `stageflow scheduler` fires them; "
        f"`stageflow backfill status {info.name}` shows the progress",
        err=True,
    )


@backfill.command("status")
@click.argument("name")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def backfill_status(settings: Any, name: str, fmt: str) -> None:
    """Backfill NAME's progress: its ticks, how many fired, its runs by state."""
    from stageflow import operations as ops

    with ops.reading(settings) as store:
        info = ops.backfill_status(store, name, owner=None, see_all=True)
    if fmt == "json":
        click.echo(json.dumps(info.as_json()))
        return
    _print_backfill(info)


@backfill.command("list")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def backfill_list(settings: Any, fmt: str) -> None:
    """Every backfill, with its progress."""
    from stageflow import operations as ops

    with ops.reading(settings) as store:
        found = ops.list_backfills(store, owner=None, see_all=True)
    if fmt == "json":
        click.echo(json.dumps([b.as_json() for b in found]))
        return
    if not found:
        click.echo(
            "no backfills; start one with `stageflow backfill PIPELINE --from TIME --to TIME`",
            err=True,
        )
        return
    width = max(8, *(len(b.name) for b in found))
    click.echo(f"{'BACKFILL':<{width}}  {'PIPELINE':<16}  {'STATE':<9}  PROGRESS")
    for b in found:
        click.echo(f"{b.name:<{width}}  {b.pipeline:<16}  {b.state:<9}  {_backfill_line(b)}")


@backfill.command("cancel")
@click.argument("name")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def backfill_cancel(settings: Any, name: str, fmt: str) -> None:
    """Stop backfill NAME as a whole: it fires no more ticks, and its unfinished runs are
    cancelled (a queued one at once, a running one by its worker)."""
    from stageflow import operations as ops

    with ops.writing(settings) as store:
        info = ops.cancel_backfill(settings, store, name, owner=None, see_all=True)
    if fmt == "json":
        click.echo(json.dumps(info.as_json()))
        return
    if info.done and info.enabled:
        click.echo(f"backfill {name} is done already; nothing to cancel", err=True)
        return
    stopped = [run_id for run_id, what in info.cancelled_runs if what == "cancelled"]
    stopping = [run_id for run_id, what in info.cancelled_runs if what == "stopping"]
    count = len(info.cancelled_runs)
    click.echo(
        f"backfill {name} cancelled: it fires no more ticks ({info.fired} of {info.total} "
        f"fired); {count} unfinished run{'s' if count != 1 else ''} cancelled"
        + (
            f" ({len(stopped)} at once in the store, {len(stopping)} being stopped by "
            "their workers)"
            if count
            else ""
        ),
        err=True,
    )
