"""Queries about pipelines: which the store knows, and their versions.

A pipeline version is saved (by content hash of its canonical spec) when a run
of it is created, so the store knows exactly the pipelines that were run or
submitted. ``list_pipelines`` gives one summary per name (sorted); a name's
versions are newest first, each with how many runs used it. One store query
each (``Store.pipeline_versions``). No state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from stageflow.errors import InvalidSpec, Problem, StageflowError, StoreError, UsageError
from stageflow.runtime.result import iso
from stageflow.runtime.store.base import PipelineRecord, Store, VersionCount

if TYPE_CHECKING:
    from stageflow.spec.load import Limits
    from stageflow.spec.models import Pipeline

__all__ = [
    "PipelineSummary",
    "PipelineVersion",
    "list_pipelines",
    "pipeline_spec",
    "pipeline_versions",
]


@dataclass(frozen=True, slots=True)
class PipelineVersion:
    """One saved version of a pipeline and the runs that used it."""

    pipeline: str
    version: str
    saved_at: float
    runs: int
    last_run_at: float | None
    owner: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "version": self.version,
            "saved_at": iso(self.saved_at),
            "runs": self.runs,
            "last_run_at": iso(self.last_run_at),
            "owner": self.owner,
        }


@dataclass(frozen=True, slots=True)
class PipelineSummary:
    """A pipeline the store knows: its newest version and its runs over all versions."""

    name: str
    versions: int
    latest_version: str
    latest_saved_at: float
    runs: int
    last_run_at: float | None
    owner: str | None = None  # the newest version's

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": self.versions,
            "latest_version": self.latest_version,
            "latest_saved_at": iso(self.latest_saved_at),
            "runs": self.runs,
            "last_run_at": iso(self.last_run_at),
            "owner": self.owner,
        }


def list_pipelines(store: Store) -> list[PipelineSummary]:
    """Every pipeline in the store, by name."""
    by_name: dict[str, list[VersionCount]] = {}
    for row in store.pipeline_versions():
        by_name.setdefault(row.pipeline, []).append(row)
    out = []
    for name, rows in by_name.items():  # newest version first within a name
        last = [r.last_run_at for r in rows if r.last_run_at is not None]
        out.append(
            PipelineSummary(
                name=name,
                versions=len(rows),
                latest_version=rows[0].version,
                latest_saved_at=rows[0].saved_at,
                runs=sum(r.runs for r in rows),
                last_run_at=max(last) if last else None,
                owner=rows[0].owner,
            )
        )
    return out


def pipeline_versions(store: Store, name: str) -> list[PipelineVersion]:
    """The saved versions of pipeline ``name``, newest first. Raises ``StageflowError``
    (field ``pipeline``, naming the closest name) when the store has none of that name."""
    rows = store.pipeline_versions(name)
    if not rows:
        raise _unknown(store, name)
    return [PipelineVersion(*row) for row in rows]


def pipeline_spec(store: Store, name: str, version: str = "latest") -> dict[str, Any]:
    """The saved spec of ``name`` at ``version`` (``latest``: the newest) as plain JSON
    data. Raises ``StoreError`` naming the pipeline when there is no such version."""
    record = (
        store.latest_pipeline(name) if version == "latest" else store.get_pipeline(name, version)
    )
    data = json.loads(record.spec_json)
    return data if isinstance(data, dict) else {}


def _unknown(store: Store, name: str) -> StageflowError:
    from stageflow.spec.suggest import did_you_mean

    hint = did_you_mean(name, store.pipeline_names())
    return StageflowError(
        f"no pipeline '{name}' in the store at {store.url}; "
        + (
            f"did you mean '{hint}'?"
            if hint
            else "a pipeline is saved when a run of it is created (`stageflow runs list`)"
        ),
        pipeline=name,
        field="pipeline",
    )


# -- the service's pipelines: saved by a request, owned by a team ---------------------


class NotFound(StageflowError):
    """What a request names does not exist (or is not the caller's to see: 404)."""


class Forbidden(StageflowError):
    """The caller's role does not allow it (403)."""


class Conflict(StageflowError):
    """It clashes with what is stored (409; on the CLI, a mistake to fix: exit 2)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class PublishedPipeline:
    """A pipeline version saved by a request: ``created`` false when the same spec
    was the newest already."""

    name: str
    version: str
    owner: str | None
    created: bool
    tasks: int
    notes: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "owner": self.owner,
            "created": self.created,
            "tasks": self.tasks,
            "notes": self.notes,
        }


@dataclass(frozen=True, slots=True)
class Validation:
    """``validate_spec``'s answer: every problem, and the shape when there is none."""

    valid: bool
    problems: list[Problem]
    name: str | None = None
    tasks: int = 0
    code_tasks: list[str] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "errors": [p.as_json() for p in self.problems],
            "pipeline": self.name,
            "tasks": self.tasks,
            "code_tasks": self.code_tasks or [],
        }


def parse_spec(body: bytes, media_type: str, limits: Limits | None = None) -> object:
    """The document a request sent (JSON, or YAML for ``application/yaml`` and
    ``text/yaml``), parsed safely within ``limits``; ``InvalidSpec`` when it does not parse."""
    from stageflow.spec.load import DEFAULT_LIMITS, parse_document

    fmt: Literal["yaml", "json"] = "yaml" if media_type in YAML_TYPES else "json"
    return parse_document(body, fmt=fmt, source="the request body", limits=limits or DEFAULT_LIMITS)


#: Media types read as YAML (anything else is JSON).
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


