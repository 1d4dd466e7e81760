"""Validate a pipeline completely before anything runs, and plan it.

``check(pipeline, params)`` gathers every problem at once — the spec's own
(``spec.validate``), cycles (``graph.find_cycle``), and each task's use of its
operator (``operators.registry``: unknown names, bad parameters, ``call:``
targets that do not import, function parameters nothing provides) — and raises
one ``InvalidSpec``. ``resolve_params`` merges ``--param`` overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from stageflow.engine.scheduler import EnginePlan
from stageflow.errors import InvalidSpec, Problem
from stageflow.graph import find_cycle, format_cycle
from stageflow.operators.python import takes_anything
from stageflow.operators.registry import metric_reference_problems, task_problems
from stageflow.runtime.resilience import fallback_problems
from stageflow.spec.models import Pipeline, Resources
from stageflow.spec.params import substitute
from stageflow.spec.validate import graph_rows, pipeline_problems, structural_problems

__all__ = [
    "check",
    "declared_values",
    "is_secret_param",
    "plan_problems",
    "resolve_params",
    "task_parameters",
]


def resolve_params(pipeline: Pipeline, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The run's parameters: the pipeline's ``params`` with ``overrides`` applied.

    Raises ``InvalidSpec`` naming an override the pipeline does not declare.
    """
    unknown = [k for k in overrides if k not in pipeline.params]
    if unknown:
        from stageflow.spec.suggest import did_you_mean

        known = ", ".join(sorted(pipeline.params)) or "none"
        fix = (
            "declare it in Pipeline(..., params={...})"
            if _defined_in_python(pipeline)
            else "add it under `params:`"
        )
        problems = []
        for k in unknown:
            hint = did_you_mean(k, list(pipeline.params))
            problems.append(
                Problem(
                    f"--param {k}: the pipeline declares no parameter '{k}' "
                    f"(declared: {known}); "
                    + (f"did you mean '{hint}'? Or {fix}" if hint else fix),
                    field=f"params.{k}",
                )
            )
        raise InvalidSpec(problems, pipeline=pipeline.name)
    merged = {**pipeline.params, **overrides}
    secret = [
        Problem(
            f"parameter '{name}' is secret: its value is never stored, so give it as a "
            f"reference, --param {name}='${{secret:NAME}}', and set NAME where the tasks "
            "run (their environment, or STAGEFLOW_SECRETS_FILE)",
            field=f"params.{name}",
        )
        for name, declared in pipeline.params.items()
        if is_secret_param(declared) and not _secret_reference(merged[name])
    ]
    if secret:
        raise InvalidSpec(secret, pipeline=pipeline.name)
    return merged


def is_secret_param(declared: Any) -> bool:
    """Whether a ``params:`` entry declares a secret parameter (``{secret: true}``)."""
    return (
        isinstance(declared, dict)
        and declared.get("secret") is True
        and set(declared) <= {"secret", "description"}
    )


def _secret_reference(value: Any) -> bool:
    from stageflow.runtime.secrets import SECRET_REF

    return isinstance(value, str) and SECRET_REF.fullmatch(value) is not None


def declared_values(pipeline: Pipeline) -> dict[str, Any]:
    """The pipeline's ``params`` as validation substitutes them: a secret parameter as
    a reference (a string), as a run gives it."""
    return {
        name: f"${{secret:{name.upper()}}}" if is_secret_param(value) else value
        for name, value in pipeline.params.items()
    }


def _defined_in_python(pipeline: Pipeline) -> bool:
    """Whether ``pipeline`` was written in Python (its module, or functions as tasks)
    rather than in a YAML/JSON file: the advice names where its ``params`` live."""
    source = getattr(pipeline, "_source", None)
    if source is not None:
        return str(source).endswith(".py")
    return any(t.fn is not None for t in pipeline.tasks)


def task_parameters(
    task_parameters: Mapping[str, Any],
    params: Mapping[str, Any],
    schedule: Mapping[str, str] | None = None,
) -> Any:
    """A task's parameters with ``${params.NAME}`` substituted, and ``${schedule.KEY}``
    when the run's schedule values are given."""
    return substitute(dict(task_parameters), params, schedule) if task_parameters else {}


def check(
    pipeline: Pipeline,
    params: Mapping[str, Any] | None = None,
    *,
    operator_defaults: Mapping[str, Resources] | None = None,
    import_calls: bool = True,
) -> EnginePlan:
    """Raise ``InvalidSpec`` with every problem of ``pipeline``; else return its
    ``EnginePlan`` (built once here, reused by the runner). ``operator_defaults``:
    the request of a task that declares none, by operator. ``import_calls``: import
    ``call:`` targets to check how they are called; without (a process that must never
    run a user's module, the API), only their form is checked."""
    problems, plan = _problems_and_plan(pipeline, params, operator_defaults, import_calls)
    if problems or plan is None:
        raise InvalidSpec(problems, pipeline=pipeline.name)
    return plan


def plan_problems(
    pipeline: Pipeline, params: Mapping[str, Any] | None = None, *, import_calls: bool = True
) -> list[Problem]:
    """Every problem of ``pipeline`` (what ``check`` raises), as a list."""
    return _problems_and_plan(pipeline, params, import_calls=import_calls)[0]


