"""The operator registry: name -> ``Operator`` class, with checks of a task's use.

Built-in operators are registered here; third-party packages add theirs through
the ``stageflow.operators`` entry-point group (``name = "package.module:Class"``),
loaded the first time an unknown name is looked up. A seed's other name for a
built-in (``deployment``: ``spec.aliases.OPERATOR_ALIASES``) finds the same class.
``task_problems`` reports,
without running anything, an unknown operator (with a did-you-mean), parameters
its model rejects (in a list of steps, by the step's position, kind and own
parameters, with a did-you-mean), what the operator's own ``spec_problems`` finds (a
hyperparameter the estimator lacks, a notification field that cannot be
filled), and for Python tasks a ``call:`` target that cannot be imported or a
function whose parameters nothing provides.
"""

from __future__ import annotations

import importlib
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from stageflow.errors import Problem, UnknownOperator
from stageflow.operators.base import Operator
from stageflow.operators.bash import BashOperator
from stageflow.operators.python import PythonOperator, binding_problems, resolve_callable
from stageflow.spec.aliases import OPERATOR_ALIASES
from stageflow.spec.messages import readable_error, shown_value
from stageflow.spec.models import Pipeline, Task, input_source
from stageflow.spec.suggest import did_you_mean

__all__ = [
    "CODE_OPERATORS",
    "get",
    "imports_code",
    "instantiate",
    "metric_reference_problems",
    "names",
    "register",
    "task_problems",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "stageflow.operators"

_REGISTRY: dict[str, type[Operator]] = {
    "python": PythonOperator,
    "bash": BashOperator,
}
# The ML operators: imported on first use, so `import stageflow` and a run of a
# small pipeline never load pandas, scikit-learn or MLflow (operators/ml/).
_LAZY: dict[str, str] = {
    "data_ingestion": "stageflow.operators.ml.ingestion",
    "data_validation": "stageflow.operators.ml.validation",
    "data_processing": "stageflow.operators.ml.processing",
    "feature_engineering": "stageflow.operators.ml.features",
    "search_space": "stageflow.operators.ml.search",
    "model_training": "stageflow.operators.ml.training",
    "ensemble": "stageflow.operators.ml.ensemble",
    "model_evaluation": "stageflow.operators.ml.evaluation",
    "model_selection": "stageflow.operators.ml.registry_ops",
    "model_registration": "stageflow.operators.ml.registry_ops",
    "model_deployment": "stageflow.operators.ml.registry_ops",
    "batch_inference": "stageflow.operators.ml.registry_ops",
    "custom_script": "stageflow.operators.ml.scripts",
    "notification": "stageflow.operators.ml.notification",
    "sensor": "stageflow.operators.sensor",
}
_entry_points_loaded = False


def register(cls: type[Operator]) -> type[Operator]:
    """Register an operator class under its ``name`` (usable as a decorator)."""
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Every known operator name (built-in, lazy and from entry points), sorted."""
    _load_entry_points()
    return sorted({*_REGISTRY, *_LAZY})


def get(name: str, *, task: str | None = None) -> type[Operator]:
    """The operator class for ``name`` (or a seed's alias of it); raise
    ``UnknownOperator`` with a did-you-mean."""
    name = OPERATOR_ALIASES.get(name, name)
    cls = _REGISTRY.get(name)
    if cls is not None:
        return cls
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        cls = getattr(module, "OPERATOR", None) or _REGISTRY.get(name)
        if cls is not None:
            _REGISTRY[name] = cls
            return cls
    _load_entry_points()
    if name in _REGISTRY:
        return _REGISTRY[name]
    hint = did_you_mean(name, [*names(), *OPERATOR_ALIASES])
    fix = f"did you mean '{hint}'?" if hint else f"known operators: {', '.join(names())}"
    raise UnknownOperator(f"unknown operator '{name}'; {fix}", task=task, field="operator")


_NO_PARAMETERS = PythonOperator.Params()  # read only: shared by every call without any

#: Built-in operators that run whatever their parameters say.
CODE_OPERATORS = frozenset({"bash", "custom_script", "python"})


def imports_code(task: Task) -> bool:
    """Whether ``task`` runs code its spec names rather than a built-in step: a
    function or ``call:`` target, a ``CODE_OPERATORS`` operator, a fallback call, or
    a parameter that imports a module: a ``call`` anywhere in its parameters (a
    feature step's function) or an ``algorithm`` given as a class path outside the
    built-in ones (importing a module runs its top-level code)."""
    if task.fn is not None or task.call is not None or task.operator_name in CODE_OPERATORS:
        return True
    if task.fallback is not None and task.fallback.call is not None:
        return True
    return _names_code(task.parameters)


def _names_code(value: object) -> bool:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "call" and isinstance(item, str):
                return True
            if key == "algorithm" and isinstance(item, str) and _custom_algorithm(item):
                return True
            if _names_code(item):
                return True
    elif isinstance(value, list):
        return any(_names_code(item) for item in value)
    return False


def _custom_algorithm(name: str) -> bool:
    if "." not in name and ":" not in name:
        return False  # a short name: the built-in table's
    from stageflow.operators.ml.training import ALGORITHMS

    return name not in {path for names in ALGORITHMS.values() for path in names.values()}


def instantiate(task: Task, parameters: Mapping[str, Any]) -> tuple[Operator, BaseModel]:
    """An operator instance and its validated parameters for one attempt.

    Raises ``UnknownOperator``, pydantic's ``ValidationError`` or an import error;
    the runtime turns those into a failed attempt.
    """
    if task.fn is not None or task.call is not None:
        fn = task.fn if task.fn is not None else resolve_callable(task.call or "")
        op: Operator = PythonOperator(fn, task.inputs)
        if not parameters:  # the common case: nothing to validate
            return op, _NO_PARAMETERS
        return op, PythonOperator.Params.model_validate(dict(parameters))
    cls = get(task.operator_name, task=task.id)
    return cls(), cls.Params.model_validate(dict(parameters))


def task_problems(
    task: Task,
    parameters: Mapping[str, Any],
    run_params: Mapping[str, Any],
    *,
    pipeline: Pipeline | None = None,
    import_calls: bool = True,
) -> list[Problem]:
    """What is wrong with how ``task`` uses its operator (empty when nothing is);
    the operator's own checks (``Operator.spec_problems``) see ``pipeline``.
    ``import_calls``: import a ``call:`` target to check its signature; without, its
    form was checked (``spec.validate``) and nothing more is."""
    # Without imports (the API): a call target, or a parameter naming a module, is
    # checked where it runs (a worker), never imported here.
    imports = task.fn is not None or task.call is not None or _names_code(task.parameters)
    if not import_calls and imports and task.fn is None and task.call is None:
        try:
            cls = get(task.operator_name, task=task.id)
            cls.Params.model_validate(dict(parameters))
        except UnknownOperator as exc:
            return [Problem(str(exc), task=task.id, field="operator")]
        except ValidationError as exc:
            return [_param_problem(task.id, task.operator_name, e, cls) for e in exc.errors()]
        return []
    if not import_calls and imports:
        return []
    if task.fn is not None or task.call is not None:
        fn: Callable[..., Any] | None = task.fn
        if fn is None:
            try:
                fn = resolve_callable(task.call or "")
            except Exception as exc:  # any import failure is the user's to fix
                return [
                    Problem(
                        f"cannot import call target '{task.call}': {type(exc).__name__}: {exc}",
                        task=task.id,
                        field="call",
                    )
                ]
        return binding_problems(
            fn,
            task=task.id,
            upstream=task.upstream,
            parameters=parameters,
            run_params=run_params,
            bindings=task.inputs,
            task_ids=lambda: _suggestible_ids(pipeline),
            sdk=task.fn is not None,
        )
    try:
        cls = get(task.operator_name, task=task.id)
    except UnknownOperator as exc:
        return [Problem(str(exc), task=task.id, field="operator")]
    try:
        params = cls.Params.model_validate(dict(parameters))
    except ValidationError as exc:
        return [_param_problem(task.id, task.operator_name, err, cls) for err in exc.errors()]
    return cls.spec_problems(params, task, pipeline, run_params)


def metric_reference_problems(task: Task, pipeline: Pipeline) -> list[Problem]:
    """``${UP.metrics.NAME}`` in ``task``'s condition, or ``UP.metrics.NAME`` in its
    ``inputs``, naming a metric that UP's operator never records (when the operator
    says what it records: ``Operator.metric_names``)."""
    named: list[tuple[str, str, tuple[str, ...], str]] = []  # (said, task, path, field)
    if task.when and "metrics" in task.when:
        from stageflow.spec.expr import ExpressionError, parse_expression

        try:
            expression = parse_expression(task.when, task.all_upstream)
        except ExpressionError:
            expression = None  # reported by spec validation
        for ref in expression.references if expression is not None else ():
            if ref.kind == "task" and len(ref.path) >= 2 and ref.path[0] == "metrics":
                said = f"condition refers to ${{{ref.text}}}"
                named.append((said, ref.name, ref.path[1:], "when"))
    for param, source in task.inputs.items():
        up_id, metric = input_source(source)
        if metric:
            said = f"inputs binds '{param}' to {source}"
            named.append((said, up_id, tuple(metric.split(".")), f"inputs.{param}"))
    if not named:
        return []
    by_id = {t.id: t for t in pipeline.tasks}
    problems = []
    for said, up_id, path, field in named:
        up = by_id.get(up_id)
        if up is None or up.fn is not None or up.call is not None:
            continue
        try:
            names = get(up.operator_name, task=up.id).metric_names
        except UnknownOperator:
            continue  # reported for that task
        name = ".".join(path)  # a metric's name may hold dots: failing.not_null.age
        heads = {".".join(path[:end]) for end in range(1, len(path) + 1)}
        if names is None or any(
            n in heads or (n.endswith(".") and name.startswith(n)) for n in names
        ):
            continue
        hint = did_you_mean(name, [n for n in names if not n.endswith(".")])
        problems.append(
            Problem(
                f"{said}, but operator '{up.operator_name}' of task '{up.id}' records no "
                f"metric '{name}'"
                + (f"; did you mean '{hint}'?" if hint else f"; it records: {', '.join(names)}"),
                task=task.id,
                field=field,
            )
        )
    return problems


#: Task ids are offered as a did-you-mean for a function's parameter in pipelines up to
#: this size (a generated graph's ids are not names a parameter is misspelt from).
_SUGGEST_IDS_UP_TO = 1000


def _suggestible_ids(pipeline: Pipeline | None) -> list[str]:
    if pipeline is None or len(pipeline.tasks) > _SUGGEST_IDS_UP_TO:
        return []
    return [t.id.replace("-", "_").replace(".", "_") for t in pipeline.tasks]


def _param_problem(task: str, operator: str, err: Any, cls: type[Operator]) -> Problem:
    loc = ".".join(str(p) for p in err["loc"])
    field = f"parameters.{loc}" if loc else "parameters"
    step = _step_message(err, _step_kinds(cls.Params, err["loc"]))
    if step is not None:
        msg = f"operator '{operator}': {step}"
    elif err["type"] == "missing":
        msg = f"operator '{operator}' needs parameter '{loc}'; add it under `parameters:`"
    elif err["type"] == "extra_forbidden":
        known = list(cls.Params.model_fields)
        hint = did_you_mean(str(err["loc"][-1]), known)
        msg = f"operator '{operator}' has no parameter '{loc}'" + (
            f"; did you mean '{hint}'?" if hint else f"; it takes: {', '.join(known)}"
        )
    else:
        msg = f"operator '{operator}': {readable_error(err)}"
    return Problem(msg, task=task, field=field)


# -- a list of steps (feature_engineering, data_processing) ---------------------------
#
# A parameter typed ``list[Annotated[A | B | ..., Field(discriminator="op")]]`` is a
# list of steps: pydantic's errors about one of them are worded for the step, by its
# position (from 1) and its kind, with the step's own parameters.


def _step_kinds(params: type[BaseModel], loc: Sequence[Any]) -> dict[str, type[BaseModel]]:
    """The model of each kind of step (by its ``op``) of the list of steps that ``loc``
    points into (``steps``, index, ...); empty when ``loc`` points into none."""
    if len(loc) < 2 or not isinstance(loc[0], str) or not isinstance(loc[1], int):
        return {}
    field = params.model_fields.get(loc[0])
    if field is None or typing.get_origin(field.annotation) is not list:
        return {}
    (item,) = typing.get_args(field.annotation) or (None,)
    if typing.get_origin(item) is not typing.Annotated:
        return {}
    union, *metadata = typing.get_args(item)
    tags = [getattr(m, "discriminator", None) for m in metadata]
    tag = next((t for t in tags if isinstance(t, str)), None)
    kinds: dict[str, type[BaseModel]] = {}
    for member in typing.get_args(union) if tag is not None else ():
        member_field = getattr(member, "model_fields", {}).get(tag)
        for value in typing.get_args(member_field.annotation) if member_field else ():
            kinds[str(value)] = member
    return kinds


def _step_message(err: Any, kinds: Mapping[str, type[BaseModel]]) -> str | None:
    """The message of ``err`` about one step of a list of ``kinds`` of step, or ``None``
    for an error that the operator's generic wording fits."""
    if not kinds:
        return None
    loc, kind = err["loc"], err["type"]
    n = loc[1] + 1
    names = ", ".join(kinds)
    if len(loc) == 2:
        given = err.get("input")
        if kind == "union_tag_invalid":
            return _unknown_step(str(err.get("ctx", {}).get("tag", "")), kinds)
        if not isinstance(given, Mapping):
            return (
                f"step {n} names no kind of step: write `- NAME: {{...}}` or "
                f"`- {{op: NAME, ...}}` with NAME one of {names}; got {shown_value(given)}"
            )
        if kind != "union_tag_not_found":
            return None
        named = [str(k) for k in given if k in kinds]
        if len(named) > 1:
            return (
                f"step {n} names {len(named)} kinds of step ({', '.join(named)}); give each "
                f"its own item (`- {named[0]}: {{...}}`, then `- {named[1]}: {{...}}`)"
            )
        if len(named) == 1:
            return (
                f"step {n} ({named[0]}) takes its parameters as a mapping, as "
                f"`- {named[0]}: {{...}}`; got {shown_value(given[named[0]])}"
            )
        fits = [k for k, m in kinds.items() if set(given) <= {*_step_parameters(m, aliases=True)}]
        if len(given) == 1 and not fits:
            return _unknown_step(str(next(iter(given))), kinds)
        return (
            f"step {n} names no kind of step: write `- NAME: {{...}}` or "
            f"`- {{op: NAME, ...}}` with NAME one of {names}"
        ) + (f" (its parameters fit: {', '.join(fits)})" if fits else "")
    if len(loc) < 4 or not isinstance(loc[2], str) or loc[2] not in kinds:
        return None
    step, name = loc[2], ".".join(str(p) for p in loc[3:])
    if kind == "extra_forbidden":
        takes = _step_parameters(kinds[step])
        hint = did_you_mean(name, _step_parameters(kinds[step], aliases=True))
        return f"step {n} ({step}) has no parameter '{name}'; " + (
            f"did you mean '{hint}'?" if hint else f"it takes: {', '.join(takes)}"
        )
    if kind == "missing":
        return f"step {n} ({step}) needs parameter '{name}'; add it: `- {step}: {{{name}: ...}}`"
    return None


def _unknown_step(name: str, kinds: Mapping[str, type[BaseModel]]) -> str:
    hint = did_you_mean(name, list(kinds))
    guess = f"did you mean '{hint}'? " if hint else ""
    return f"unknown step '{name}'; {guess}the steps are {', '.join(kinds)}"


def _step_parameters(model: type[BaseModel], *, aliases: bool = False) -> list[str]:
    """The parameters a kind of step takes: its own first, then those every step has
    (``columns``); never the ``op`` that names the kind. With ``aliases``, their
    other names too."""
    shared = {name for base in model.__mro__[1:] for name in getattr(base, "model_fields", {})}
    fields = {k: f for k, f in model.model_fields.items() if k != "op"}
    names = [k for k in fields if k not in shared] + [k for k in fields if k in shared]
    if aliases:
        for f in fields.values():
            choices = getattr(f.validation_alias, "choices", ())
            names += [c for c in choices if isinstance(c, str) and c not in names]
    return names


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not break stageflow
            logger.warning("operator plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        if isinstance(cls, type) and issubclass(cls, Operator):
            _REGISTRY.setdefault(ep.name, cls)
        else:
            logger.warning("operator plugin %s (%s) is not an Operator subclass", ep.name, ep.value)
