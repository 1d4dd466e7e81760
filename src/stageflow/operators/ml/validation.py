"""The ``data_validation`` operator: rules and drift checks over a DataFrame.

Rules: ``required_columns``, ``dtypes`` (``int``, ``float``, ``numeric``,
``string``, ``bool``, ``datetime``, ``category`` or an exact dtype name),
``not_null`` (columns, or ``"*"`` for all), ``ranges`` (``{min, max}``),
``allowed_values``, ``unique``, ``regex`` (full match) and row-level
``expressions`` (``operators.ml.expressions``: parsed, never ``eval``-ed),
plus ``min_rows``. Seed 001's ``validation_rules: {...}`` holds the same keys.
A row-level rule passes when its failing rows are at most ``max_error_rate``
of all rows (seed 001; 0 by default); a structural rule (a column, a dtype,
the row count) passes or fails outright.

``drift`` compares each column with a reference dataset (an upstream task id
or any ``data_ingestion`` source): Kolmogorov-Smirnov for numeric columns,
chi-square or the population stability index (PSI) for categorical ones; a
column drifts when the test's p-value is under ``p_value`` (or its PSI over
``psi_threshold``), and the check fails when more than
``max_drifted_columns`` drift.

Data-quality monitors (``operators.ml.quality``, where each is defined
precisely): ``outliers`` (z-score, IQR, scikit-learn's IsolationForest),
``freshness`` (the newest timestamp of a column, or a file's modification
time), ``completeness``, a weighted ``quality_score`` with its ``min``; and a
``pandera`` schema (a YAML file, inline YAML, or ``call: module:object``;
``operators.ml.pandera_schema``).

The output is the data unchanged; the report (each check: passed, failing
count and rate, a few sample bad rows; each column's drift statistic) is the
JSON artifact ``validation_report.json``. The verdict is recorded as metrics
too: ``passed`` (1 or 0), ``error_rate``, ``checks``, ``failed_checks``,
``drifted_columns``, ``quality_score`` and ``completeness`` when measured, and
``failing.CHECK`` per check (``failing.not_null.age``; the first 200). With
``on_failure: fail`` (default; ``on_violation`` is the same parameter) a failed
check fails the task with a one-line summary, at once: the verdict is the
data's, so it is not retried; ``warn`` logs it and lets the data through;
``skip_downstream`` logs it and the task succeeds, but the tasks directly
downstream are skipped (those further on follow their trigger rules: a
``none_failed`` join after a skipped retrain still runs). Conditions downstream
read the verdict as ``${validate.metrics.drifted_columns}`` (any recorded metric).

Example::

    - id: validate
      operator: data_validation
      upstream: [ingest]
      parameters:
        required_columns: [amount, country, is_fraud]
        not_null: "*"
        ranges: {amount: {min: 0}}
        allowed_values: {country: [FR, DE, ES]}
        expressions: ["amount < 10000 or is_fraud == 1"]
        max_error_rate: 0.01
        drift: {reference: data/last_month.parquet, p_value: 0.01}
        outliers: {columns: [amount], method: iqr, max_fraction: 0.02}
        freshness: {column: created_at, max_age: 24h}
        completeness: {min: 0.95}
        quality_score:
          weights: {completeness: 0.4, validity: 0.3, freshness: 0.2, outliers: 0.1}
          min: 0.8
        pandera: {file: schemas/transactions.yaml}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from stageflow.errors import Problem
from stageflow.operators.base import SkipDownstream, TaskContext, TaskFailed
from stageflow.operators.metadata import record
from stageflow.operators.ml._common import MLOperator, is_frame, need, pick, put_file
from stageflow.operators.ml.expressions import ExpressionError, evaluate_rows, parse_rows
from stageflow.operators.ml.ingestion import frame_hash, read_table
from stageflow.operators.ml.pandera_schema import PanderaRule, pandera_checks, schema_from_yaml
from stageflow.operators.ml.quality import (
    CompletenessRule,
    FreshnessRule,
    OutlierRule,
    Quality,
    QualityScore,
    completeness_check,
    freshness_checks,
    outlier_checks,
    samples,
    score_check,
)

if TYPE_CHECKING:
    from stageflow.spec.models import Pipeline, Task

__all__ = ["DataValidation", "DriftCheck", "Range", "Rules", "ValidationParams"]

_STRICT = ConfigDict(extra="forbid")
_KINDS = ("int", "integer", "float", "numeric", "number", "string", "str", "bool", "boolean")


class Range(BaseModel):
    model_config = _STRICT

    min: float | None = Field(default=None, description="smallest allowed value")
    max: float | None = Field(default=None, description="largest allowed value")


class Rules(BaseModel):
    model_config = _STRICT

    required_columns: list[str] = Field(default_factory=list, description="columns that must exist")
    dtypes: dict[str, str] = Field(
        default_factory=dict,
        description="column -> int | float | numeric | string | bool | datetime | category | dtype",
    )
    not_null: list[str] | Literal["*"] = Field(
        default_factory=list, description='columns without missing values ("*": every column)'
    )
    ranges: dict[str, Range] = Field(default_factory=dict, description="column -> {min, max}")
    allowed_values: dict[str, list[Any]] = Field(
        default_factory=dict, description="column -> the values it may hold"
    )
    unique: list[str] = Field(default_factory=list, description="columns without duplicates")
    regex: dict[str, str] = Field(
        default_factory=dict, description="column -> pattern every value must fully match"
    )
    expressions: list[str] | dict[str, str] = Field(
        default_factory=list,
        description="row-level conditions that must hold (a list, or name -> expression)",
    )
    min_rows: int | None = Field(default=None, ge=0, description="at least this many rows")

    @field_validator("expressions")
    @classmethod
    def _parse_expressions(cls, value: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        for text in value.values() if isinstance(value, dict) else value:
            try:
                parse_rows(text)
            except ExpressionError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("regex")
    @classmethod
    def _compile(cls, value: dict[str, str]) -> dict[str, str]:
        for column, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"regex for '{column}' does not compile: {exc}") from None
        return value


class DriftCheck(BaseModel):
    model_config = _STRICT

    reference: str = Field(description="an upstream task id, or a path/URL/sklearn:NAME to read")
    columns: list[str] | None = Field(default=None, description="default: every shared column")
    categorical_test: Literal["chi2", "psi"] = Field(
        default="chi2", description="test for non-numeric columns (numeric ones use KS)"
    )
    p_value: float = Field(default=0.05, gt=0, lt=1, description="a column drifts below this")
    psi_threshold: float = Field(default=0.2, gt=0, description="PSI above this is drift")
    max_drifted_columns: int = Field(default=0, ge=0, description="fail when more columns drift")


class ValidationParams(Rules):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    validation_rules: Rules | None = Field(
        default=None, description="seed 001: the same rules, nested"
    )
    max_error_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of bad rows a row-level rule may have"
    )
    drift: DriftCheck | None = Field(default=None, description="compare with a reference dataset")
    outliers: list[OutlierRule] = Field(
        default_factory=list,
        description="{columns, method: zscore|iqr|isolation_forest, threshold, max_fraction} "
        "(one, or a list)",
    )
    freshness: list[FreshnessRule] = Field(
        default_factory=list,
        description="{column: TS or path: FILE, max_age: 24h, as_of} (one, or a list)",
    )
    completeness: CompletenessRule | None = Field(
        default=None, description='{columns (default "*"), min: share of cells present}'
    )
    quality_score: QualityScore | None = Field(
        default=None, description="{weights: {completeness, validity, freshness, outliers}, min}"
    )
    pandera: PanderaRule | None = Field(
        default=None, description="a pandera schema: {file: F.yaml} | {yaml: ...} | {call: m:obj}"
    )
    on_failure: Literal["fail", "warn", "skip_downstream"] = Field(
        default="fail",
        validation_alias=AliasChoices("on_failure", "on_violation"),
        description="fail the task (at once: never retried), warn, or skip_downstream "
        "(succeed and skip the tasks directly downstream)",
    )
    input: str | None = Field(default=None, description="the upstream task whose data to check")
    input_path: str | None = Field(
        default=None,
        validation_alias=AliasChoices("input_path", "source"),
        description="read the data from here instead (seed 001; any data_ingestion source)",
    )
    sample_rows: int = Field(default=5, ge=0, le=100, description="bad rows kept per rule")

    @field_validator("outliers", "freshness", mode="before")
    @classmethod
    def _one_or_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _score_has_its_rules(self) -> ValidationParams:
        score = self.quality_score
        if score is None:
            return self
        for component, rule in (("freshness", self.freshness), ("outliers", self.outliers)):
            if getattr(score.weights, component) > 0 and not rule:
                raise ValueError(
                    f"quality_score.weights.{component} is "
                    f"{getattr(score.weights, component):g} but there is no {component} rule; "
                    f"add {component}: or give its weight to the other components"
                )
        return self


class DataValidation(MLOperator):
    """Check data against rules and a reference; pass it through unchanged."""

    name = "data_validation"
    Params = ValidationParams
    metric_names = (
        "passed",
        "error_rate",
        "checks",
        "failed_checks",
        "drifted_columns",
        "quality_score",
        "completeness",
        "failing.",
    )

    @classmethod
    def spec_problems(
        cls,
        params: BaseModel,
        task: Task,
        pipeline: Pipeline | None,
        run_params: Mapping[str, Any],
    ) -> list[Problem]:
        """A local pandera schema file must exist and load (relative to the pipeline's
        folder, when the pipeline came from a file)."""
        assert isinstance(params, ValidationParams)
        rule = params.pandera
        if rule is None or rule.file is None or "${" in rule.file or "://" in rule.file:
            return []
        path = Path(rule.file)
        source = getattr(pipeline, "_source", None) if pipeline is not None else None
        if not path.is_absolute():
            if source is None:
                return []  # no folder to resolve it in: checked where it runs
            path = Path(source).parent / path
        field = "parameters.pandera.file"
        if not path.is_file():
            return [
                Problem(
                    f"operator 'data_validation': pandera.file {rule.file!r} does not exist "
                    f"(looked at {path}); give a path relative to the pipeline's folder",
                    task=task.id,
                    field=field,
                )
            ]
        try:
            schema_from_yaml(path.read_text(encoding="utf-8"), check_only=True)
        except (ValueError, OSError) as exc:
            return [
                Problem(
                    f"operator 'data_validation': pandera.file {rule.file!r}: {exc}",
                    task=task.id,
                    field=field,
                )
            ]
        return []

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, ValidationParams)
        need("pandas", self.name)
        if params.input_path is not None:
            frame, read = read_table(ctx.resolve_path(params.input_path), op=self.name)
            record(ctx, reads=[read])
        else:
            _, frame = pick(inputs, params.input, is_frame, "a DataFrame", self.name)
        rules = _merged(params)
        checks, bad_rows = _run_rules(frame, rules, params.max_error_rate, params.sample_rows)
        quality = Quality()
        if params.completeness is not None:
            checks.append(completeness_check(frame, params.completeness, quality))
        checks.extend(outlier_checks(frame, params.outliers, params.sample_rows, quality))
        checks.extend(freshness_checks(frame, params.freshness, ctx, quality))
        if params.pandera is not None:
            checks.extend(pandera_checks(frame, params.pandera, ctx, params.sample_rows))
        drift: list[dict[str, Any]] = []
        if params.drift is not None:
            drift, check = _run_drift(frame, params.drift, inputs, ctx)
            checks.append(check)
        score: float | None = None
        if params.quality_score is not None:
            scored = score_check(frame, params.quality_score, bad_rows, quality)
            score = scored["score"]
            checks.append(scored)
        failed = [c for c in checks if not c["passed"]]
        report = {
            "passed": not failed,
            "rows": len(frame),
            "columns": len(frame.columns),
            "max_error_rate": params.max_error_rate,
            "error_rate": bad_rows,
            "checks": checks,
            "drift": drift,
            "data_sha256": frame_hash(frame),
        }
        uri = put_file(
            ctx,
            "validation_report.json",
            json.dumps(report, indent=2, default=str).encode(),
            "report",
        )
        metrics = {
            "passed": 0.0 if failed else 1.0,
            "error_rate": bad_rows,
            "failed_checks": len(failed),
            "checks": len(checks),
            "drifted_columns": sum(1 for d in drift if d["drifted"]),
        }
        if score is not None:
            metrics["quality_score"] = score
        if quality.completeness is not None:
            metrics["completeness"] = quality.completeness
        for c in checks[:_RULE_METRICS]:
            metrics[f"failing.{_metric_name(c['check'])}"] = c["failing"]
        record(ctx, metrics=metrics, info={"report": uri})
        print(
            f"validation: {len(checks) - len(failed)} of {len(checks)} checks passed; report: {uri}"
        )
        for c in checks:
            print(f"  [{'ok' if c['passed'] else 'FAILED'}] {c['check']}: {c['detail']}")
        if failed:
            summary = "; ".join(f"{c['check']}: {c['detail']}" for c in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            message = (
                f"data validation failed: {len(failed)} of {len(checks)} checks: "
                f"{summary}{more}; report: {uri}"
            )
            if params.on_failure == "fail":
                # the data's verdict: another attempt would find the same
                raise TaskFailed(message, retryable=False)
            print(f"warning: {message}")
            if params.on_failure == "skip_downstream":
                return SkipDownstream(frame, message)
        return frame


OPERATOR = DataValidation

#: At most this many checks get a ``failing.CHECK`` metric (``not_null: "*"`` on a wide
#: table would otherwise make hundreds).
_RULE_METRICS = 200


def _metric_name(check: str) -> str:
    """``not_null(age)`` -> ``not_null.age``; ``outliers(a, zscore)`` -> ``outliers.a.zscore``:
    characters MLflow accepts in a metric name."""
    name = check.replace("(", ".").replace(")", "").replace(", ", ".").replace(": ", ".")
    return re.sub(r"[^A-Za-z0-9_.\-/]+", "_", name).strip("._")


# -- rules ---------------------------------------------------------------------------


def _merged(params: ValidationParams) -> Rules:
    nested = params.validation_rules
    if nested is None:
        return params
    data = params.model_dump(include=set(Rules.model_fields))
    for key, value in nested.model_dump(exclude_defaults=True).items():
        current = data.get(key)
        if isinstance(current, list) and isinstance(value, list):
            data[key] = [*current, *value]
        elif isinstance(current, dict) and isinstance(value, dict):
            data[key] = {**current, **value}
        else:
            data[key] = value
    return Rules.model_validate(data)


def _run_rules(
    frame: Any, rules: Rules, max_rate: float, keep: int
) -> tuple[list[dict[str, Any]], float]:
    """Every check's result, and the share of rows that broke at least one row-level rule."""
    rows = len(frame)
    checks: list[dict[str, Any]] = []
    union = frame.index.to_series().isna().to_numpy()  # all False

    def structural(check: str, passed: bool, detail: str) -> None:
        checks.append(
            {"check": check, "passed": passed, "failing": 0 if passed else 1, "detail": detail}
        )

    def row_level(check: str, bad: Any) -> None:
        nonlocal union
        union = union | bad.to_numpy(dtype=bool)
        count = int(bad.sum())
        rate = count / rows if rows else 0.0
        passed = rate <= max_rate
        detail = f"{count} of {rows} rows ({rate:.1%})" + (
            "" if passed else f" over max_error_rate {max_rate:.1%}"
        )
        checks.append(
            {
                "check": check,
                "passed": passed,
                "failing": count,
                "rate": rate,
                "detail": detail,
                "samples": samples(frame, bad, keep),
            }
        )

    def column(check: str, name: str) -> bool:
        if name in frame.columns:
            return True
        structural(check, False, f"no column '{name}'")
        return False

    if rules.min_rows is not None:
        structural(
            "min_rows",
            rows >= rules.min_rows,
            f"{rows} rows" + ("" if rows >= rules.min_rows else f", fewer than {rules.min_rows}"),
        )
    for name in rules.required_columns:
        if name in frame.columns:
            structural(f"required({name})", True, "present")
        else:
            have = ", ".join(str(c) for c in list(frame.columns)[:20])
            structural(f"required({name})", False, f"missing column; the data has: {have}")
    for name, expected in rules.dtypes.items():
        if column(f"dtype({name})", name):
            actual = str(frame[name].dtype)
            ok = _dtype_matches(frame[name], expected)
            structural(f"dtype({name})", ok, f"is {actual}" + ("" if ok else f", not {expected}"))
    nulls = list(frame.columns) if rules.not_null == "*" else rules.not_null
    for name in nulls:
        if column(f"not_null({name})", name):
            row_level(f"not_null({name})", frame[name].isna())
    for name, bounds in rules.ranges.items():
        if column(f"range({name})", name):
            values = frame[name]
            bad = values.isna() & False
            try:
                if bounds.min is not None:
                    bad |= values < bounds.min
                if bounds.max is not None:
                    bad |= values > bounds.max
            except TypeError:
                structural(f"range({name})", False, f"is {values.dtype}, not numeric")
                continue
            row_level(f"range({name})", bad.fillna(False).astype(bool))
    for name, allowed in rules.allowed_values.items():
        if column(f"allowed_values({name})", name):
            values = frame[name]
            row_level(f"allowed_values({name})", values.notna() & ~values.isin(allowed))
    for name in rules.unique:
        if column(f"unique({name})", name):
            row_level(f"unique({name})", frame[name].duplicated(keep=False))
    for name, pattern in rules.regex.items():
        if column(f"regex({name})", name):
            values = frame[name]
            matches = values.astype("string").str.fullmatch(pattern)
            bad = values.notna() & ~matches.fillna(False).astype(bool)
            row_level(f"regex({name})", bad)
    expressions = (
        rules.expressions.items()
        if isinstance(rules.expressions, dict)
        else ((text, text) for text in rules.expressions)
    )
    for label, text in expressions:
        try:
            ok = evaluate_rows(text, frame)
        except ExpressionError as exc:
            structural(f"expression({label})", False, str(exc))
            continue
        row_level(f"expression({label})", ~ok)
    return checks, (float(union.mean()) if rows else 0.0)


