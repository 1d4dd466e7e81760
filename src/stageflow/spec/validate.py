"""Structural and semantic checks of a pipeline, gathered, never raised one by one.

``structural_problems`` looks only at ids and upstream lists (read loosely, so
it runs even when other fields failed type validation): invalid or missing ids,
duplicates, self-dependencies, unknown upstream ids with a did-you-mean.
``pipeline_problems`` checks a typed ``Pipeline``: what each task runs, ``call:``
targets' form, ``inputs`` sources, run parameter names (identifiers, no two
differing only in case) and ``${params.NAME}`` references.
``graph_rows`` gives a typed pipeline's rows for ``structural_problems``.
Cycles are the graph layer's (``graph.find_cycle``); operators' parameters are
the registry's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from stageflow.errors import Problem
from stageflow.spec.models import Pipeline, input_source
from stageflow.spec.params import (
    SCHEDULE_KEYS,
    param_collision_problem,
    param_name_collisions,
    param_name_problem,
    references,
    schedule_references,
)
from stageflow.spec.suggest import Suggester

__all__ = ["ID_PATTERN", "graph_rows", "id_problem", "pipeline_problems", "structural_problems"]

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_ID_LENGTH = 128
_CALL_PATTERN = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


_VALID_ID = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: Pipeline names are shown more than typed: spaces are allowed inside (seed 000
#: calls one "My Workflow"); they are never used as a path.
_VALID_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9](?:[A-Za-z0-9 _.-]{0,126}[A-Za-z0-9_.-])?")


def id_problem(value: str, what: str = "task id") -> str | None:
    """Why ``value`` is not a valid id, or ``None`` when it is."""
    if _VALID_ID.fullmatch(value):  # the common case, in one regex call
        return None
    if not value:
        return f"{what} is empty; use letters, digits, '_', '.', '-'"
    if len(value) > MAX_ID_LENGTH:
        return f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
    if not ID_PATTERN.fullmatch(value):
        return (
            f"{what} {value!r} is invalid; it must start with a letter or digit and "
            "contain only letters, digits, '_', '.', '-'"
        )
    if ".." in value:
        return f"{what} {value!r} contains '..'; use a single '.'"
    return None


def structural_problems(
    tasks: Iterable[tuple[str | None, list[str], int]], *, pipeline: str | None = None
) -> list[Problem]:
    """Problems with ids and upstream references of ``(id, upstream, index)`` rows."""
    rows = list(tasks)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for tid, _ups, index in rows:
        if tid is None:
            problems.append(Problem(f"task #{index + 1} has no id; add `id:`", field="id"))
            continue
        if not _VALID_ID.fullmatch(tid):
            why = id_problem(tid)
            if why is not None:
                problems.append(Problem(why, task=tid, field="id"))
        if tid in seen:
            problems.append(
                Problem(
                    f"duplicate task id (also task #{seen[tid] + 1}); ids must be unique",
                    task=tid,
                    field="id",
                )
            )
        else:
            seen[tid] = index
    suggester: Suggester | None = None
    for tid, ups, _index in rows:
        if tid is None or not ups:
            continue
        for up in ups:
            if up in seen and up != tid:
                continue
            if up == tid:
                problems.append(
                    Problem(
                        "depends on itself; remove it from `upstream`", task=tid, field="upstream"
                    )
                )
            elif up not in seen:
                if suggester is None:
                    suggester = Suggester(seen)
                hint = suggester.suggest(up)
                fix = f"did you mean '{hint}'?" if hint else "add that task or fix the id"
                problems.append(
                    Problem(
                        f"upstream task '{up}' does not exist; {fix}", task=tid, field="upstream"
                    )
                )
    return problems


def graph_rows(pipeline: Pipeline) -> Iterator[tuple[str, list[str], int]]:
    """``(id, upstream, index)`` per task for ``structural_problems``. An ``inputs``
    source that is not a task (or is the task itself) is left out:
    ``pipeline_problems`` reports it once, naming the parameter."""
    ids: set[str] | None = None
    for i, t in enumerate(pipeline.tasks):
        ups = t.all_upstream
        if t.inputs:
            if ids is None:
                ids = {x.id for x in pipeline.tasks}
            sources = {input_source(u)[0] for u in t.inputs.values()}
            ups = [u for u in ups if u not in sources or (u in ids and u != t.id)]
        yield t.id, ups, i


def pipeline_problems(pipeline: Pipeline) -> list[Problem]:
    """Semantic problems of a typed pipeline (beyond ids and upstream)."""
    problems: list[Problem] = []
    if not _VALID_NAME.fullmatch(pipeline.name):
        problems.append(
            Problem(
                f"pipeline name {pipeline.name!r} is invalid; it must be 1-128 characters, "
                "start and end with a letter, digit, '_', '.' or '-', contain only those "
                "and spaces, and no '..'",
                field="name",
            )
        )
    if not pipeline.tasks:
        problems.append(Problem("has no tasks; add at least one under `tasks:`", field="tasks"))
    known_params = set(pipeline.params)
    for name in pipeline.params:
        why = param_name_problem(name)
        if why is not None:
            problems.append(Problem(why, field=f"params.{name}"))
    for first, other in param_name_collisions(pipeline.params):
        problems.append(Problem(param_collision_problem(first, other), field=f"params.{other}"))
    ids: set[str] | None = None
    for task in pipeline.tasks:
        if task.inputs:
            if ids is None:
                ids = {t.id for t in pipeline.tasks}
            problems.extend(_inputs_problems(task, ids))
        if task.map_over is not None and task.map_over not in task.upstream:
            problems.append(
                Problem(
                    f"map_over names '{task.map_over}', which is not in this task's `upstream`; "
                    "a mapped task runs once per element of an upstream task's output",
                    task=task.id,
                    field="map_over",
                )
            )
        if task.min_success_ratio is not None and task.map_over is None:
            problems.append(
                Problem(
                    "min_success_ratio applies only to a mapped task; add `map_over:` or remove it",
                    task=task.id,
                    field="min_success_ratio",
                )
            )
        if task.when is not None:
            problems.extend(
                _condition_problems(task.id, task.when, task.all_upstream, known_params)
            )
        if task.exclusive and pipeline.execution_mode != "hybrid":
            problems.append(
                Problem(
                    f"exclusive: true runs a task alone only in execution_mode: hybrid "
                    f"(this pipeline's is {pipeline.execution_mode}); set the pipeline's "
                    "`execution_mode: hybrid` or remove `exclusive`",
                    task=task.id,
                    field="exclusive",
                )
            )
        given = [
            k
            for k, v in (("operator", task.operator), ("call", task.call), ("fn", task.fn))
            if v is not None
        ]
        if not given:
            problems.append(
                Problem(
                    "says nothing to run; give `operator:` or `call: module:function`",
                    task=task.id,
                    field="operator",
                )
            )
        elif len(given) > 1 and given != ["operator", "call"]:
            problems.append(
                Problem(f"gives both {' and '.join(given)}; keep one", task=task.id, field=given[1])
            )
        if task.operator not in (None, "python") and task.call is not None:
            problems.append(
                Problem(
                    f"`call:` runs a Python function, but operator is "
                    f"'{task.operator}'; drop one of them",
                    task=task.id,
                    field="call",
                )
            )
        if task.call is not None and not _CALL_PATTERN.fullmatch(task.call):
            problems.append(
                Problem(
                    f"call target {task.call!r} is not of the form 'package.module:function'",
                    task=task.id,
                    field="call",
                )
            )
        if not task.parameters:
            continue
        for path, name in _param_refs(task.parameters, "parameters"):
            if name not in known_params:
                hint = (
                    f"; declare it under `params:` (known: {', '.join(sorted(known_params))})"
                    if known_params
                    else "; declare it under the pipeline's `params:`"
                )
                problems.append(
                    Problem(
                        f"refers to ${{params.{name}}}, which is not a run parameter{hint}",
                        task=task.id,
                        field=path,
                    )
                )
        for path, key in _schedule_refs(task.parameters, "parameters"):
            if key not in SCHEDULE_KEYS:
                problems.append(
                    Problem(
                        f"refers to ${{schedule.{key}}}; a run's schedule values are "
                        + ", ".join(f"${{schedule.{k}}}" for k in SCHEDULE_KEYS),
                        task=task.id,
                        field=path,
                    )
                )
    return problems


def _schedule_refs(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        for key in schedule_references(value):
            yield path, key
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _schedule_refs(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _schedule_refs(v, f"{path}[{i}]")


def _inputs_problems(task: Any, ids: set[str]) -> list[Problem]:
    """``inputs`` that name no task, or the task itself, or that a task running an
    operator gives (an operator reads its upstream outputs itself)."""
    if task.fn is None and task.call is None:
        return [
            Problem(
                "inputs binds upstream outputs to a Python function's parameters; operator "
                f"'{task.operator_name}' reads them itself: use `upstream:` instead",
                task=task.id,
                field="inputs",
            )
        ]
    problems = []
    for name, full in task.inputs.items():
        source = input_source(full)[0]
        if source == task.id:
            why = f"inputs maps parameter '{name}' to this task itself; name an upstream task"
        elif source in ids:
            continue
        else:
            hint = Suggester(ids).suggest(source)
            fix = f"did you mean '{hint}'?" if hint else "add that task or fix the id"
            why = f"inputs maps parameter '{name}' to task '{source}', which does not exist; {fix}"
        problems.append(Problem(why, task=task.id, field=f"inputs.{name}"))
    return problems


def _param_refs(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        for name in references(value):
            yield path, name
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _param_refs(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _param_refs(v, f"{path}[{i}]")


def _condition_problems(
    task: str, source: str, upstream: list[str], params: set[str]
) -> list[Problem]:
    """A ``when:`` that does not parse, or refers to a non-upstream task or an
    undeclared parameter."""
    from stageflow.spec.expr import ExpressionError, parse_expression  # only with conditions

    try:
        expression = parse_expression(source, upstream)
    except ExpressionError as exc:
        return [Problem(f"condition {exc}", task=task, field="when")]
    problems = []
    for ref in expression.references:
        if ref.kind == "params" and ref.name not in params:
            problems.append(
                Problem(
                    f"condition refers to ${{params.{ref.name}}}, which is not a run parameter; "
                    "declare it under `params:`",
                    task=task,
                    field="when",
                )
            )
        elif ref.kind == "task" and ref.name not in upstream:
            problems.append(
                Problem(
                    f"condition refers to ${{{ref.text}}}, but '{ref.name}' is not upstream of "
                    f"this task; add it to `upstream:`",
                    task=task,
                    field="when",
                )
            )
    return problems
