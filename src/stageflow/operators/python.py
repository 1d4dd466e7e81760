"""The ``python`` operator: call a function, wiring its parameters by name.

Binding, for each parameter of the function, first match wins:

1. named like a data-upstream task (``-`` and ``.`` read as ``_``), or like the last
   part of a grouped one (``evaluate`` for ``train.2.evaluate``): its output;
2. a key of the task's ``parameters``;
3. ``context`` (or annotated ``TaskContext``): the task context;
4. a run parameter of that name;
5. the parameter's default.

``*args`` receives the outputs of upstream tasks not bound by name, in
``upstream`` order; ``**kwargs`` receives the task parameters not bound by name.
A required parameter nothing provides is a validation error before the run.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

from stageflow.errors import Problem
from stageflow.operators.base import Operator, TaskContext

__all__ = ["PythonOperator", "binding_problems", "resolve_callable"]


class PythonParams(BaseModel):
    """Keyword arguments for the function (any names)."""

    model_config = ConfigDict(extra="allow")


class PythonOperator(Operator):
    """Calls ``fn`` with upstream outputs, task parameters and run parameters."""

    name = "python"
    Params = PythonParams

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        args, kwargs = bind(self.fn, inputs, dict(params.model_extra or {}), ctx)
        return self.fn(*args, **kwargs)


def resolve_callable(ref: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (dotted attributes allowed after ``:``).

    Raises ``ImportError``/``AttributeError``/``TypeError`` with a readable message.
    """
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{ref} is a {type(obj).__name__}, not a function")
    # A @task-decorated function is a Task: call what it wraps.
    fn = getattr(obj, "fn", None)
    return fn if callable(fn) and not isinstance(obj, type) else obj  # type: ignore[no-any-return]


def _upstream_name(task_id: str) -> str:
    return task_id.replace("-", "_").replace(".", "_")


def bind(
    fn: Callable[..., Any],
    inputs: Mapping[str, Any],
    parameters: Mapping[str, Any],
    ctx: TaskContext,
) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments to call ``fn`` with (see module doc)."""
    shape = _shape(fn)
    if not parameters and shape is not None and shape.only_varargs:  # fn(*upstream_outputs)
        return list(inputs.values()), {}
    sig = _signature(fn)
    by_name = {_upstream_name(k): k for k in inputs}
    for k in inputs:  # a grouped upstream ``group.2.evaluate`` also answers to ``evaluate``
        by_name.setdefault(_upstream_name(k.rsplit(".", 1)[-1]), k)
    used_inputs: set[str] = set()
    used_params: set[str] = set()
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    var_positional = var_keyword = False
    # With ``*args`` the parameters before it must go positionally, or the
    # unbound upstream outputs would land in them ("multiple values for ...").
    has_varargs = any(p.kind is p.VAR_POSITIONAL for p in sig.values())
    for name, p in sig.items():
        positional = p.kind is p.POSITIONAL_ONLY or (
            has_varargs and p.kind is p.POSITIONAL_OR_KEYWORD
        )
        if p.kind is p.VAR_POSITIONAL:
            var_positional = True
            continue
        if p.kind is p.VAR_KEYWORD:
            var_keyword = True
            continue
        if name in by_name:
            value = inputs[by_name[name]]
            used_inputs.add(by_name[name])
        elif name in parameters:
            value = parameters[name]
            used_params.add(name)
        elif name == "context" or p.annotation in (TaskContext, "TaskContext"):
            value = ctx
        elif name in ctx.params:
            value = ctx.params[name]
        elif p.default is not p.empty:
            if not positional:
                continue
            value = p.default  # keeps the later positional arguments in their slots
        else:
            raise TypeError(f"nothing provides parameter '{name}'")
        if positional:
            args.append(value)
        else:
            kwargs[name] = value
    if var_positional:
        args.extend(v for k, v in inputs.items() if k not in used_inputs)
    if var_keyword:
        kwargs.update({k: v for k, v in parameters.items() if k not in used_params})
    return args, kwargs


def binding_problems(
    fn: Callable[..., Any],
    *,
    task: str,
    upstream: list[str],
    parameters: Mapping[str, Any],
    run_params: Mapping[str, Any],
) -> list[Problem]:
    """Why ``fn`` cannot be called for this task (required parameters nobody provides,
    task parameters the function does not take)."""
    try:
        sig = _signature(fn)
    except (TypeError, ValueError):
        return []
    shape = _shape(fn)
    if not parameters and shape is not None and not shape.required:
        return []  # the common generated case (``*args`` functions): nothing can be missing
    names = {_upstream_name(u) for u in upstream} | {
        _upstream_name(u.rsplit(".", 1)[-1]) for u in upstream
    }
    problems = []
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.values())
    for name, p in sig.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
            continue
        if name in names or name in parameters or name == "context" or name in run_params:
            continue
        if p.annotation in (TaskContext, "TaskContext"):
            continue
        problems.append(
            Problem(
                f"function {getattr(fn, '__qualname__', fn)} needs parameter '{name}', but no "
                "upstream task, task parameter or run parameter has that name; add it to "
                "`parameters:` or `params:`, or give it a default",
                task=task,
                field="call",
            )
        )
    if not takes_kwargs:
        for key in parameters:
            if key not in sig:
                problems.append(
                    Problem(
                        f"parameter '{key}' is not a parameter of function "
                        f"{getattr(fn, '__qualname__', fn)} "
                        f"(it takes: {', '.join(sig) or 'nothing'})",
                        task=task,
                        field=f"parameters.{key}",
                    )
                )
    return problems


def takes_anything(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` needs no argument in particular (every parameter has a default
    or is ``*args``/``**kwargs``): any task without parameters can call it."""
    shape = _shape(fn)
    return shape is None or not shape.required  # no signature: nothing to check either


_SIGNATURES: weakref.WeakKeyDictionary[Any, Mapping[str, inspect.Parameter]] = (
    weakref.WeakKeyDictionary()
)


class _Shape(NamedTuple):
    """What binding needs to know of a function's parameters, beyond their names."""

    required: bool  # a parameter must be provided (no default, not *args/**kwargs)
    only_varargs: bool  # its one parameter is ``*args``


_SHAPES: weakref.WeakKeyDictionary[Any, _Shape] = weakref.WeakKeyDictionary()


def _shape(fn: Callable[..., Any]) -> _Shape | None:
    """``fn``'s ``_Shape`` (cached per function); ``None`` without a signature."""
    try:
        return _SHAPES[fn]
    except (KeyError, TypeError):
        pass
    try:
        params = list(_signature(fn).values())
    except (TypeError, ValueError):
        return None
    shape = _Shape(
        required=any(
            p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params
        ),
        only_varargs=len(params) == 1 and params[0].kind is params[0].VAR_POSITIONAL,
    )
    with contextlib.suppress(TypeError):  # not weak-referenceable: no cache
        _SHAPES[fn] = shape
    return shape


def _signature(fn: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """``inspect.signature`` is slow; generated graphs share one function 100,000 times."""
    try:
        return _SIGNATURES[fn]
    except (KeyError, TypeError):
        sig = inspect.signature(fn).parameters
    with contextlib.suppress(TypeError):  # not weak-referenceable (some builtins): no cache
        _SIGNATURES[fn] = sig
    return sig