def _dtype_matches(series: Any, expected: str) -> bool:
    from pandas.api import types

    kind = expected.strip().lower()
    if kind in ("int", "integer"):
        return bool(types.is_integer_dtype(series))
    if kind == "float":
        return bool(types.is_float_dtype(series))
    if kind in ("numeric", "number"):
        return bool(types.is_numeric_dtype(series)) and not types.is_bool_dtype(series)
    if kind in ("string", "str"):
        return bool(types.is_string_dtype(series) or types.is_object_dtype(series))
    if kind in ("bool", "boolean"):
        return bool(types.is_bool_dtype(series))
    if kind == "datetime":
        return bool(types.is_datetime64_any_dtype(series))
    if kind == "category":
        return str(series.dtype) == "category"
    return str(series.dtype) == expected


# -- drift ---------------------------------------------------------------------------


def _run_drift(
    frame: Any, drift: DriftCheck, inputs: Mapping[str, Any], ctx: TaskContext
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from pandas.api import types

    stats = need("scipy.stats", "drift checks")
    if drift.reference in inputs:
        reference = inputs[drift.reference]
        if not is_frame(reference):
            raise TaskFailed(
                f"data_validation: drift reference '{drift.reference}' is not a DataFrame"
            )
    else:
        reference, read = read_table(
            ctx.resolve_path(drift.reference), op="data_validation (drift reference)"
        )
        record(ctx, reads=[read])
    columns = drift.columns or [c for c in frame.columns if c in reference.columns]
    missing = [c for c in columns if c not in frame.columns or c not in reference.columns]
    if missing:
        raise TaskFailed(
            f"data_validation: drift columns missing from the data or the reference: "
            f"{', '.join(missing)}"
        )
    results: list[dict[str, Any]] = []
    for name in columns:
        current, ref = frame[name].dropna(), reference[name].dropna()
        if len(current) == 0 or len(ref) == 0:
            results.append(
                {"column": name, "test": "none", "drifted": False, "detail": "no values to compare"}
            )
            continue
        numeric = types.is_numeric_dtype(current) and not types.is_bool_dtype(current)
        if numeric:
            ks = stats.ks_2samp(current.to_numpy(), ref.to_numpy())
            p = float(ks.pvalue)
            results.append(
                {
                    "column": name,
                    "test": "ks",
                    "statistic": float(ks.statistic),
                    "p_value": p,
                    "psi": _psi_numeric(current, ref),
                    "drifted": p < drift.p_value,
                }
            )
            continue
        counts = _category_counts(current, ref)
        if drift.categorical_test == "psi":
            psi = _psi(counts[0], counts[1])
            results.append(
                {"column": name, "test": "psi", "psi": psi, "drifted": psi > drift.psi_threshold}
            )
        else:
            if counts[0].size < 2:
                results.append(
                    {
                        "column": name,
                        "test": "chi2",
                        "p_value": 1.0,
                        "drifted": False,
                        "detail": "a single category",
                    }
                )
                continue
            chi2 = stats.chi2_contingency([counts[0], counts[1]])
            p = float(chi2.pvalue)
            results.append(
                {
                    "column": name,
                    "test": "chi2",
                    "statistic": float(chi2.statistic),
                    "p_value": p,
                    "drifted": p < drift.p_value,
                }
            )
    drifted = [r["column"] for r in results if r["drifted"]]
    passed = len(drifted) <= drift.max_drifted_columns
    detail = (
        f"{len(drifted)} of {len(results)} columns drifted"
        + (f" ({', '.join(str(c) for c in drifted[:10])})" if drifted else "")
        + ("" if passed else f", more than max_drifted_columns={drift.max_drifted_columns}")
    )
    check = {"check": "drift", "passed": passed, "failing": len(drifted), "detail": detail}
    return results, check


def _category_counts(current: Any, ref: Any) -> tuple[Any, Any]:
    import numpy as np

    categories = sorted({*map(str, current.unique()), *map(str, ref.unique())})
    a = current.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy()
    b = ref.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy()
    return np.asarray(a, dtype=float), np.asarray(b, dtype=float)


def _psi(current: Any, ref: Any) -> float:
    import numpy as np

    eps = 1e-6
    a = np.clip(current / max(current.sum(), 1), eps, None)
    b = np.clip(ref / max(ref.sum(), 1), eps, None)
    return float(np.sum((a - b) * np.log(a / b)))


def _psi_numeric(current: Any, ref: Any, bins: int = 10) -> float:
    import numpy as np

    edges = np.unique(np.quantile(ref.to_numpy(dtype=float), np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    a = np.histogram(current.to_numpy(dtype=float), edges)[0].astype(float)
    b = np.histogram(ref.to_numpy(dtype=float), edges)[0].astype(float)
    return _psi(a, b)
