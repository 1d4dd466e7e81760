"""The CLI's ML commands, attached to the main group by ``attach(cli)``.

* ``stageflow operators list`` / ``operators show NAME``: every operator with
  its parameters (type, default, description) and an example;
* ``stageflow runs diff RUN_A RUN_B``: what changed between two runs
  (parameters, seeds, code, data, outputs, environment, metrics);
* ``stageflow lineage RUN_ID/TASK | TASK | FILE | SHA256``: who produced it,
  who consumed it, upstream to the raw inputs;
* ``stageflow models serve NAME@ALIAS [--port]``: an MLflow-compatible
  prediction endpoint;
* ``stageflow run --track``: log the run to MLflow (``runtime.tracking``);
* ``stageflow runs show RUN_ID`` (text) ends with the run's reproducibility record.

Everything heavy is imported inside the commands, so ``stageflow --help``
stays fast.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from dataclasses import replace
from typing import Any

import click

from stageflow.errors import MissingExtra
from stageflow.service.cli_options import FORMAT

__all__ = ["attach"]


def attach(cli: click.Group) -> None:
    """Add the ML commands to ``cli`` and extend ``run`` and ``runs``."""
    cli.add_command(operators)
    cli.add_command(lineage)
    cli.add_command(models)
    runs = cli.commands.get("runs")
    if isinstance(runs, click.Group):
        runs.add_command(runs_diff)
        show = runs.commands.get("show")
        if show is not None:
            _append_record_to_show(show)
    run = cli.commands.get("run")
    if run is not None:
        _add_track_option(run)


# -- operators ----------------------------------------------------------------------


@click.group()
def operators() -> None:
    """The operators a task can use (`operator:` in a spec)."""


@operators.command("list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
def operators_list(fmt: str) -> None:
    """Every operator with a one-line summary."""
    from stageflow.operators import registry

    rows = [_summary(name, registry.get(name)) for name in registry.names()]
    if fmt == "json":
        click.echo(json.dumps(rows))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['summary']}")
    click.echo("\n`stageflow operators show NAME` lists an operator's parameters.", err=True)


@operators.command("show")
@click.argument("name")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
def operators_show(name: str, fmt: str) -> None:
    """NAME's parameters (type, default, description) and an example."""
    from stageflow.operators import registry

    cls = registry.get(name)
    info = _summary(name, cls)
    info["parameters"] = _parameters(cls.Params)
    info["example"] = _example(cls)
    if fmt == "json":
        click.echo(json.dumps(info, default=str))
        return
    click.echo(f"{name}: {info['summary']}\n")
    params = info["parameters"]
    if not params:
        click.echo("parameters: any keyword arguments of the function")
    else:
        click.echo("parameters:")
        width = max(len(p["name"]) for p in params)
        for p in params:
            default = "required" if p["required"] else f"default {json.dumps(p['default'])}"
            aliases = f" (also: {', '.join(p['aliases'])})" if p["aliases"] else ""
            click.echo(f"  {p['name']:<{width}}  {p['type']}; {default}{aliases}")
            if p["description"]:
                for line in textwrap.wrap(p["description"], 72):
                    click.echo(f"  {'':<{width}}    {line}")
    if info["example"]:
        click.echo("\nexample:\n" + textwrap.indent(info["example"], "  "))


def _summary(name: str, cls: Any) -> dict[str, Any]:
    doc = (cls.__doc__ or "").strip().splitlines()
    return {"name": name, "summary": doc[0] if doc else "", "module": cls.__module__}


