"""The CLI's service commands, attached by ``attach(cli)``:

* ``stageflow serve [--host H] [--port P] [--workers N | --no-worker]``: the REST API
  under uvicorn, and N supervised ``stageflow worker`` processes (``service.supervisor``);
* ``stageflow tokens create|list|revoke``: API tokens (an admin's job, on the
  server's machine: the CLI speaks to the store directly);
* ``stageflow audit``: the audit log.

A bad argument exits 2 with the reason; a store that cannot be reached says which
URL and why before anything listens.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from typing import Any

import click

from stageflow.errors import UsageError
from stageflow.service.cli_options import FORMAT

__all__ = ["attach"]


def attach(cli: click.Group) -> None:
    cli.add_command(serve)
    cli.add_command(tokens)
    cli.add_command(audit)


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: API_HOST, 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Port (default: API_PORT, 8080; 0: any free port, printed).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0, max=64),
    default=1,
    show_default=True,
    help="Worker processes to run and supervise (0: none, as --no-worker).",
)
@click.option("--no-worker", is_flag=True, help="Run the API only (workers run elsewhere).")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=10_000),
    default=None,
    help="Runs at once per worker (default: MAX_CONCURRENT_RUNS, 4).",
)
@click.option(
    "--no-code",
    is_flag=True,
    help="Refuse pipelines that run arbitrary code (bash, python, call:) over the API, "
    "even from admins.",
)
@click.option(
    "--private-metrics",
    is_flag=True,
    help="/metrics needs a token too (any role); by default it is open, as /health is.",
)
@click.option(
    "--grace-seconds",
    type=click.FloatRange(min=0, max=86_400),
    default=30.0,
    show_default=True,
    help="On SIGTERM, how long workers' runs may go on before they go back to the queue.",
)
@click.pass_obj
def serve(
    settings: Any,
    host: str | None,
    port: int | None,
    workers: int,
    no_worker: bool,
    concurrency: int | None,
    no_code: bool,
    private_metrics: bool,
    grace_seconds: float,
) -> None:
    """Serve the REST API (docs at /docs) and run its workers.

    Every route but /health and /metrics (unless --private-metrics) needs a token:
    make the first with `stageflow tokens create --name NAME --role admin`. SIGTERM
    or Ctrl-C stops the API, then drains the workers."""
    from stageflow import operations as ops

    try:
        import uvicorn

        from stageflow.service.api import create_app
    except ImportError as exc:
        from stageflow.errors import MissingExtra

        raise MissingExtra(
            f"`stageflow serve` needs the server extra ({exc.name} is missing): "
            "pip install 'stageflow[server]'"
        ) from None
    from stageflow.service.supervisor import Supervisor

    ops.check_store(settings)  # unreachable: say so before listening
    host = host or settings.api_host
    port = settings.api_port if port is None else port
    sock = _listen(host, port)
    count = 0 if no_worker else workers

    def say(line: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)

    args = ["--grace-seconds", f"{grace_seconds:g}"]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    supervisor = Supervisor(count, args, say=say) if count else None
    store = ops.open_for_service(settings)
    app = create_app(
        settings,
        store=store,
        workers=supervisor.alive if supervisor is not None else None,
        allow_code=not no_code,
        open_metrics=not private_metrics,
    )
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT while it serves, then raises the signal again
    # once it has stopped: these handlers take that second delivery, so that the
    # workers are drained below instead of the process dying with them orphaned.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    if supervisor is not None:
        supervisor.start()
    say(
        f"serving on http://{shown}:{bound[1]} ({count} worker process(es), store "
        f"{ops.store_location(settings)}); docs at /docs"
    )
    try:
        server.run(sockets=[sock])
    finally:
        if supervisor is not None:
            say("stopping the workers (they drain)")
            supervisor.stop(grace_seconds)
        store.close()
        say("stopped")
    sys.exit(0)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, or ``UsageError`` saying why not (port taken, bad address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on a socket that says it is
    # TCP; without it every small answer waited for the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
            "(or API_PORT) or --host",
            field="port",
        ) from None
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


@click.group()
def tokens() -> None:
    """API tokens: each has a role (viewer, operator, editor, admin) and an owner."""


@tokens.command("create")
@click.option("--name", required=True, help="A name for the token (shown in the audit log).")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["viewer", "operator", "editor", "admin"]),
    help="viewer reads; operator runs; editor saves pipelines; admin does everything.",
)
@click.option("--owner", default=None, help="The team whose pipelines and runs it sees.")
@click.option(
    "--expires",
    "expires_days",
    type=float,
    default=None,
    metavar="DAYS",
    help="Expire after this many days (default: never).",
)
@click.pass_obj
def tokens_create(
    settings: Any, name: str, role: str, owner: str | None, expires_days: float | None
) -> None:
    """Make a token and print it (once: only its hash is kept)."""
    from stageflow import operations as ops

    with ops.writing(settings) as store:
        made = ops.create_token(
            store, name, role, owner=owner, expires_days=expires_days, now=time.time()
        )
    click.echo(made.token)
    click.echo(
        f"token '{name}' ({role}"
        + (f", owner {owner}" if owner else "")
        + "): keep it now, it is not shown again",
        err=True,
    )


@tokens.command("list")
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def tokens_list(settings: Any, fmt: str) -> None:
    """Every token: name, role, owner, state, last use (never the secret)."""
    from stageflow import operations as ops

    with ops.reading(settings) as store:
        found = ops.list_tokens(store)
    now = time.time()
    if fmt == "json":
        click.echo(json.dumps([t.as_json(now) for t in found]))
        return
    if not found:
        click.echo("no tokens; make one with `stageflow tokens create`", err=True)
        return
    click.echo(f"{'NAME':<20} {'ROLE':<9} {'OWNER':<16} {'STATE':<8} LAST USED")
    for t in found:
        used = (
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(t.last_used_at)) if t.last_used_at else "-"
        )
        click.echo(f"{t.name:<20} {t.role:<9} {t.owner or '-':<16} {t.state(now):<8} {used}")


@tokens.command("revoke")
@click.argument("name")
@click.pass_obj
def tokens_revoke(settings: Any, name: str) -> None:
    """Revoke token NAME: it authenticates nobody from now on."""
    from stageflow import operations as ops

    with ops.writing(settings) as store:
        ops.revoke_token(store, name, now=time.time())
    click.echo(f"token '{name}' revoked", err=True)


@click.command()
@click.option("--since", default=None, help="ISO-8601 date or time.")
@click.option("--actor", default=None, help="Only this token's entries.")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=50, show_default=True)
@click.option("--format", "fmt", type=FORMAT, default="text")
@click.pass_obj
def audit(settings: Any, since: str | None, actor: str | None, limit: int, fmt: str) -> None:
    """The audit log: every change made through the API, newest first."""
    from stageflow import operations as ops

    with ops.reading(settings) as store:
        page = ops.audit_log(
            store,
            since=ops.parse_instant(since, "--since") if since else None,
            actor=actor,
            limit=limit,
        )
    if fmt == "json":
        click.echo(json.dumps(page.as_json()))
        return
    if not page.entries:
        click.echo("the audit log is empty", err=True)
        return
    for e in page.entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at))
        click.echo(
            f"{when} {e.actor:<16} {e.status} {e.action}"
            + (f" [{e.target}]" if e.target else "")
            + (f" from {e.client}" if e.client else "")
        )
