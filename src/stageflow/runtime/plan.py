"""Validate a pipeline completely before anything runs, and plan it.

``check(pipeline, params)`` gathers every problem at once — the spec's own
(``spec.validate``), cycles (``graph.find_cycle``), and each task's use of its
operator (``operators.registry``: unknown names, bad parameters, ``call:``
targets that do not import, function parameters nothing provides) — and raises
one ``InvalidSpec``. ``resolve_params`` merges ``--param`` overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stageflow.errors import InvalidSpec, Problem
from stageflow.graph import find_cycle, format_cycle
from stageflow.operators.registry import task_problems
from stageflow.spec.models import Pipeline
from stageflow.spec.params import substitute
from stageflow.spec.validate import pipeline_problems, structural_problems

__all__ = ["check", "resolve_params", "task_parameters"]


def resolve_params(pipeline: Pipeline, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The run's parameters: the pipeline's ``params`` with ``overrides`` applied.

    Raises ``InvalidSpec`` naming an override the pipeline does not declare.
    """
    unknown = [k for k in overrides if k not in pipeline.params]
    if unknown:
        known = ", ".join(sorted(pipeline.params)) or "none"
        raise InvalidSpec(
            [
                Problem(
                    f"--param {k}: the pipeline declares no parameter '{k}' "
                    f"(declared: {known}); add it under `params:`",
                    field=f"params.{k}",
                )
                for k in unknown
            ],
            pipeline=pipeline.name,
        )
    return {**pipeline.params, **overrides}


def task_parameters(task_parameters: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
    """A task's parameters with ``${params.NAME}`` substituted."""
    return substitute(dict(task_parameters), params) if task_parameters else {}


def check(pipeline: Pipeline, params: Mapping[str, Any] | None = None) -> None:
    """Raise ``InvalidSpec`` with every problem of ``pipeline``; return when it can run."""
    params = pipeline.params if params is None else params
    problems: list[Problem] = structural_problems(
        ((t.id, t.all_upstream, i) for i, t in enumerate(pipeline.tasks)), pipeline=pipeline.name
    )
    problems.extend(pipeline_problems(pipeline))
    if not problems:
        cycle = find_cycle(pipeline.upstream_map())
        if cycle is not None:
            problems.append(
                Problem(
                    f"the tasks form a cycle: {format_cycle(cycle)}; "
                    "remove one of these dependencies",
                    task=cycle[0],
                    field="upstream",
                )
            )
    for task in pipeline.tasks:
        try:
            parameters = task_parameters(task.parameters, params)
        except KeyError:
            continue  # reported by pipeline_problems
        problems.extend(task_problems(task, parameters, params))
    if problems:
        raise InvalidSpec(problems, pipeline=pipeline.name)
