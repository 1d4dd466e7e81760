"""What the ML operators share: picking inputs, writing files, importing extras.

Operators hand each other plain values: a pandas ``DataFrame``, or a ``dict``
whose ``kind`` says what it is (``features``, ``model``, ``evaluation``,
``registered_model``, ``deployment``, ``candidate``) — readable from a
``python`` step or a ``custom_script`` without importing stageflow. A dict
with an ``estimator`` (``model``, ``evaluation``) carries a fitted
scikit-learn ``Pipeline`` that applies the feature transformation and the
model in one call.

Files an operator makes (reports, pictures, models, predictions) go to
``<artifacts>/runs/<run_id>/<task_id>/NAME`` — a local folder or any fsspec
URL — written whole by ``TaskContext.write_file`` (the runtime's artifact store)
and recorded as the task's writes (``operators.metadata``).
"""

from __future__ import annotations

import importlib
from abc import abstractmethod
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from stageflow.errors import MissingExtra
from stageflow.operators.base import Operator, TaskContext, TaskFailed
from stageflow.operators.metadata import record, sha256_bytes

__all__ = [
    "MLOperator",
    "ensure_columns",
    "is_candidate",
    "is_features",
    "is_frame",
    "is_model",
    "need",
    "pick",
    "put_file",
]

EXTRAS = {
    "pandas": "ml",
    "sklearn": "ml",
    "numpy": "ml",
    "pyarrow": "ml",
    "joblib": "ml",
    "scipy": "ml",
    "matplotlib": "ml",
    "mlflow": "mlflow",
    "PIL": "draw",
}


class MLOperator(Operator):
    """An operator whose missing optional dependency fails the task with one clear line."""

    def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        try:
            return self.execute(params, inputs, ctx)
        except MissingExtra as exc:  # installing a package is not something a retry does
            raise TaskFailed(f"{self.name}: {exc}", retryable=False) from None

    @abstractmethod
    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        """Do the work (``run`` with ``MissingExtra`` turned into a ``TaskFailed`` that
        is not retried)."""


def need(module: str, what: str = "this operator") -> ModuleType:
    """Import ``module`` or raise ``MissingExtra`` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        fix = f"pip install 'stageflow[{extra}]'" if extra else f"pip install {top}"
        raise MissingExtra(f"{what} needs {top}, which is not installed: {fix}") from exc


def is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def is_features(value: Any) -> bool:
    return isinstance(value, dict) and value.get("kind") == "features"


def is_candidate(value: Any) -> bool:
    """A ``search_space`` candidate: ``{"kind": "candidate", "index", "hyperparameters"}``."""
    return (
        isinstance(value, dict)
        and value.get("kind") == "candidate"
        and isinstance(value.get("hyperparameters"), dict)
    )


def is_model(value: Any) -> bool:
    return isinstance(value, dict) and "estimator" in value


def pick(
    inputs: Mapping[str, Any],
    name: str | None,
    accept: Callable[[Any], bool],
    what: str,
    op: str,
) -> tuple[str, Any]:
    """The upstream output named ``name``, or the only one ``accept`` takes.

    Raises ``TaskFailed`` when ``name`` is not an upstream or holds something
    else, when no upstream output fits, or when several do and none is named.
    """
    inputs = {k: last_round(v, accept) for k, v in inputs.items()}
    if name is not None:
        if name not in inputs:
            known = ", ".join(inputs) or "none"
            raise TaskFailed(
                f"{op}: input '{name}' is not a data upstream of this task "
                f"(upstream: {known}); list it under `upstream:`"
            )
        value = inputs[name]
        if not accept(value):
            raise TaskFailed(f"{op}: input '{name}' holds {_kind(value)}, not {what}")
        return name, value
    found = [(k, v) for k, v in inputs.items() if accept(v)]
    if len(found) == 1:
        return found[0]
    if not found:
        seen = ", ".join(f"{k} ({_kind(v)})" for k, v in inputs.items()) or "no upstream task"
        raise TaskFailed(f"{op}: needs {what} from an upstream task; got {seen}")
    names = ", ".join(k for k, _ in found)
    raise TaskFailed(f"{op}: several upstream tasks give {what} ({names}); name one with `input:`")


def round_outputs(value: Any) -> dict[str, Any] | None:
    """A repeated group's result (``{"iteration": k, "outputs": {exit: output}}``,
    ``spec.templates.last_iteration``): its last round's exit outputs; else ``None``."""
    if (
        isinstance(value, dict)
        and set(value) == {"iteration", "outputs"}
        and isinstance(value["iteration"], int)
        and isinstance(value["outputs"], dict)
    ):
        return value["outputs"]
    return None


def last_round(value: Any, accept: Callable[[Any], bool]) -> Any:
    """``value``, or for a repeated group's result the last exit output ``accept`` takes:
    a loop's model or evaluation is used like a task's."""
    outputs = round_outputs(value)
    if outputs is None:
        return value
    found = [v for v in outputs.values() if accept(v)]
    return found[-1] if found else value


def ensure_columns(frame: Any, columns: list[str], op: str, role: str = "column") -> None:
    """Raise ``TaskFailed`` naming every missing column and the ones there are."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(str(c) for c in list(frame.columns)[:30])
        more = "" if len(frame.columns) <= 30 else f" and {len(frame.columns) - 30} more"
        plural = "s" if len(missing) > 1 else ""
        raise TaskFailed(
            f"{op}: missing {role}{plural} {', '.join(repr(m) for m in missing)}; "
            f"the data has: {have}{more}"
        )


def put_file(ctx: TaskContext, name: str, data: bytes, kind: str) -> str:
    """Store ``data`` as this task's file ``name`` (``TaskContext.write_file``); record
    it as a write; return its URI."""
    uri = ctx.write_file(name, data)
    record(ctx, writes=[{"uri": uri, "sha256": sha256_bytes(data), "kind": kind}])
    return uri


def _kind(value: Any) -> str:
    if is_frame(value):
        return "a DataFrame"
    if isinstance(value, dict) and isinstance(value.get("kind"), str):
        return f"a {value['kind']} record"
    return f"a {type(value).__name__}"