def _parameters(model: Any) -> list[dict[str, Any]]:
    from pydantic import AliasChoices
    from pydantic_core import PydanticUndefined

    out = []
    for field_name, field in model.model_fields.items():
        aliases: list[str] = []
        if isinstance(field.validation_alias, AliasChoices):
            aliases = [str(a) for a in field.validation_alias.choices if isinstance(a, str)]
            aliases = [a for a in aliases if a != field_name]
        if field.default_factory is not None:
            default: Any = field.default_factory()  # type: ignore[call-arg,unused-ignore]
        else:
            default = None if field.default is PydanticUndefined else field.default
        out.append(
            {
                "name": field_name,
                "type": _type_name(field.annotation),
                "required": field.is_required(),
                "default": default if not hasattr(default, "model_dump") else default.model_dump(),
                "description": field.description or "",
                "aliases": aliases,
            }
        )
    return out


def _type_name(annotation: Any) -> str:
    """A parameter's type as a person writes it: ``'a' | 'b' | None`` for a literal,
    ``list[impute | scale]`` for steps told apart by their ``op``, no pydantic
    metadata (``Annotated[..., FieldInfo(...)]``)."""
    import types
    import typing

    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        tag = next((m.discriminator for m in args[1:] if _is_tag(m)), None)
        return " | ".join(_tags(args[0], tag)) if tag is not None else _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(parts + (["None"] if type(None) in args else []))
    if origin is not None:
        name = getattr(origin, "__name__", None) or str(origin)
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    if isinstance(annotation, type) or annotation is typing.Any:
        return str(getattr(annotation, "__name__", "Any"))
    return re.sub(r"\b(?:typing|[a-z_]+)\.(?=[A-Za-z])", "", str(annotation))


def _is_tag(metadata: Any) -> bool:
    """Whether ``metadata`` (of an ``Annotated``) is pydantic's field record naming a
    discriminator: the field whose value picks the union's member."""
    return isinstance(getattr(metadata, "discriminator", None), str)


def _tags(union: Any, discriminator: str) -> list[str]:
    """The values of ``discriminator`` that pick each member of ``union`` (``impute``,
    ``scale``, ...): what a spec writes to choose one."""
    import typing

    tags: list[str] = []
    for member in typing.get_args(union) or (union,):
        field = getattr(member, "model_fields", {}).get(discriminator)
        values = typing.get_args(field.annotation) if field is not None else ()
        tags.extend(str(v) for v in values) if values else tags.append(_type_name(member))
    return tags


def _example(cls: Any) -> str:
    """The operator's ``example`` attribute, else the ``Example::`` block of its module's doc."""
    own = getattr(cls, "example", None)
    if isinstance(own, str) and own.strip():
        return textwrap.dedent(own).strip("\n")
    doc = sys.modules[cls.__module__].__doc__ or ""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("Example") and line.rstrip().endswith("::"):
            block: list[str] = []
            for item in lines[i + 1 :]:
                if item.strip() and not item.startswith((" ", "\t")):
                    break
                block.append(item)
            text = textwrap.dedent("\n".join(block)).strip("\n")
            if text:
                return text
    return ""


# -- runs diff ------------------------------------------------------------------------


@click.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def runs_diff(settings: Any, run_a: str, run_b: str, fmt: str) -> None:
    """What changed between RUN_A and RUN_B: parameters, code, data, outputs, environment,
    metrics. Outputs are compared by content: paths naming each run's id do not count."""
    from stageflow import operations as ops
    from stageflow.service.cli import _remote

    if (remote := _remote(settings)) is not None:
        diff = remote.diff(run_a, run_b)
    else:
        with ops.reading(settings) as store:
            diff = ops.diff(store, run_a, run_b)
    if fmt == "json":
        click.echo(json.dumps(diff.as_json(), default=str))
        return
    click.echo(
        f"a: {run_a} ({diff.pipelines[0]}, {diff.states[0]})\n"
        f"b: {run_b} ({diff.pipelines[1]}, {diff.states[1]})"
    )
    for i, recorded in enumerate(diff.recorded):
        if not recorded:
            click.echo(f"note: run {'ab'[i]} has no reproducibility record (an older run)")
    if not diff.changes:
        click.echo("no differences")
    for section, changes in diff.changes.items():
        click.echo(f"{section}:")
        for key, change in changes.items():
            delta = ""
            if "delta" in change:
                delta = f"  ({change['delta']:+.4g})"
            click.echo(f"  {key}: {_short(change['a'])} -> {_short(change['b'])}{delta}")
    if diff.same:
        click.echo(f"unchanged: {', '.join(diff.same)}")


