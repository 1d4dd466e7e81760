"""Turn spec text (YAML or JSON) into a validated ``Pipeline``.

Policy: specs may come from the network, so parsing is bounded and safe.
YAML is read with the safe loader (tags such as ``!!python/object`` are
refused, never constructed); the document's size, nesting depth, alias count
and expanded node count, and the number of tasks, are checked against
``Limits`` and a spec over one is refused quickly with a message naming it.
Every problem found is reported at once in one ``InvalidSpec``.

This module does no I/O: callers read files (``runtime.loading``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from stageflow.errors import InvalidSpec, Problem, SpecLimitExceeded
from stageflow.spec.aliases import (
    alias_message,
    default_args_message,
    normalize_pipeline,
    seed_notes,
)
from stageflow.spec.messages import readable_error
from stageflow.spec.models import HOOKS, PRIORITY_NAMES, Pipeline
from stageflow.spec.suggest import did_you_mean
from stageflow.spec.validate import structural_problems

__all__ = [
    "Limits",
    "parse_document",
    "pipeline_from_data",
    "pipeline_from_text",
    "salvage_pipeline",
]

Format = Literal["yaml", "json"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a spec may be; generous for real pipelines."""

    max_bytes: int = 64 * 1024 * 1024
    max_depth: int = 64
    max_aliases: int = 10_000
    max_nodes: int = 5_000_000
    max_tasks: int = 100_000


DEFAULT_LIMITS = Limits()


def pipeline_from_text(
    text: str | bytes, *, fmt: Format, source: str = "<spec>", limits: Limits = DEFAULT_LIMITS
) -> Pipeline:
    """Parse and validate a whole spec; raise ``InvalidSpec`` with every problem."""
    return pipeline_from_data(parse_document(text, fmt=fmt, source=source, limits=limits), limits)


def parse_document(
    text: str | bytes, *, fmt: Format, source: str = "<spec>", limits: Limits = DEFAULT_LIMITS
) -> object:
    """Parse YAML/JSON text within ``limits``; raise ``InvalidSpec`` on any problem."""
    size = len(text)
    if size > limits.max_bytes:
        raise SpecLimitExceeded(
            f"{source} is {size:,} bytes, over the limit of {limits.max_bytes:,} "
            "(STAGEFLOW_MAX_SPEC_BYTES); split the pipeline or raise the limit",
            limit="max_bytes",
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidSpec(
                [Problem(f"{source} is not UTF-8 text (byte {exc.start}); save it as UTF-8")]
            ) from None
    if "\x00" in text:
        raise InvalidSpec(
            [
                Problem(
                    f"{source} contains a NUL byte at offset {text.index(chr(0))}; "
                    "a spec must be plain text"
                )
            ]
        )
    if not text.strip():
        raise InvalidSpec(
            [Problem(f"{source} is empty; a pipeline needs at least `name:` and `tasks:`")]
        )
    try:
        data = _parse_json(text, source) if fmt == "json" else _parse_yaml(text, source, limits)
    except RecursionError:
        raise SpecLimitExceeded(
            f"{source} is nested deeper than the limit of {limits.max_depth} levels "
            "(STAGEFLOW_MAX_SPEC_DEPTH)",
            limit="max_depth",
        ) from None
    _check_shape(data, source, limits)
    return data


def pipeline_from_data(data: object, limits: Limits = DEFAULT_LIMITS) -> Pipeline:
    """Validate parsed data as a pipeline; raise ``InvalidSpec`` with every problem."""
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "nothing"
        raise InvalidSpec(
            [Problem(f"the spec must be a mapping with `name:` and `tasks:`, not {kind}")]
        )
    raw = normalize_pipeline(data)
    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    tasks = raw.get("tasks")
    if isinstance(tasks, list) and len(tasks) > limits.max_tasks:
        raise SpecLimitExceeded(
            f"the pipeline has {len(tasks):,} tasks, over the limit of {limits.max_tasks:,} "
            "(STAGEFLOW_MAX_TASKS); raise the limit or split the pipeline",
            limit="max_tasks",
        )
    problems: list[Problem] = []
    pipeline: Pipeline | None = None
    try:
        pipeline = Pipeline.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems_from_pydantic(exc, raw))
    problems.extend(structural_problems(_loose_graph(raw), pipeline=name))
    if problems or pipeline is None:
        raise InvalidSpec(_dedupe(problems), pipeline=name)
    pipeline._notes = seed_notes(data)
    return pipeline