def build_pipeline(doc: object, limits: Limits | None = None) -> Pipeline:
    """A pipeline from a request's document, without reading any file or importing
    any module: ``use:`` may name registered templates only (a path would read this
    machine's files), and ``call:`` targets are checked by their form
    (``plan.check(import_calls=False)``). ``InvalidSpec`` with every problem."""
    from stageflow.runtime.plan import plan_problems
    from stageflow.spec.load import DEFAULT_LIMITS, pipeline_from_data

    if isinstance(doc, dict) and any(
        isinstance(t, dict) and "use" in t for t in doc.get("tasks") or []
    ):
        from stageflow.runtime.loading import registered_templates_only
        from stageflow.spec.templates import expand_templates

        try:
            doc = expand_templates(doc, registered_templates_only, "the request body")
        except UsageError as exc:  # a template the spec names cannot be used: its problem
            raise InvalidSpec([Problem(str(exc), field="use")]) from None
    pipeline = pipeline_from_data(doc, limits or DEFAULT_LIMITS)
    problems = plan_problems(pipeline, import_calls=False)
    if problems:
        raise InvalidSpec(problems, pipeline=pipeline.name)
    return pipeline


def validate_spec(doc: object, limits: Limits | None = None) -> Validation:
    """Every problem of a request's document, nothing saved (``build_pipeline``)."""
    from stageflow.operations.access import code_tasks

    try:
        pipeline = build_pipeline(doc, limits)
    except InvalidSpec as exc:
        name = doc.get("name") if isinstance(doc, dict) else None
        return Validation(False, exc.problems, name if isinstance(name, str) else None)
    return Validation(True, [], pipeline.name, len(pipeline.tasks), code_tasks(pipeline))


def publish_pipeline(
    store: Store,
    pipeline: Pipeline,
    *,
    owner: str | None,
    now: float,
    may_see_all: bool = False,
) -> PublishedPipeline:
    """Save ``pipeline`` as a new version of its name, owned by ``owner`` (a name
    another owner holds is a ``Conflict`` unless ``may_see_all``: an admin). The
    same spec again is the same version (``created`` false). Its ``alerts:`` register
    with it (``operations.alerts.apply_spec_rules``)."""
    exists, holder = store.pipeline_owner(pipeline.name)
    if exists and holder != owner and not may_see_all:
        raise Conflict(
            f"pipeline name '{pipeline.name}' belongs to another owner; choose another name",
            pipeline=pipeline.name,
            field="name",
        )
    if exists and holder != owner:  # an admin saving another owner's: it stays theirs
        owner = holder
    spec, version = pipeline.versioned_spec()
    created = store.publish_pipeline(PipelineRecord(pipeline.name, version, spec, now, owner))
    if pipeline.alerts or store.alert_rules(pipeline=pipeline.name):
        from stageflow.operations.alerts import apply_spec_rules  # its `alerts:` register

        apply_spec_rules(store, pipeline, owner=owner, now=now)
    return PublishedPipeline(
        pipeline.name,
        version,
        owner,
        created,
        len(pipeline.tasks),
        list(getattr(pipeline, "_notes", [])),
    )


def owned_pipeline(
    store: Store, name: str, *, owner: str | None, see_all: bool, version: str = "latest"
) -> PipelineRecord:
    """The saved version ``version`` (``latest``: the newest live one) of ``name`` if the
    caller may see it; ``NotFound`` otherwise, the same whether it is missing,
    deleted or another owner's."""
    try:
        record = (
            store.latest_pipeline(name)
            if version == "latest"
            else store.get_pipeline(name, version)
        )
    except StoreError:
        record = None
    if record is None or (record.deleted_at is not None and version == "latest"):
        raise NotFound(
            f"no pipeline '{name}'" + ("" if version == "latest" else f" version '{version}'"),
            pipeline=name,
        )
    if not see_all and record.owner != owner:
        raise NotFound(f"no pipeline '{name}'", pipeline=name)
    return record


def delete_pipeline(
    store: Store, name: str, *, owner: str | None, see_all: bool, now: float
) -> None:
    """Delete every version of ``name`` (its runs stay readable); ``NotFound`` as
    ``owned_pipeline``."""
    owned_pipeline(store, name, owner=owner, see_all=see_all)
    store.delete_pipeline(name, now)


@dataclass(frozen=True, slots=True)
class PipelineGraph:
    """A pipeline's DAG: nodes, edges, levels, critical path (in task units)."""

    name: str
    version: str
    nodes: list[dict[str, Any]]
    edges: list[tuple[str, str]]
    levels: list[list[str]]
    critical_path: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.name,
            "version": self.version,
            "nodes": self.nodes,
            "edges": [{"from": a, "to": b} for a, b in self.edges],
            "levels": self.levels,
            "critical_path": self.critical_path,
        }


def pipeline_graph(record: PipelineRecord) -> tuple[Pipeline, PipelineGraph]:
    """The saved pipeline of ``record`` and its graph."""
    from stageflow.graph import critical_path, levels
    from stageflow.spec.load import pipeline_from_data

    pipeline = pipeline_from_data(json.loads(record.spec_json))
    upstream = pipeline.upstream_map()
    nodes = [
        {"id": t.id, "operator": t.operator_name, "upstream": list(t.all_upstream)}
        for t in pipeline.tasks
    ]
    edges = [(u, t.id) for t in pipeline.tasks for u in t.all_upstream]
    return pipeline, PipelineGraph(
        record.name,
        record.version,
        nodes,
        edges,
        [list(level) for level in levels(upstream)],
        list(critical_path(upstream, {}).tasks),
    )