# -- lineage ------------------------------------------------------------------------------


@click.command("lineage")
@click.argument("target")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
def lineage(settings: Any, target: str, fmt: str) -> None:
    """Where TARGET came from and where it went.

    TARGET is RUN_ID/TASK, a task id (its latest run), a file a task read or
    wrote, or a sha256 (8+ hex digits). Through a server: RUN_ID/TASK only.
    """
    from stageflow import operations as ops
    from stageflow.service.cli import _remote

    if (remote := _remote(settings)) is not None:
        found = remote.lineage(*_run_and_task(target))
    else:
        with ops.reading(settings) as store:
            found = ops.lineage(store, target)
    if fmt == "json":
        click.echo(json.dumps(found.as_json(), default=str))
        return
    produced = found.produced
    matched = found.matched
    what = {"task": "", "input": "an input read by "}.get(matched.get("kind", ""), "written by ")
    click.echo(
        f"{target}: {what}task {found.task} of run {found.run_id} (pipeline {found.pipeline})"
    )
    if produced["output_sha256"]:
        click.echo(f"  output sha256 {produced['output_sha256'][:16]}")
    for item in produced["reads"]:
        click.echo(f"  read  {_link(item)}")
    for item in produced["writes"]:
        click.echo(f"  wrote {_link(item)}")
    if found.upstream:
        click.echo("upstream ([N]: N steps up):")
        for node in found.upstream:
            sha = (node["output_sha256"] or "")[:12]
            click.echo(f"  [{node['depth']}] {node['task']}" + (f"  output {sha}" if sha else ""))
            for item in node["reads"]:
                click.echo(f"        read {_link(item)}")
    if found.raw_inputs:
        click.echo("raw inputs:")
        for item in found.raw_inputs:
            task = f"{item['task']} <- " if "task" in item else ""
            click.echo(f"  {task}{_link(item)}")
    click.echo("consumed by:" if found.consumers else "consumed by: nothing recorded")
    for c in found.consumers:
        how = f" (read {c['uri']})" if c.get("uri") else ""
        click.echo(f"  {c['task']} in run {c['run_id']}{how}")


def _run_and_task(target: str) -> tuple[str, str]:
    """``RUN_ID/TASK`` split, for lineage through a server (the API's form); any other
    target is looked up in the store, so it is refused (exit 2) rather than read here."""
    from stageflow.errors import UsageError
    from stageflow.spec.validate import id_problem

    run_id, sep, task = target.partition("/")
    if not sep or not task or id_problem(run_id, "run id") is not None:
        raise UsageError(
            f"lineage {target}: through a server (--server, STAGEFLOW_SERVER) lineage takes "
            "RUN_ID/TASK only (e.g. 20260301-120000-ab12cd/train); a task id, a file or a "
            "sha256 is looked up in the store: run it without --server where the store is "
            "reachable",
            field="target",
        )
    return run_id, task


# -- models -------------------------------------------------------------------------------


@click.group()
def models() -> None:
    """Registered models (MLflow model registry)."""


@models.command("serve")
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True)
@click.option("--tracking-uri", default=None, help="MLflow URI (default: the configured one).")
@click.pass_obj
def models_serve(settings: Any, model: str, host: str, port: int, tracking_uri: str | None) -> None:
    """Serve MODEL (NAME@ALIAS or NAME/VERSION) over HTTP: POST /invocations."""
    from stageflow.operators.ml import _mlflow
    from stageflow.service.model_server import load_served_model, make_server

    _require_mlflow("models serve")
    uri = _mlflow.tracking_uri(tracking_uri or settings.mlflow_tracking_uri, settings.home)
    served = load_served_model(model, uri)
    server = make_server(served, host, port)
    where = f"http://{host}:{server.server_address[1]}"
    alias = f" (@{served.alias})" if served.alias else ""
    click.echo(
        f"serving {served.name} version {served.version}{alias} on {where}/invocations "
        "(Ctrl-C stops)",
        err=True,
    )
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.server_close()