def schedule_problems(pipeline: Pipeline) -> list[Problem]:
    """The problems of the pipeline's ``schedule:`` and ``schedules:`` (their timing,
    ``engine.schedules``; their names; their parameters, which the pipeline must
    declare). A ``once`` whose time has passed is not one: the spec stays valid."""
    from stageflow.engine.schedules import entry_problems

    found: list[Problem] = []
    seen: set[str] = set()
    offset = 1 if pipeline.schedule else 0
    for k, (name, entry) in enumerate(pipeline.schedule_entries()):
        where = "schedule" if k < offset else f"schedules[{k - offset}]"
        for field, message in entry_problems(entry, where):
            found.append(Problem(message, field=field, pipeline=pipeline.name))
        if entry.after is not None and entry.after == pipeline.name:
            found.append(
                Problem(
                    f"{where}.after: a schedule of pipeline '{pipeline.name}' may not fire "
                    "after its own runs (each run would fire the next, for ever); name "
                    "another pipeline",
                    field=f"{where}.after",
                    pipeline=pipeline.name,
                )
            )
        if name in seen:
            found.append(
                Problem(
                    f"{where}: the schedule name '{name}' is used twice; give each a "
                    "`name:` of its own",
                    field=f"{where}.name",
                    pipeline=pipeline.name,
                )
            )
        seen.add(name)
        unknown = sorted(set(entry.params) - set(pipeline.params))
        if unknown:
            found.append(
                Problem(
                    f"{where}.params: the pipeline declares no parameter "
                    f"{', '.join(repr(u) for u in unknown)} "
                    f"(declared: {', '.join(sorted(pipeline.params)) or 'none'}); "
                    "add it under `params:`",
                    field=f"{where}.params",
                    pipeline=pipeline.name,
                )
            )
    return found


def _problems_and_plan(
    pipeline: Pipeline,
    params: Mapping[str, Any] | None,
    operator_defaults: Mapping[str, Resources] | None = None,
    import_calls: bool = True,
) -> tuple[list[Problem], EnginePlan | None]:
    params = declared_values(pipeline) if params is None else params
    plan: EnginePlan | None = None
    problems: list[Problem] = structural_problems(graph_rows(pipeline), pipeline=pipeline.name)
    spec_problems = pipeline_problems(pipeline)
    problems.extend(spec_problems)
    if pipeline.schedule or pipeline.schedules:
        problems.extend(schedule_problems(pipeline))
    if pipeline.alerts or pipeline.deadline or any(t.deadline for t in pipeline.tasks):
        from stageflow.engine.alerts import spec_problems as alert_problems

        problems.extend(
            Problem(message, field=field, pipeline=pipeline.name)
            for field, message in alert_problems(pipeline)
        )
    # A task whose `call:` is already reported gets no second problem about it.
    bad_calls = {p.task for p in spec_problems if p.field == "call"}
    cycle: list[str] | None = None
    if problems:
        # Still look for a cycle: find_cycle ignores unknown ids, self-loops are
        # reported above, and a duplicated id keeps the edges of every copy.
        upstream: dict[str, list[str]] = {}
        for t in pipeline.tasks:
            upstream.setdefault(t.id, []).extend(u for u in t.all_upstream if u != t.id)
        cycle = find_cycle(upstream)
    else:
        plan = EnginePlan.from_pipeline(pipeline, operator_defaults)
        order = plan.topological_order()
        if order is None:  # the cheap count says there is a cycle; find_cycle names it
            cycle = find_cycle(pipeline.upstream_map())
        else:
            plan = replace(plan, order=order)  # the Scheduler's ranks reuse it
    if cycle is not None:
        problems.append(
            Problem(
                f"the tasks form a cycle: {format_cycle(cycle)}; remove one of these dependencies",
                task=cycle[0],
                field="upstream",
            )
        )
    free: dict[int, bool] = {}  # id(fn) -> it needs nothing from a task (generated DAGs)
    for task in pipeline.tasks:
        if task.when is not None or task.inputs:
            problems.extend(metric_reference_problems(task, pipeline))
        if task.id in bad_calls:
            continue
        fn = task.fn
        if fn is not None and not task.parameters and not task.inputs and task.fallback is None:
            needs_nothing = free.get(id(fn))
            if needs_nothing is None:
                needs_nothing = free[id(fn)] = takes_anything(fn)
            if needs_nothing:
                continue  # no parameter to check, and nothing it needs can be missing
        try:
            parameters = task_parameters(task.parameters, params)
        except KeyError:
            continue  # reported by pipeline_problems
        problems.extend(
            task_problems(task, parameters, params, pipeline=pipeline, import_calls=import_calls)
        )
        if task.fallback is not None:
            problems.extend(fallback_problems(task, parameters, params, import_calls=import_calls))
    if plan is not None and not problems and any(t.operator == "sensor" for t in pipeline.tasks):
        from stageflow.runtime.sensing import sensor_policies

        run_params = params
        plan = replace(
            plan,
            sensors=sensor_policies(pipeline, lambda t: task_parameters(t.parameters, run_params)),
        )
    return problems, plan
