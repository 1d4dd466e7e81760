"""The Python SDK: ``@task`` turns a function into a ``Task``.

``@task`` (bare) or ``@task(retries=2, timeout=60, ...)``. The task id is the
function name unless ``id=`` is given. Upstream tasks are found by parameter
name when the task is put in a ``Pipeline``; ``after=[...]`` orders without data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, overload

from stageflow.spec.models import Resources, RetryPolicy, Task, TriggerRule

__all__ = ["task"]


@overload
def task(fn: Callable[..., Any], /) -> Task: ...


@overload
def task(
    fn: None = None,
    /,
    *,
    id: str | None = None,
    retries: int | None = None,
    retry_delay: float | None = None,
    backoff: str | None = None,
    timeout: float | None = None,
    resources: Mapping[str, float] | None = None,
    priority: int | str | None = None,
    trigger_rule: str | None = None,
    after: list[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    when: str | None = None,
    branch: bool = False,
) -> Callable[[Callable[..., Any]], Task]: ...


def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    id: str | None = None,
    retries: int | None = None,
    retry_delay: float | None = None,
    backoff: str | None = None,
    timeout: float | None = None,
    resources: Mapping[str, float] | None = None,
    priority: int | str | None = None,
    trigger_rule: str | None = None,
    after: list[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    when: str | None = None,
    branch: bool = False,
) -> Task | Callable[[Callable[..., Any]], Task]:
    """Wrap a function as a ``Task``; options mirror the YAML fields.

    Raises pydantic's ``ValidationError`` for a bad option value (a programming
    mistake in the caller's module, reported at import time).
    """

    def wrap(f: Callable[..., Any]) -> Task:
        data: dict[str, Any] = {}
        if retries is not None or retry_delay is not None or backoff is not None:
            data["retry"] = RetryPolicy(
                max_retries=retries or 0,
                delay_seconds=retry_delay or 0.0,
                backoff=backoff or "fixed",  # type: ignore[arg-type]  # validated by pydantic
            )
        if timeout is not None:
            data["timeout_seconds"] = timeout
        if resources is not None:
            data["resources"] = Resources.model_validate(dict(resources))
        if priority is not None:
            data["priority"] = priority
        if trigger_rule is not None:
            data["trigger_rule"] = TriggerRule(trigger_rule)
        if after:
            data["after"] = list(after)
        if parameters:
            data["parameters"] = dict(parameters)
        if when is not None:
            data["when"] = when
        if branch:
            data["branch"] = True
        data["description"] = (f.__doc__ or "").strip().splitlines()[0] if f.__doc__ else None
        return Task(id or f.__name__, f, **data)

    if fn is not None:
        return wrap(fn)
    return wrap
