"""The ``feature_engineering`` operator: a deterministic split and declarative transformations.

The data is split first (``train_test_split`` with ``seed``; stratified on the
target for classification), so every transformation is fit on the training
rows only. ``steps`` run in order; each names the columns it works on
(default: every numeric column, or every non-numeric one for encoders):

=================  ==========================================================
``impute``         ``strategy`` mean | median | most_frequent | constant (``fill_value``)
``scale``          ``method`` standard | minmax | robust
``one_hot``        one column per category (unknown categories ignored at serving)
``ordinal``        categories as integers (``categories: {col: [a, b, c]}``)
``log``            ``log1p`` (values must be > -1)
``binning``        ``bins``, ``strategy`` quantile | uniform | kmeans
``polynomial``     ``degree``, ``interaction_only``
``select_k_best``  keep the ``k`` columns most related to the target
``drop``           remove ``columns``
``call``           ``module:function`` taking and returning a DataFrame (``kwargs``)
=================  ==========================================================

The steps form one fitted scikit-learn ``Pipeline`` (each step a
``ColumnTransformer`` with pandas output, so column names survive), saved with
joblib as ``transformer.joblib``. ``model_training`` puts a fresh copy of it
in front of the model, so the registered model applies exactly the same
transformation to raw rows when it serves.

Output: ``{"kind": "features", "train", "test", "holdout" (DataFrames of raw
columns plus the target), "target", "task_type", "transformer",
"feature_names_in", "feature_names_out", "seed", "class_names"}``
(``class_names``: label -> name when the data names its classes, as
``data_ingestion`` does for scikit-learn's datasets; else ``None``).

Without ``task_type``, it is guessed from the target: clustering without one;
regression for fractional values, or for whole numbers with more than 20
distinct values or distinct in more than half the rows; else classification.
When a step fails on a guessed type, the message says which ``task_type`` to set.

Example::

    - id: features
      operator: feature_engineering
      upstream: [validate]
      parameters:
        target: is_fraud
        test_size: 0.2
        holdout_size: 0.1
        seed: 42
        steps:
          - impute: {strategy: median}
          - one_hot: {columns: [merchant_category]}
          - scale: {method: robust}
          - select_k_best: {k: 20}
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.operators.metadata import record
from stageflow.operators.ml._common import (
    MLOperator,
    ensure_columns,
    is_frame,
    need,
    pick,
    put_file,
)

__all__ = ["FeatureEngineering", "FeatureParams", "infer_task_type"]

_STEP = ConfigDict(extra="forbid")
TaskType = Literal["classification", "regression", "clustering"]
# A numeric target with more distinct values than this is guessed to be a quantity.
MAX_GUESSED_CLASSES = 20


class _Step(BaseModel):
    model_config = _STEP

    columns: list[str] | None = Field(default=None, description="default: by the step's kind")


class Impute(_Step):
    op: Literal["impute"] = "impute"
    strategy: Literal["mean", "median", "most_frequent", "constant"] = "median"
    fill_value: Any = None


class Scale(_Step):
    op: Literal["scale"] = "scale"
    method: Literal["standard", "minmax", "robust"] = "standard"


class OneHot(_Step):
    op: Literal["one_hot"] = "one_hot"
    max_categories: int | None = Field(default=None, ge=2)
    drop: Literal["first", "if_binary"] | None = None


class Ordinal(_Step):
    op: Literal["ordinal"] = "ordinal"
    categories: dict[str, list[Any]] | None = None


class Log(_Step):
    op: Literal["log"] = "log"


class Binning(_Step):
    op: Literal["binning"] = "binning"
    bins: int = Field(default=5, ge=2)
    strategy: Literal["quantile", "uniform", "kmeans"] = "quantile"


class Polynomial(_Step):
    op: Literal["polynomial"] = "polynomial"
    degree: int = Field(default=2, ge=1, le=5)
    interaction_only: bool = False


class SelectKBest(_Step):
    op: Literal["select_k_best"] = "select_k_best"
    k: int = Field(ge=1)
    score: Literal["f_classif", "f_regression", "mutual_info", "chi2"] | None = None


class Drop(_Step):
    op: Literal["drop"] = "drop"
    columns: list[str] | None = Field(default=None, min_length=1)


class Call(_Step):
    op: Literal["call"] = "call"
    call: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


Step = Annotated[
    Impute | Scale | OneHot | Ordinal | Log | Binning | Polynomial | SelectKBest | Drop | Call,
    Field(discriminator="op"),
]
STEP_NAMES = (
    "impute",
    "scale",
    "one_hot",
    "ordinal",
    "log",
    "binning",
    "polynomial",
    "select_k_best",
    "drop",
    "call",
)


class FeatureParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str | None = Field(
        default=None, description="label column (default 'target' when present; none: clustering)"
    )
    task_type: TaskType | None = Field(
        default=None, description="default: inferred from the target column"
    )
    steps: list[Step] = Field(
        default_factory=list, description=f"transformations in order: {', '.join(STEP_NAMES)}"
    )
    test_size: float = Field(default=0.2, gt=0, lt=1, description="share of rows for testing")
    holdout_size: float = Field(
        default=0.0, ge=0, lt=1, description="share of rows kept aside (e.g. batch scoring)"
    )
    stratify: bool | None = Field(default=None, description="default: yes for classification")
    seed: int = Field(default=42, description="seed of the split")
    input: str | None = Field(default=None, description="the upstream task whose data to use")

    @field_validator("steps", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        """``- scale: {method: robust}`` is ``- {op: scale, method: robust}``; ``- scale``
        and ``- scale:`` are ``- {op: scale}``. An item naming no kind of step is left
        as it is: the registry words its problem (``registry._step_message``)."""
        if not isinstance(value, list):
            return value
        out = []
        for item in value:
            if isinstance(item, str):
                out.append({"op": item})
                continue
            names = [k for k in item if k in STEP_NAMES] if isinstance(item, dict) else []
            if isinstance(item, dict) and "op" not in item and len(names) == 1:
                name = names[0]
                body = item[name]
                rest = {k: v for k, v in item.items() if k != name}
                if name == "call" and isinstance(body, str):
                    body = {"call": body}
                elif name == "drop" and isinstance(body, list):
                    body = {"columns": body}
                elif body is None:
                    body = {}
                if isinstance(body, dict):
                    item = {"op": name, **body, **rest}
            out.append(item)
        return out


class FeatureEngineering(MLOperator):
    """Split the data deterministically and fit declarative feature transformations."""

    name = "feature_engineering"
    Params = FeatureParams

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, FeatureParams)
        op = self.name
        need("sklearn", op)
        _, frame = pick(inputs, params.input, is_frame, "a DataFrame", op)
        target = params.target
        if target is None and "target" in frame.columns:
            target = "target"
        if target is not None:
            ensure_columns(frame, [target], op, "target column")
            if frame[target].isna().any():
                count = int(frame[target].isna().sum())
                raise TaskFailed(f"{op}: target '{target}' is missing in {count} rows")
        task_type = params.task_type or infer_task_type(frame, target)
        if task_type != "clustering" and target is None:
            raise TaskFailed(f"{op}: task_type {task_type} needs `target`")
        try:
            train, test, holdout = _split(frame, target, task_type, params, op)
            x_train = train.drop(columns=[target]) if target else train
            y_train = train[target] if target else None
            transformer, transformed = fit_steps(params.steps, x_train, y_train, task_type, op)
        except _Unstratified as exc:
            fix = "set `stratify: false`"
            if params.task_type is None and target is not None:
                fix = f"{_guess_note(frame, target, task_type)}, or `stratify: false`"
            raise TaskFailed(f"{exc}; {fix}") from None
        except TaskFailed as exc:
            if params.task_type is None and target is not None:
                raise TaskFailed(f"{exc}; {_guess_note(frame, target, task_type)}") from None
            raise
        joblib = need("joblib", op)
        buf = io.BytesIO()
        joblib.dump(transformer, buf)
        uri = put_file(ctx, "transformer.joblib", buf.getvalue(), "transformer")
        names_out = [str(c) for c in transformed.columns]
        record(
            ctx,
            metrics={
                "train_rows": len(train),
                "test_rows": len(test),
                "holdout_rows": len(holdout),
                "features_out": len(names_out),
            },
            info={"transformer": uri, "task_type": task_type, "target": target},
        )
        print(
            f"split {len(train)} train / {len(test)} test / {len(holdout)} holdout rows "
            f"(seed {params.seed}); {x_train.shape[1]} columns -> {len(names_out)} features"
        )
        return {
            "kind": "features",
            "target": target,
            "task_type": task_type,
            "train": train,
            "test": test,
            "holdout": holdout,
            "transformer": transformer,
            "feature_names_in": [str(c) for c in x_train.columns],
            "feature_names_out": names_out,
            "seed": params.seed,
            "class_names": _class_names(frame, target, task_type),
        }


OPERATOR = FeatureEngineering


def infer_task_type(frame: Any, target: str | None) -> TaskType:
    """Guess the task type from the target column.

    clustering without a target; regression for a numeric target with fractional
    values, more than ``MAX_GUESSED_CLASSES`` distinct values, or distinct values
    in more than half the rows (too many classes to stratify); else classification.
    """
    from pandas.api import types

    if target is None:
        return "clustering"
    y = frame[target].dropna()
    if not types.is_numeric_dtype(y) or types.is_bool_dtype(y):
        return "classification"
    if types.is_float_dtype(y) and not bool((y % 1 == 0).all()):
        return "regression"
    distinct = int(y.nunique())
    if distinct > MAX_GUESSED_CLASSES or (distinct > 2 and 2 * distinct > len(y)):
        return "regression"
    return "classification"


def fit_steps(
    steps: list[Any], x: Any, y: Any, task_type: str, op: str = "feature_engineering"
) -> tuple[Any, Any]:
    """The fitted transformation ``Pipeline`` of ``steps`` and ``x`` transformed by it.

    Each step's default columns are chosen on the data as the previous steps left it.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    fitted: list[tuple[str, Any]] = []
    current = x
    for i, step in enumerate(steps):
        transformer = _make(step, current, task_type, op)
        if transformer is None:
            continue
        try:
            current = transformer.fit_transform(current, y)
        except TaskFailed:
            raise
        except Exception as exc:  # scikit-learn raises ValueError/TypeError with good text
            raise TaskFailed(
                f"{op}: step {i + 1} ({step.op}) failed: {type(exc).__name__}: {_line(exc)}"
            ) from None
        if not is_frame(current):
            raise TaskFailed(f"{op}: step {i + 1} ({step.op}) did not return a DataFrame")
        fitted.append((f"{i + 1}_{step.op}", transformer))
    if not fitted:
        identity = FunctionTransformer(validate=False, feature_names_out="one-to-one")
        fitted.append(("identity", identity.fit(x)))
    return Pipeline(fitted), current


