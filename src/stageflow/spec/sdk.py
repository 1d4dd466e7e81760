"""The Python SDK: ``@task`` turns a function into a ``Task``.

``@task`` (bare) or ``@task(retries=2, timeout=60, cache=True, ...)``: every
option ``Task(...)`` takes (``TASK_OPTIONS``), plus shorthands — ``retries``,
``retry_delay`` and ``backoff`` for ``retry=RetryPolicy(...)``, ``timeout`` for
``timeout_seconds``, ``map="items"`` for ``.map("items")``. Policies may be
given as mappings (``fallback={"value": 0}``). The task id is the function name
unless ``id=`` is given; the description is the docstring's first line. Upstream
tasks are found by parameter name when the task is put in a ``Pipeline``;
``inputs={"x": "load"}`` binds another task's output to a parameter of any name;
``after=[...]`` orders without data. An option ``@task`` does not take (one that
names what runs, such as ``operator``, or a misspelling) is a ``TypeError``
naming it, with a did-you-mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, overload

from stageflow.spec.models import (
    Approval,
    CircuitBreaker,
    Deadline,
    Fallback,
    Resources,
    RetryPolicy,
    Task,
    TriggerRule,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["TASK_OPTIONS", "TaskOptions", "task"]


class TaskOptions(TypedDict, total=False):
    """The keyword options of ``@task(...)`` (see the module docstring)."""

    id: str
    name: str
    description: str
    upstream: list[str]
    after: list[str]
    inputs: Mapping[str, str]
    parameters: Mapping[str, Any]
    retries: int
    retry_delay: float
    backoff: str
    retry: RetryPolicy | Mapping[str, Any]
    timeout: float
    timeout_seconds: float
    resources: Resources | Mapping[str, float]
    pool: str
    exclusive: bool
    estimated_seconds: float
    enforce_limits: bool
    priority: int | str
    trigger_rule: TriggerRule | str
    when: str
    branch: bool
    map: str | Task
    min_success_ratio: float
    fatal_on: list[str]
    circuit_breaker: CircuitBreaker | Mapping[str, Any]
    fallback: Fallback | Mapping[str, Any]
    cache: bool
    cache_ttl_seconds: float
    cache_version: str
    approval: Approval | Mapping[str, Any] | bool
    deadline: Deadline | Mapping[str, Any]


#: Every option name ``@task`` takes.
TASK_OPTIONS: frozenset[str] = frozenset(TaskOptions.__annotations__)

#: ``Task`` fields that are not options, and why.
_NOT_OPTIONS = {
    "fn": "the decorated function is what the task runs",
    "operator": "a @task runs the function it decorates; for an operator write "
    "Task(id, operator=...)",
    "call": "a @task runs the function it decorates; for a `module:function` target "
    "write Task(id, call=...)",
    "group": "it is set by template expansion (`use:`)",
    "map_over": "write map='UPSTREAM' (or .map(UPSTREAM) on the task)",
}


@overload
def task(fn: Callable[..., Any], /) -> Task: ...


@overload
def task(
    fn: None = None, /, **options: Unpack[TaskOptions]
) -> Callable[[Callable[..., Any]], Task]: ...


def task(
    fn: Callable[..., Any] | None = None, /, **options: Unpack[TaskOptions]
) -> Task | Callable[[Callable[..., Any]], Task]:
    """Wrap a function as a ``Task``; options mirror ``Task(...)``'s fields.

    Raises ``TypeError`` for an option it does not take or two that say the same
    thing (``retries=`` and ``retry=``), and pydantic's ``ValidationError`` for a
    bad option value (a programming mistake in the caller's module, reported at
    import time).
    """
    _check_options(options)

    def wrap(f: Callable[..., Any]) -> Task:
        data: dict[str, Any] = dict(options)
        task_id = data.pop("id", None) or f.__name__
        retries = data.pop("retries", None)
        retry_delay = data.pop("retry_delay", None)
        backoff = data.pop("backoff", None)
        if retries is not None or retry_delay is not None or backoff is not None:
            data["retry"] = RetryPolicy(
                max_retries=retries or 0,
                delay_seconds=retry_delay or 0.0,
                backoff=backoff or "fixed",
            )
        timeout = data.pop("timeout", None)
        if timeout is not None:
            data["timeout_seconds"] = timeout
        over = data.pop("map", None)
        ratio = data.pop("min_success_ratio", None) if over is not None else None
        for key in ("upstream", "after", "fatal_on"):
            if key in data:
                data[key] = list(data[key])
        for key in ("parameters", "inputs"):
            if key in data:
                data[key] = dict(data[key])
        if isinstance(data.get("resources"), Mapping):
            data["resources"] = Resources.model_validate(dict(data["resources"]))
        if isinstance(data.get("trigger_rule"), str):
            data["trigger_rule"] = TriggerRule(data["trigger_rule"])
        if "description" not in data:
            doc = (f.__doc__ or "").strip()
            data["description"] = doc.splitlines()[0] if doc else None
        made = Task(task_id, f, **data)
        return made if over is None else made.map(over, min_success_ratio=ratio)

    if fn is not None:
        return wrap(fn)
    return wrap


def _check_options(options: Mapping[str, Any]) -> None:
    """``TypeError`` for an option ``@task`` does not take, or two of the same."""
    from stageflow.spec.suggest import did_you_mean

    for key in options:
        if key in TASK_OPTIONS:
            continue
        why = _NOT_OPTIONS.get(key)
        if why is None:
            hint = did_you_mean(key, sorted(TASK_OPTIONS))
            why = (
                f"did you mean '{hint}'?"
                if hint
                else f"it takes: {', '.join(sorted(TASK_OPTIONS))}"
            )
        raise TypeError(f"@task has no option '{key}'; {why}")
    if "retry" in options and {"retries", "retry_delay", "backoff"} & set(options):
        raise TypeError(
            "@task: give retries=/retry_delay=/backoff= or retry=RetryPolicy(...), not both"
        )
    if "timeout" in options and "timeout_seconds" in options:
        raise TypeError("@task: give timeout= or timeout_seconds=, not both (they are one option)")