def salvage_pipeline(data: object) -> Pipeline | None:
    """``data`` as a pipeline with its unknown keys dropped, or ``None``.

    For reporting: when a spec fails only on unknown keys (or on ids and
    upstream, which the model does not check), the rest can still be checked
    (operators, cycles) so every problem is reported at once. ``None`` when
    any other field is wrong.
    """
    if not isinstance(data, dict):
        return None
    raw = normalize_pipeline(data)  # copies every mapping that can hold an unknown key
    try:
        return Pipeline.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    if any(err["type"] != "extra_forbidden" for err in errors):
        return None
    for err in errors:
        node: Any = raw
        *path, key = err["loc"]
        for part in path:
            node = node[part]
        node.pop(key, None)
    try:
        return Pipeline.model_validate(raw)
    except ValidationError:
        return None


# -- parsing -------------------------------------------------------------------


def _parse_json(text: str, source: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSpec(
            [
                Problem(
                    f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                    f"column {exc.colno}"
                )
            ]
        ) from None


def _parse_yaml(text: str, source: str, limits: Limits) -> object:
    import yaml  # lazy: only YAML specs pay for it

    _check_flow_depth(text, source, limits)
    # The C loader composes in C, out of reach of an alias counter: a document
    # with anchors and aliases goes through the (slower) counting loader instead.
    loader_cls: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    if "&" in text and "*" in text:
        loader_cls = _counting_loader(yaml, source, limits)
    try:
        docs = list(yaml.load_all(text, Loader=loader_cls))  # safe loaders only
    except SpecLimitExceeded:
        raise
    except yaml.constructor.ConstructorError as exc:
        raise InvalidSpec([Problem(_yaml_message(source, exc, tag=True))]) from None
    except yaml.YAMLError as exc:
        raise InvalidSpec([Problem(_yaml_message(source, exc, tag=False))]) from None
    if len(docs) != 1:
        raise InvalidSpec(
            [Problem(f"{source} holds {len(docs)} YAML documents; a spec is exactly one")]
        )
    return docs[0]


def _counting_loader(yaml: Any, source: str, limits: Limits) -> type[Any]:
    class _CountingLoader(yaml.SafeLoader):  # type: ignore[misc]  # untyped base
        aliases = 0

        def compose_node(self, parent: object, index: object) -> object:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > limits.max_aliases:
                    raise SpecLimitExceeded(
                        f"{source} uses more than {limits.max_aliases:,} YAML aliases "
                        "(STAGEFLOW_MAX_SPEC_ALIASES); write the values out",
                        limit="max_aliases",
                    )
            return super().compose_node(parent, index)

    return _CountingLoader


_BRACKETS = re.compile(r"[\[\]{}]")


def _check_flow_depth(text: str, source: str, limits: Limits) -> None:
    """Refuse absurdly nested flow collections before a recursive parser sees them.

    Counts brackets outside nothing smarter than the raw text: brackets inside
    strings can only make the estimate larger, and only past the limit matters.
    """
    depth = 0
    for match in _BRACKETS.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        if depth > limits.max_depth * 4:
            raise SpecLimitExceeded(
                f"{source} is nested deeper than the limit of {limits.max_depth} levels "
                "(STAGEFLOW_MAX_SPEC_DEPTH)",
                limit="max_depth",
            )


def _yaml_message(source: str, exc: Exception, *, tag: bool) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if tag:
        problem = getattr(exc, "problem", "") or str(exc)
        return (
            f"{source}{where}: {problem}; YAML tags that build objects are not allowed "
            "in a spec (remove the tag)"
        )
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{source} is not valid YAML{where}: {problem}"


def _check_shape(data: object, source: str, limits: Limits) -> None:
    """Walk the parsed data (through aliases) bounding depth and node count."""
    stack: list[tuple[object, int]] = [(data, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise SpecLimitExceeded(
                f"{source} expands to more than {limits.max_nodes:,} values "
                "(STAGEFLOW_MAX_SPEC_NODES); an alias bomb or a spec far too large",
                limit="max_nodes",
            )
        if depth > limits.max_depth:
            raise SpecLimitExceeded(
                f"{source} is nested deeper than the limit of {limits.max_depth} levels "
                "(STAGEFLOW_MAX_SPEC_DEPTH)",
                limit="max_depth",
            )
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise InvalidSpec(
                        [
                            Problem(
                                f"{source}: mapping key {key!r} is a "
                                f"{type(key).__name__}; keys must be strings (quote it)"
                            )
                        ]
                    )
                if isinstance(value, dict | list):
                    stack.append((value, depth + 1))
                else:
                    nodes += 1
        elif isinstance(node, list):
            for value in node:
                if isinstance(value, dict | list):
                    stack.append((value, depth + 1))
                else:
                    nodes += 1


# -- pydantic errors as problems ----------------------------------------------


def _problems_from_pydantic(exc: ValidationError, raw: dict[str, Any]) -> list[Problem]:
    problems = []
    raw_tasks = raw.get("tasks")
    tasks: list[Any] = raw_tasks if isinstance(raw_tasks, list) else []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        if loc == ["default_args"] and err["type"] == "extra_forbidden":
            problems.extend(_default_args_problems(err.get("input")))
            continue
        task: str | None = None
        if len(loc) >= 2 and loc[0] == "tasks" and isinstance(loc[1], int):
            index = loc[1]
            entry = tasks[index] if index < len(tasks) else None
            tid = entry.get("id") if isinstance(entry, dict) else None
            task = tid if isinstance(tid, str) else f"#{index + 1}"
            loc = loc[2:]
        field = _field_name(loc)
        problems.append(Problem(_message(err, loc, task), task=task, field=field))
    return problems


def _field_name(loc: list[Any]) -> str | None:
    """``a.b.c``; a hook's channel by index as ``on_failure[1].webhook``."""
    if len(loc) >= 2 and loc[0] in HOOKS and isinstance(loc[1], int):
        rest = "".join(f".{p}" for p in loc[2:])
        return f"{loc[0]}[{loc[1]}]{rest}"
    return ".".join(str(p) for p in loc) or None


def _default_args_problems(left: object) -> list[Problem]:
    """Seed 002's ``default_args`` keys that ``aliases`` could not map, one problem each."""
    if not isinstance(left, dict):
        return [
            Problem(
                f"default_args must be a mapping (Airflow's default arguments), got {left!r}; "
                "or write `defaults:`",
                field="default_args",
            )
        ]
    return [
        Problem(default_args_message(str(key), value), field=f"default_args.{key}")
        for key, value in left.items()
    ]


_KNOWN_KEYS: dict[str, tuple[str, ...]] = {}


def _known_keys(section: str) -> tuple[str, ...]:
    if not _KNOWN_KEYS:
        from stageflow.spec import models

        for name, model in (
            ("pipeline", models.Pipeline),
            ("task", models.Task),
            ("retry", models.RetryPolicy),
            ("resources", models.Resources),
            ("defaults", models.TaskDefaults),
        ):
            _KNOWN_KEYS[name] = tuple(k for k in model.model_fields if k != "fn")
    return _KNOWN_KEYS[section]


def _message(err: Any, loc: list[Any], task: str | None) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        parent = str(loc[-2]) if len(loc) >= 2 else ("task" if task is not None else "pipeline")
        section = (
            parent
            if parent in ("retry", "resources", "defaults")
            else ("task" if task is not None and len(loc) == 1 else "pipeline")
        )
        alias = alias_message(section, key, err.get("input"))
        if alias is not None:
            return alias
        known = _known_keys(section)
        hint = did_you_mean(key, known)
        return f"unknown key '{key}'" + (
            f"; did you mean '{hint}'?" if hint else f"; known keys: {', '.join(known)}"
        )
    if kind == "missing":
        return "is required; add it"
    if kind in ("value_error", "assertion_error"):  # a validator's own words
        return readable_error(err)
    value = err.get("input")
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if loc and loc[-1] == "priority" and kind in ("int_parsing", "int_type"):
        return f"priority must be an integer or one of {', '.join(PRIORITY_NAMES)}, got {shown}"
    if kind == "string_pattern_mismatch" and len(loc) >= 2 and loc[-2] in ("retry_on", "fatal_on"):
        return f"must be an exception class name like ValueError or pkg.module.Error, got {shown}"
    if kind == "enum" or kind == "literal_error":
        return f"{err['msg'].lower()}, got {shown}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {shown}"


def _loose_graph(raw: dict[str, Any]) -> list[tuple[str | None, list[str], int]]:
    """(id, upstream, index) per task, read loosely so structure is checked even
    when some fields are wrong."""
    tasks = raw.get("tasks")
    if not isinstance(tasks, list):
        return []
    out: list[tuple[str | None, list[str], int]] = []
    for index, entry in enumerate(tasks):
        if not isinstance(entry, dict):
            continue
        tid = entry.get("id")
        if not isinstance(tid, str):
            continue  # a missing or non-string id is reported by the model's validation
        ups: list[str] = []
        for key in ("upstream", "after"):
            value = entry.get(key)
            if isinstance(value, list):
                ups.extend(u for u in value if isinstance(u, str))
        out.append((tid, ups, index))
    return out


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
