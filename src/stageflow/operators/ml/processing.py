"""The ``data_processing`` operator: declarative DataFrame steps for cleaning and aggregation.

Seed 000's ``task_type: data_processing`` and seed 003's data-cleaning and
data-aggregation stages. The input is an upstream task's DataFrame (``input``
names it when several give one) or a table read from ``source`` (a path, an
fsspec/http URL or ``sklearn:NAME``, as ``data_ingestion`` reads them).
``steps`` run in order, each on what the previous one left:

===================  ==========================================================
``drop_missing``     drop rows with missing values: ``subset`` (default every
                     column), ``how`` any | all
``fill_missing``     fill missing values: ``value`` (one for every column),
                     ``values`` (per column) or ``strategy`` mean | median |
                     mode | ffill | bfill; ``columns`` (default every column)
``drop_duplicates``  ``subset`` (default every column), ``keep`` first | last | none
``filter``           keep the rows where ``expr`` holds
``derive``           add (or replace) ``column`` computed by ``expr``
``cast``             ``dtypes``: column -> int | float | string | bool |
                     datetime | category; ``errors`` raise | coerce (to missing);
                     short form ``- cast: {a: int, errors: coerce}``
``rename``           ``columns``: old -> new
``select``           keep only ``columns``, in that order
``drop``             remove ``columns``
``aggregate``        group by ``by`` (none: the whole table) and compute
                     ``aggregations``: column -> function or list of them
                     (count, size, nunique, sum, mean, median, min, max, std,
                     var, first, last); a single function keeps the column's
                     name, a list names them ``column_function``
``sort``             ``by`` columns, ``ascending`` (one flag or one per column)
===================  ==========================================================

Expressions (``filter``, ``derive``) are those of ``data_validation``
(``operators.ml.expressions``): parsed and checked when the spec is
validated, interpreted column-wise, never ``eval``-ed — columns by name
(backticks around odd names), literals, ``and or not``, comparisons, ``in``
a list, arithmetic, and ``abs isnull notnull length lower upper``; bounded so
that none can exhaust CPU or memory (``**`` exponents from -64 to 64, no power
towers, texts up to 1,000,000 characters: see that module).

A task with neither ``source`` nor a data upstream fails validation: it would
have nothing to process.

Output: the DataFrame. Rows in and out of every step are printed to the task's
log and kept in its metadata (``steps``), with ``rows_in``/``rows_out``
metrics. A column a step names that the data lacks fails the task with the
columns there are.

Example (seed 003's cleaning and aggregation stages)::

    - id: clean
      operator: data_processing
      upstream: [ingest]
      parameters:
        steps:
          - drop_duplicates: {subset: [order_id]}
          - drop_missing: {subset: [quantity, unit_price]}
          - cast: {quantity: int, unit_price: float}
          - filter: "quantity > 0 and unit_price > 0"
          - derive: {column: revenue, expr: "quantity * unit_price"}
    - id: aggregate
      operator: data_processing
      upstream: [clean]
      parameters:
        steps:
          - aggregate:
              by: [region]
              aggregations: {revenue: [sum, mean], order_id: count}
          - sort: {by: [revenue_sum], ascending: false}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from stageflow.errors import Problem
from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.operators.metadata import record
from stageflow.operators.ml._common import MLOperator, ensure_columns, is_frame, need, pick
from stageflow.operators.ml.expressions import (
    ExpressionError,
    evaluate_rows,
    evaluate_values,
    parse_rows,
)
from stageflow.spec.models import Pipeline, Task

__all__ = [
    "AGGREGATIONS",
    "DTYPES",
    "STEP_NAMES",
    "DataProcessing",
    "ProcessingParams",
    "apply",
    "input_problems",
]

AGGREGATIONS = (
    "count",
    "size",
    "nunique",
    "sum",
    "mean",
    "median",
    "min",
    "max",
    "std",
    "var",
    "first",
    "last",
)
DTYPES = ("int", "float", "string", "bool", "datetime", "category")
DType = Literal["int", "float", "string", "bool", "datetime", "category"]
_Column = Annotated[str, Field(min_length=1)]
_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0"})


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _expression(text: str) -> str:
    try:
        parse_rows(text)
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None
    return text


class DropMissing(_Step):
    op: Literal["drop_missing"] = "drop_missing"
    subset: list[_Column] | None = Field(
        default=None, validation_alias=AliasChoices("subset", "columns")
    )
    how: Literal["any", "all"] = "any"


class FillMissing(_Step):
    op: Literal["fill_missing"] = "fill_missing"
    value: Any = None
    values: dict[str, Any] | None = None
    strategy: Literal["mean", "median", "mode", "ffill", "bfill"] | None = None
    columns: list[_Column] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> FillMissing:
        given = [
            name
            for name, v in (
                ("value", self.value),
                ("values", self.values),
                ("strategy", self.strategy),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "fill_missing takes exactly one of `value`, `values` (per column) or `strategy`"
                + (f"; got {', '.join(given)}" if given else "")
            )
        if self.values is not None and self.columns is not None:
            raise ValueError("fill_missing: `values` names its columns; drop `columns`")
        return self


class DropDuplicates(_Step):
    op: Literal["drop_duplicates"] = "drop_duplicates"
    subset: list[_Column] | None = Field(
        default=None, validation_alias=AliasChoices("subset", "columns")
    )
    keep: Literal["first", "last", "none"] = "first"


class Filter(_Step):
    op: Literal["filter"] = "filter"
    expr: str = Field(validation_alias=AliasChoices("expr", "where", "condition"))

    _check = field_validator("expr")(_expression)


class Derive(_Step):
    op: Literal["derive"] = "derive"
    column: _Column
    expr: str

    _check = field_validator("expr")(_expression)


class Cast(_Step):
    op: Literal["cast"] = "cast"
    dtypes: dict[str, DType] = Field(min_length=1)
    errors: Literal["raise", "coerce"] = "raise"


class Rename(_Step):
    op: Literal["rename"] = "rename"
    columns: dict[str, _Column] = Field(min_length=1)


class Select(_Step):
    op: Literal["select"] = "select"
    columns: list[_Column] = Field(min_length=1)


class DropColumns(_Step):
    op: Literal["drop"] = "drop"
    columns: list[_Column] = Field(min_length=1)


class Aggregate(_Step):
    op: Literal["aggregate"] = "aggregate"
    by: list[_Column] = Field(default_factory=list)
    aggregations: dict[str, str | list[str]] = Field(min_length=1)

    @field_validator("by", mode="before")
    @classmethod
    def _one_column(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("aggregations")
    @classmethod
    def _known_functions(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        from stageflow.spec.suggest import did_you_mean

        for column, fns in value.items():
            for fn in fns if isinstance(fns, list) else [fns]:
                if fn not in AGGREGATIONS:
                    hint = _AGGREGATION_SYNONYMS.get(fn) or did_you_mean(fn, AGGREGATIONS)
                    raise ValueError(
                        f"unknown aggregation '{fn}' for column '{column}'; "
                        + (f"did you mean '{hint}'?" if hint else f"use {', '.join(AGGREGATIONS)}")
                    )
            if isinstance(fns, list) and len(set(fns)) != len(fns):
                raise ValueError(f"column '{column}' lists a function twice")
        return value

    @model_validator(mode="after")
    def _distinct_names(self) -> Aggregate:
        seen = set(self.by)
        for column, name in self.outputs():
            if name in seen:
                raise ValueError(
                    f"aggregate makes the column '{name}' twice (from '{column}'); "
                    "aggregate it with a list of functions, or rename first"
                )
            seen.add(name)
        return self

    def outputs(self) -> list[tuple[str, str]]:
        """(source column, output column) per aggregation, in order."""
        out: list[tuple[str, str]] = []
        for column, fns in self.aggregations.items():
            if isinstance(fns, list):
                out.extend((column, f"{column}_{fn}") for fn in fns)
            else:
                out.append((column, column))
        return out

    def functions(self) -> list[str]:
        """The function of each of ``outputs()``, in the same order."""
        out: list[str] = []
        for fns in self.aggregations.values():
            out.extend(fns if isinstance(fns, list) else [fns])
        return out


class Sort(_Step):
    op: Literal["sort"] = "sort"
    by: list[_Column] = Field(min_length=1)
    ascending: bool | list[bool] = True

    @field_validator("by", mode="before")
    @classmethod
    def _one_column(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_flag_each(self) -> Sort:
        if isinstance(self.ascending, list) and len(self.ascending) != len(self.by):
            raise ValueError(
                f"sort: `ascending` has {len(self.ascending)} flags for {len(self.by)} columns"
            )
        return self


Step = Annotated[
    DropMissing
    | FillMissing
    | DropDuplicates
    | Filter
    | Derive
    | Cast
    | Rename
    | Select
    | DropColumns
    | Aggregate
    | Sort,
    Field(discriminator="op"),
]
STEP_NAMES = (
    "drop_missing",
    "fill_missing",
    "drop_duplicates",
    "filter",
    "derive",
    "cast",
    "rename",
    "select",
    "drop",
    "aggregate",
    "sort",
)
_AGGREGATION_SYNONYMS = {"avg": "mean", "average": "mean", "total": "sum", "distinct": "nunique"}
_SHORT_NAMES = {"group_by": "aggregate", "dropna": "drop_missing", "fillna": "fill_missing"}


class ProcessingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    steps: list[Step] = Field(
        default_factory=list,
        description=f"DataFrame steps in order: {', '.join(STEP_NAMES)} (none: passed through)",
    )
    source: str | None = Field(
        default=None,
        validation_alias=AliasChoices("source", "input_path", "source_path"),
        description="read this table (path, fsspec/http URL or sklearn:NAME) instead of "
        "taking an upstream DataFrame",
    )
    format: Literal["csv", "json", "jsonl", "parquet"] | None = Field(
        default=None, description="format of `source`; default from its suffix"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for the pandas reader of `source`"
    )
    input: str | None = Field(default=None, description="the upstream task whose data to use")

    @field_validator("source")
    @classmethod
    def _not_a_database(cls, value: str | None) -> str | None:
        from stageflow.operators.ml.ingestion import is_sql_url

        if value is not None and is_sql_url(value):
            raise ValueError(
                "a database source needs a query: read it with a `data_ingestion` task "
                "(`source` + `query`) and make this task its downstream"
            )
        return value

    @field_validator("steps", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        """``- filter: "x > 0"`` is ``- {op: filter, expr: "x > 0"}``; ``- drop_duplicates``
        is ``- {op: drop_duplicates}``; ``- select: [a, b]``, ``- cast: {a: int}`` (with
        ``errors: coerce`` beside the columns) and ``- rename: {a: b}`` name their
        columns directly."""
        if not isinstance(value, list):
            return value
        return [_expand(item) for item in value]


class DataProcessing(MLOperator):
    """Clean, reshape and aggregate a DataFrame with declarative steps (seed 000, seed 003)."""

    name = "data_processing"
    Params = ProcessingParams

    @classmethod
    def spec_problems(
        cls,
        params: BaseModel,
        task: Task,
        pipeline: Pipeline | None,
        run_params: Mapping[str, Any],
    ) -> list[Problem]:
        assert isinstance(params, ProcessingParams)
        return input_problems(params, task)

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, ProcessingParams)
        op = self.name
        need("pandas", op)
        from stageflow.operators.ml.ingestion import frame_hash, read_table

        if params.source is not None:
            frame, read = read_table(
                ctx.resolve_path(params.source),
                fmt=params.format,
                options=params.options,
                op=op,
            )
        else:
            origin, frame = pick(inputs, params.input, is_frame, "a DataFrame", op)
            read = {"uri": f"task:{origin}", "sha256": frame_hash(frame), "kind": "upstream"}
        rows_in = len(frame)
        summary: list[dict[str, Any]] = []
        for i, step in enumerate(params.steps, 1):
            before = len(frame)
            frame = apply(step, frame, f"{op}: step {i} ({step.op})")
            summary.append({"step": i, "op": step.op, "rows_in": before, "rows_out": len(frame)})
            print(f"step {i} {step.op}: {before} -> {len(frame)} rows, {frame.shape[1]} columns")
        record(
            ctx,
            reads=[read],
            metrics={"rows_in": rows_in, "rows_out": len(frame), "columns": frame.shape[1]},
            info={"steps": summary, "schema": {str(c): str(t) for c, t in frame.dtypes.items()}},
        )
        print(f"{rows_in} rows in, {len(frame)} rows out after {len(params.steps)} steps")
        return frame


OPERATOR = DataProcessing


def input_problems(params: ProcessingParams, task: Task) -> list[Problem]:
    """A task that would have no DataFrame to process: no ``source`` and no data
    upstream, or an ``input`` that is not one of its data upstream tasks."""
    if params.source is not None:
        return []
    if not task.upstream:
        only_after = (
            f" (`after: [{', '.join(task.after)}]` only orders tasks; it passes no data)"
            if task.after
            else ""
        )
        return [
            Problem(
                "operator 'data_processing' has no DataFrame to process"
                f"{only_after}: set `source:` (a path, URL or sklearn:NAME) or list an "
                "upstream task that produces a DataFrame under `upstream:`",
                task=task.id,
                field="parameters.source",
            )
        ]
    if params.input is not None and params.input not in task.upstream:
        return [
            Problem(
                f"operator 'data_processing': input '{params.input}' is not a data upstream "
                f"of this task (upstream: {', '.join(task.upstream)}); name one of them or "
                "add it under `upstream:`",
                task=task.id,
                field="parameters.input",
            )
        ]
    return []


def apply(step: Any, frame: Any, where: str = "data_processing") -> Any:
    """``frame`` after one step (a new DataFrame); ``TaskFailed`` says what is wrong,
    prefixed with ``where``."""
    if isinstance(step, DropMissing):
        _columns(frame, step.subset, where)
        return frame.dropna(subset=step.subset, how=step.how)
    if isinstance(step, FillMissing):
        return _fill(step, frame, where)
    if isinstance(step, DropDuplicates):
        _columns(frame, step.subset, where)
        keep: Any = False if step.keep == "none" else step.keep
        return frame.drop_duplicates(subset=step.subset, keep=keep)
    if isinstance(step, Filter):
        return frame[_evaluate(evaluate_rows, step.expr, frame, where)]
    if isinstance(step, Derive):
        values = _evaluate(evaluate_values, step.expr, frame, where)
        return frame.assign(**{step.column: values})
    if isinstance(step, Cast):
        _columns(frame, list(step.dtypes), where)
        out = frame.copy()
        for column, dtype in step.dtypes.items():
            out[column] = _cast(frame[column], column, dtype, step.errors, where)
        return out
    if isinstance(step, Rename):
        _columns(frame, list(step.columns), where)
        return frame.rename(columns=step.columns)
    if isinstance(step, Select):
        _columns(frame, step.columns, where)
        return frame[step.columns]
    if isinstance(step, DropColumns):
        _columns(frame, step.columns, where)
        return frame.drop(columns=step.columns)
    if isinstance(step, Aggregate):
        return _aggregate(step, frame, where)
    assert isinstance(step, Sort)
    _columns(frame, step.by, where)
    return frame.sort_values(by=step.by, ascending=step.ascending, kind="stable")


# -- helpers --------------------------------------------------------------------------


def _expand(item: Any) -> Any:
    # An unknown name becomes `op:` too: the registry names it per step, with a
    # did-you-mean, beside every other problem (``registry._param_problem``).
    if isinstance(item, str):
        return {"op": _SHORT_NAMES.get(item, item)}
    if not isinstance(item, dict) or "op" in item:
        return item
    names = [k for k in item if _SHORT_NAMES.get(k, k) in STEP_NAMES]
    if not names and len(item) == 1:
        names = list(item)
    if len(names) != 1:
        return item
    key = names[0]
    name = _SHORT_NAMES.get(key, key)
    body = item[key]
    rest = {k: v for k, v in item.items() if k != key}
    if body is None:
        body = {}
    elif name == "filter" and isinstance(body, str):
        body = {"expr": body}
    elif name in ("select", "drop") and isinstance(body, list | str):
        body = {"columns": [body] if isinstance(body, str) else body}
    elif name in ("drop_missing", "drop_duplicates") and isinstance(body, list):
        body = {"subset": body}
    elif name == "cast" and isinstance(body, dict) and "dtypes" not in body:
        # `errors: raise|coerce` is the option, not a column (a column named `errors`
        # takes a type, which is neither).
        option = {k: v for k, v in body.items() if k == "errors" and v in ("raise", "coerce")}
        body = {"dtypes": {k: v for k, v in body.items() if k not in option}, **option}
    elif name == "rename" and isinstance(body, dict) and "columns" not in body:
        body = {"columns": body}
    if not isinstance(body, dict):
        return item
    return {"op": name, **body, **rest}


def _columns(frame: Any, columns: list[str] | None, where: str) -> None:
    if columns:
        ensure_columns(frame, columns, where)


def _evaluate(fn: Any, text: str, frame: Any, where: str) -> Any:
    try:
        return fn(text, frame)
    except ExpressionError as exc:
        have = ", ".join(str(c) for c in list(frame.columns)[:30])
        raise TaskFailed(f"{where}: {exc} in {text!r}; the data has: {have}") from None


def _fill(step: FillMissing, frame: Any, where: str) -> Any:
    from pandas.api import types

    if step.values is not None:
        _columns(frame, list(step.values), where)
        return frame.fillna(value=step.values)
    columns = step.columns if step.columns is not None else list(frame.columns)
    _columns(frame, columns, where)
    out = frame.copy()
    for column in columns:
        series = frame[column]
        if step.strategy is None:
            out[column] = series.fillna(step.value)
        elif step.strategy in ("ffill", "bfill"):
            out[column] = series.ffill() if step.strategy == "ffill" else series.bfill()
        elif step.strategy == "mode":
            mode = series.mode(dropna=True)
            out[column] = series.fillna(mode.iloc[0]) if len(mode) else series
        else:
            if not types.is_numeric_dtype(series) or types.is_bool_dtype(series):
                if step.columns is None:
                    continue  # every column by default: the numeric ones take a mean/median
                raise TaskFailed(
                    f"{where}: column '{column}' is {series.dtype}, not numeric; "
                    f"{step.strategy} needs numbers (use strategy: mode or a value)"
                )
            stat = series.mean() if step.strategy == "mean" else series.median()
            out[column] = series.fillna(stat)
    return out


def _cast(series: Any, column: str, dtype: str, errors: str, where: str) -> Any:
    import pandas as pd

    try:
        if dtype in ("int", "float"):
            numbers = pd.to_numeric(series, errors="coerce")
            bad = numbers.isna() & series.notna()
            if dtype == "int":
                bad |= numbers.notna() & (numbers % 1 != 0)
            if errors == "raise" and bool(bad.any()):
                _refuse(series, bad, column, dtype, where)
            numbers = numbers.mask(bad)
            return numbers.astype("Int64") if dtype == "int" else numbers.astype(float)
        if dtype == "string":
            return series.astype("string")
        if dtype == "category":
            return series.astype("category")
        if dtype == "datetime":
            stamps = pd.to_datetime(series, errors="coerce")
            bad = stamps.isna() & series.notna()
            if errors == "raise" and bool(bad.any()):
                _refuse(series, bad, column, dtype, where)
            return stamps
        text = series.astype("string").str.strip().str.lower()
        flags = pd.Series(pd.NA, index=series.index, dtype="boolean")
        flags[text.isin(_TRUE).fillna(False).astype(bool)] = True
        flags[text.isin(_FALSE).fillna(False).astype(bool)] = False
        bad = flags.isna() & series.notna()
        if errors == "raise" and bool(bad.any()):
            _refuse(series, bad, column, dtype, where)
        return flags
    except TaskFailed:
        raise
    except (TypeError, ValueError) as exc:  # pandas' own refusals, one line each
        raise TaskFailed(f"{where}: cannot cast column '{column}' to {dtype}: {exc}") from None


def _refuse(series: Any, bad: Any, column: str, dtype: str, where: str) -> None:
    first = series[bad].iloc[0]
    first = first.item() if hasattr(first, "item") else first  # numpy scalar: plain repr
    index = series[bad].index[0]
    index = index.item() if hasattr(index, "item") else index  # row 5, not np.int64(5)
    row = repr(index) if isinstance(index, str) else str(index)
    count = int(bad.sum())
    raise TaskFailed(
        f"{where}: column '{column}' has {count} value{'s' if count > 1 else ''} that "
        f"{'are' if count > 1 else 'is'} not {dtype} (first: {first!r} at row {row}); "
        "fix the data, or add `errors: coerce` to the step to make them missing "
        f"(`- cast: {{{column}: {dtype}, errors: coerce}}`)"
    )


def _aggregate(step: Aggregate, frame: Any, where: str) -> Any:
    import pandas as pd

    ensure_columns(frame, [*step.by, *step.aggregations], where)
    named = {
        name: (column, fn)
        for (column, name), fn in zip(step.outputs(), step.functions(), strict=True)
    }
    try:
        if step.by:
            return frame.groupby(step.by, dropna=False, sort=True).agg(**named).reset_index()
        return pd.DataFrame({name: [_whole(frame[col], fn)] for name, (col, fn) in named.items()})
    except (TypeError, ValueError) as exc:  # e.g. the mean of text
        raise TaskFailed(f"{where}: cannot aggregate: {type(exc).__name__}: {exc}") from None


def _whole(series: Any, fn: str) -> Any:
    """``fn`` over a whole column (one row even for an empty table, as SQL does)."""
    if fn == "size":
        return len(series)
    if fn in ("first", "last"):
        values = series.dropna()
        return None if values.empty else values.iloc[0 if fn == "first" else -1]
    return getattr(series, fn)()
