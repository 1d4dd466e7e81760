"""The ``python`` operator: call a function, wiring its parameters by name.

Binding, for each parameter of the function, first match wins:

1. a key of the task's ``inputs`` (``{"x": "t0"}``): that upstream task's output;
2. named like a data-upstream task (``-`` and ``.`` read as ``_``), or like the last
   part of a grouped one (``evaluate`` for ``train.2.evaluate``): its output;
3. a key of the task's ``parameters``;
4. ``context`` (or annotated ``TaskContext``): the task context;
5. a run parameter of that name;
6. the parameter's default.

``*args`` receives the outputs of upstream tasks not bound otherwise, in
``upstream`` order; ``**kwargs`` receives the task parameters (and ``inputs``)
not bound by name. A required parameter nothing provides is a validation error
before the run, with a did-you-mean and the ``inputs`` that would bind it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

from stageflow.errors import Problem
from stageflow.operators.base import Operator, TaskContext
from stageflow.spec.suggest import did_you_mean

__all__ = ["PythonOperator", "binding_problems", "resolve_callable"]


class PythonParams(BaseModel):
    """Keyword arguments for the function (any names)."""

    model_config = ConfigDict(extra="allow")


class PythonOperator(Operator):
    """Calls ``fn`` with upstream outputs, task parameters and run parameters;
    ``bindings``: the task's ``inputs`` (parameter -> upstream task id)."""

    name = "python"
    Params = PythonParams

    def __init__(self, fn: Callable[..., Any], bindings: Mapping[str, str] | None = None) -> None:
        self.fn = fn
        self.bindings = bindings or _NO_BINDINGS

    def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        args, kwargs = bind(
            self.fn, inputs, dict(params.model_extra or {}), ctx, bindings=self.bindings
        )
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
    *,
    bindings: Mapping[str, str] | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments to call ``fn`` with (see module doc);
    ``bindings``: the task's ``inputs``, parameter -> upstream task id."""
    bindings = bindings or _NO_BINDINGS
    shape = _shape(fn)
    if not parameters and not bindings and shape is not None and shape.only_varargs:
        return list(inputs.values()), {}  # fn(*upstream_outputs)
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
        if name in bindings and bindings[name] in inputs:  # absent: it produced no output
            value = inputs[bindings[name]]
            used_inputs.add(bindings[name])
        elif name in by_name:
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
        kwargs.update({k: inputs[u] for k, u in bindings.items() if k not in sig and u in inputs})
    return args, kwargs


def binding_problems(
    fn: Callable[..., Any],
    *,
    task: str,
    upstream: list[str],
    parameters: Mapping[str, Any],
    run_params: Mapping[str, Any],
    bindings: Mapping[str, str] | None = None,
    task_ids: Callable[[], Sequence[str]] | None = None,
    sdk: bool = False,
) -> list[Problem]:
    """Why ``fn`` cannot be called for this task: required parameters nobody provides
    (with a did-you-mean among the names that could: ``task_ids()``, upstream, task
    and run parameters), task parameters or ``bindings`` (the task's ``inputs``) the
    function does not take. ``sdk``: advise in Python (``inputs={...}``), not YAML."""
    bindings = bindings or _NO_BINDINGS
    try:
        sig = _signature(fn)
    except (TypeError, ValueError):
        return []
    shape = _shape(fn)
    if not parameters and not bindings and shape is not None and not shape.required:
        return []  # the common generated case (``*args`` functions): nothing can be missing
    names = {_upstream_name(u) for u in upstream} | {
        _upstream_name(u.rsplit(".", 1)[-1]) for u in upstream
    }
    problems = []
    where = getattr(fn, "__qualname__", fn)
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.values())
    unbound = [u for u in upstream if u not in bindings.values()]
    for name, p in sig.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
            continue
        if name in bindings or name in names or name in parameters or name == "context":
            continue
        if name in run_params or p.annotation in (TaskContext, "TaskContext"):
            continue
        candidates = [*(task_ids() if task_ids else ()), *names, *parameters, *run_params]
        hint = did_you_mean(name, list(dict.fromkeys(candidates))) if candidates else None
        source = unbound[0] if unbound else "TASK"
        fix = (
            f"bind an upstream output to it with inputs={{{name!r}: {source!r}}}, give it "
            "in parameters={...} or Pipeline(..., params={...}), or give it a default"
            if sdk
            else f"bind an upstream output to it with `inputs: {{{name}: {source}}}`, "
            "add it to `parameters:` or `params:`, or give it a default"
        )
        problems.append(
            Problem(
                f"function {where} needs parameter '{name}', but no upstream task, task "
                "parameter or run parameter has that name"
                + (f"; did you mean '{hint}'?" if hint else "")
                + f"; {fix}",
                task=task,
                field="call",
            )
        )
    if not takes_kwargs:
        taken = [n for n, p in sig.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        given = [
            *(
                (f"parameter '{k}' is not a parameter of function {where}", k, "parameters")
                for k in parameters
                if k not in sig
            ),
            *(
                (f"function {where} has no parameter '{k}'", k, "inputs")
                for k in bindings
                if k not in taken
            ),
        ]
        for text, key, kind in given:
            hint = did_you_mean(key, taken)
            problems.append(
                Problem(
                    f"{text} (it takes: {', '.join(sig) or 'nothing'})"
                    + (f"; did you mean '{hint}'?" if hint else ""),
                    task=task,
                    field=f"{kind}.{key}",
                )
            )
    return problems


def takes_anything(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` needs no argument in particular (every parameter has a default
    or is ``*args``/``**kwargs``): any task without parameters can call it."""
    shape = _shape(fn)
    return shape is None or not shape.required  # no signature: nothing to check either


_NO_BINDINGS: Mapping[str, str] = {}

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