# -- extensions of existing commands ---------------------------------------------------------


def _add_track_option(command: click.Command) -> None:
    original = command.callback
    if original is None:
        return

    def callback(*args: Any, track: bool | None = None, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        if track is not None:
            ctx.obj = replace(ctx.obj, tracking=track)
        if getattr(ctx.obj, "tracking", False):
            _require_mlflow("--track")
        return original(*args, **kwargs)

    command.callback = callback
    command.params.append(
        click.Option(
            ["--track/--no-track"],
            default=None,
            help="Log the run to MLflow: params, metrics, reports (default: STAGEFLOW_TRACKING).",
        )
    )


def _append_record_to_show(command: click.Command) -> None:
    original = command.callback
    if original is None:
        return

    def callback(*args: Any, **kwargs: Any) -> Any:
        value = original(*args, **kwargs)
        if kwargs.get("fmt", "text") == "text":
            _print_record(click.get_current_context().obj, kwargs["run_id"])
        return value

    command.callback = callback


def _print_record(settings: Any, run_id: str) -> None:
    from stageflow import operations as ops
    from stageflow.service.cli import _remote

    if (remote := _remote(settings)) is not None:
        record = remote.record(run_id)
    else:
        with ops.reading(settings) as store:
            record = ops.record(store, run_id)
    if not record:
        return
    spec = record.get("spec") or {}
    code = record.get("code") or {}
    env = record.get("environment") or {}
    lines = [f"pipeline version  {spec.get('version')} (content hash of the spec)"]
    if spec.get("source"):
        digest = f" (sha256 {str(spec['file_sha256'])[:12]})" if spec.get("file_sha256") else ""
        lines.append(f"spec file         {spec['source']}{digest}")
    if code:
        dirty = " (dirty)" if code.get("git_dirty") else ""
        lines.append(
            f"code              git {str(code.get('git_commit'))[:12]}{dirty} "
            f"on {code.get('git_branch')}"
        )
    packages = env.get("packages") or {}
    lines.append(
        f"environment       Python {env.get('python')}, {len(packages)} packages "
        f"(sha256 {str(env.get('packages_sha256'))[:12]})"
    )
    if record.get("seeds"):
        seeds = ", ".join(f"{k}={v}" for k, v in record["seeds"].items())
        lines.append(f"seeds             {seeds}")
    for tid, meta in (record.get("tasks") or {}).items():
        for item in meta.get("reads", []):
            if not str(item.get("uri", "")).startswith("task:"):
                lines.append(f"data read         {tid} <- {_link(item)}")
    tracking = record.get("tracking") or {}
    if tracking.get("mlflow_run_id"):
        lines.append(
            f"tracking          MLflow run {tracking['mlflow_run_id']} "
            f"(experiment {tracking.get('experiment')}, {tracking.get('tracking_uri')})"
        )
    elif tracking.get("error"):
        lines.append(f"tracking          failed: {tracking['error']}")
    click.echo("reproducibility:")
    for line in lines:
        click.echo(f"  {line}")


# -- helpers --------------------------------------------------------------------------------


def _require_mlflow(what: str) -> None:
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise MissingExtra(f"{what} needs MLflow: pip install 'stageflow[mlflow]'")


def _link(item: dict[str, Any]) -> str:
    sha = item.get("sha256")
    kind = item.get("kind")
    extra = ", ".join(x for x in (kind, f"sha256 {sha[:12]}" if sha else None) if x)
    return f"{item.get('uri')}" + (f" ({extra})" if extra else "")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return text if len(text) <= 80 else text[:77] + "..."