def _make(step: Any, frame: Any, task_type: str, op: str) -> Any:
    import numpy as np
    from pandas.api import types
    from sklearn import feature_selection, preprocessing
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import FunctionTransformer

    numeric = [
        c
        for c in frame.columns
        if types.is_numeric_dtype(frame[c]) and not types.is_bool_dtype(frame[c])
    ]
    other = [c for c in frame.columns if c not in numeric]
    if isinstance(step, Call):
        from stageflow.operators.python import resolve_callable

        try:
            fn = resolve_callable(step.call)
        except Exception as exc:  # any import failure is the user's to fix
            raise TaskFailed(f"{op}: cannot import {step.call}: {exc}") from None
        return FunctionTransformer(fn, kw_args=step.kwargs or None, validate=False)
    if isinstance(step, SelectKBest):
        if other:
            raise TaskFailed(
                f"{op}: select_k_best needs numeric columns, but {', '.join(map(str, other[:5]))} "
                "are not; encode them first (one_hot or ordinal)"
            )
        name: str = step.score or ("f_regression" if task_type == "regression" else "f_classif")
        if name == "mutual_info":
            name = "mutual_info_regression" if task_type == "regression" else "mutual_info_classif"
        score = getattr(feature_selection, name)
        k = min(step.k, len(frame.columns))
        return feature_selection.SelectKBest(score, k=k).set_output(transform="pandas")
    default = other if isinstance(step, OneHot | Ordinal) else numeric
    if isinstance(step, Impute) and step.strategy in ("most_frequent", "constant"):
        default = list(frame.columns)
    columns = step.columns if step.columns is not None else default
    ensure_columns(frame, list(columns), op, f"column for step {step.op}")
    if not columns:
        print(f"step {step.op}: no columns to work on; skipped")
        return None
    inner: Any
    if isinstance(step, Impute):
        inner = SimpleImputer(strategy=step.strategy, fill_value=step.fill_value)
    elif isinstance(step, Scale):
        inner = {
            "standard": preprocessing.StandardScaler,
            "minmax": preprocessing.MinMaxScaler,
            "robust": preprocessing.RobustScaler,
        }[step.method]()
    elif isinstance(step, OneHot):
        inner = preprocessing.OneHotEncoder(
            handle_unknown="infrequent_if_exist" if step.max_categories else "ignore",
            max_categories=step.max_categories,
            drop=step.drop,
            sparse_output=False,
        )
    elif isinstance(step, Ordinal):
        cats: Any = "auto"
        if step.categories:
            missing = [c for c in columns if c not in step.categories]
            if missing:
                raise TaskFailed(f"{op}: ordinal categories missing for {', '.join(missing)}")
            cats = [step.categories[c] for c in columns]
        inner = preprocessing.OrdinalEncoder(
            categories=cats, handle_unknown="use_encoded_value", unknown_value=-1
        )
    elif isinstance(step, Log):
        low = frame[columns].min(numeric_only=True)
        bad = [str(c) for c, v in low.items() if v <= -1]
        if bad:
            raise TaskFailed(f"{op}: log needs values > -1; {', '.join(bad)} has smaller ones")
        inner = FunctionTransformer(
            np.log1p, inverse_func=np.expm1, feature_names_out="one-to-one", validate=False
        )
    elif isinstance(step, Binning):
        inner = preprocessing.KBinsDiscretizer(
            n_bins=step.bins, encode="ordinal", strategy=step.strategy
        )
    elif isinstance(step, Polynomial):
        inner = preprocessing.PolynomialFeatures(
            degree=step.degree, interaction_only=step.interaction_only, include_bias=False
        )
    else:
        assert isinstance(step, Drop)
        inner = "drop"
    return ColumnTransformer(
        [(step.op, inner, list(columns))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")


def _split(
    frame: Any, target: str | None, task_type: str, params: FeatureParams, op: str
) -> tuple[Any, Any, Any]:
    from sklearn.model_selection import train_test_split

    stratify = params.stratify if params.stratify is not None else task_type == "classification"

    def split(data: Any, size: int) -> tuple[Any, Any]:
        labels = data[target] if (stratify and target is not None) else None
        if labels is not None:
            counts = labels.value_counts()
            lonely = [_plain(v) for v in counts[counts < 2].index]
            if lonely:
                shown = ", ".join(map(str, sorted(lonely, key=str)[:5]))
                more = f", and {len(lonely) - 5} more" if len(lonely) > 5 else ""
                raise _Unstratified(
                    f"{op}: cannot split {len(data)} rows stratified on '{target}': "
                    f"{len(lonely)} of its {len(counts)} classes have a single row "
                    f"({shown}{more})"
                )
        try:
            a, b = train_test_split(data, test_size=size, random_state=params.seed, stratify=labels)
        except ValueError as exc:
            raise TaskFailed(f"{op}: cannot split {len(data)} rows: {_line(exc)}") from None
        return a, b

    if params.test_size + params.holdout_size >= 1:
        raise TaskFailed(f"{op}: test_size + holdout_size must be under 1")
    # Row counts, not fractions of what is left: 0.2 of 150 rows is 30 test rows
    # whatever the holdout takes.
    rows = len(frame)
    holdout_rows = round(rows * params.holdout_size)
    test_rows = max(1, round(rows * params.test_size))
    holdout = frame.iloc[0:0]
    rest = frame
    if holdout_rows > 0:
        rest, holdout = split(frame, holdout_rows)
    train, test = split(rest, test_rows)
    return train, test, holdout


def _class_names(frame: Any, target: str | None, task_type: str) -> dict[str, str] | None:
    """The target's class names by label (as text), when the data carries them
    (``frame.attrs["class_names"][target]``, set by ``data_ingestion``)."""
    if task_type != "classification" or target is None:
        return None
    names = (getattr(frame, "attrs", {}).get("class_names") or {}).get(target)
    if not isinstance(names, dict):
        return None
    return {str(k): str(v) for k, v in names.items()}


class _Unstratified(TaskFailed):
    """A stratified split with classes of one row (the caller adds the fix)."""


def _guess_note(frame: Any, target: str, task_type: str) -> str:
    """What the task type was guessed from, and the setting that overrides the guess."""
    from pandas.api import types

    y = frame[target].dropna()
    distinct, rows = int(y.nunique()), len(y)
    if task_type == "regression":
        return (
            f"task_type was guessed as regression ('{target}' has {distinct} distinct "
            f"numeric values in {rows} rows): set `task_type: classification` "
            f"if '{target}' holds classes"
        )
    kind = "whole-number " if types.is_numeric_dtype(y) and not types.is_bool_dtype(y) else ""
    return (
        f"task_type was guessed as classification ('{target}' has {distinct} distinct "
        f"{kind}values in {rows} rows): set `task_type: regression` if '{target}' is a quantity"
    )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, at most 300 characters."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:299] + "…"
