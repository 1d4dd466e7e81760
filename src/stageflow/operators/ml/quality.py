"""Data-quality monitors of ``data_validation``: outliers, freshness, completeness
and a weighted quality score (seed 004's monitoring section).

Each rule adds checks to the validation report in its format (``check``,
``passed``, ``failing``, ``detail``; a row-level check also ``rate`` and
``samples``), so they fail or warn as every other check does.

* ``outliers`` (one rule or a list): ``method: zscore`` flags a value whose
  distance to the column's mean is over ``threshold`` (default 3.0) sample
  standard deviations; ``iqr`` one outside ``[Q1 - k*IQR, Q3 + k*IQR]`` with
  ``k = threshold`` (default 1.5; quartiles interpolated linearly);
  ``isolation_forest`` fits scikit-learn's ``IsolationForest`` (``seed``) on the
  rows where every chosen column has a value and flags those it predicts as
  anomalies; ``threshold`` is its ``contamination`` in (0, 0.5] (default
  ``auto``: a fixed contamination flags that share of rows whatever the data).
  z-score and IQR give one check per column, ``isolation_forest`` one over the
  columns together; a check passes when the flagged rows are at most
  ``max_fraction`` of all rows (default 0.01). Columns default to every numeric one.
* ``freshness`` (one rule or a list): the age of the newest timestamp of
  ``column`` (datetimes; ISO-8601 text; numbers are epoch seconds; naive values
  are UTC), or of the modification time of ``path`` (a local path or any fsspec
  URL, ``s3://`` as ``operators/object_storage.py`` configures it), measured at
  ``as_of`` (ISO-8601; default: when the check runs, so a scheduled run may pass
  ``${schedule.end}``), must be at most ``max_age`` (``90s``, ``10m``, ``24h``,
  ``7d`` or seconds).
* ``completeness``: the share of non-missing cells over ``columns`` (default
  ``"*"``: every column) must be at least ``min`` (default 1.0).
* ``quality_score``: ``sum(weights[c] * c)`` over these components, each in [0, 1]:

  - ``completeness``: the completeness rule's share of non-missing cells (every
    column's when there is no such rule);
  - ``validity``: ``1 - error_rate``, the share of rows that broke no row-level
    rule (``not_null``, ``ranges``, ``allowed_values``, ``unique``, ``regex``,
    ``expressions``); 1.0 when there are none;
  - ``freshness``: the mean over the freshness rules of 1 while the age is within
    ``max_age``, falling linearly to 0 at twice ``max_age`` (0 without a timestamp);
  - ``outliers``: ``1 -`` the share of rows that any outlier rule flagged.

  The weights must sum to 1 (they are not normalised: a typo would silently
  reweigh the rest), and a weight on ``freshness`` or ``outliers`` needs such a
  rule. The check passes when the score is at least ``min`` (default 0.8).
``pandera`` schemas are ``operators.ml.pandera_schema``'s.

No state: the functions read the frame and return checks.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stageflow.errors import ObjectStorageError, UsageError
from stageflow.operators import object_storage
from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.spec.times import parse_duration, parse_instant

__all__ = [
    "CompletenessRule",
    "FreshnessRule",
    "OutlierRule",
    "Quality",
    "QualityScore",
    "QualityWeights",
    "completeness_check",
    "completeness_of",
    "failed_check",
    "freshness_checks",
    "outlier_checks",
    "samples",
    "score_check",
    "templated",
]

_STRICT = ConfigDict(extra="forbid")
_DEFAULT_THRESHOLD = {"zscore": 3.0, "iqr": 1.5}


class OutlierRule(BaseModel):
    model_config = _STRICT

    column: str | None = Field(default=None, description="one column (or use columns)")
    columns: list[str] | None = Field(
        default=None, description="columns to check (default: every numeric column)"
    )
    method: Literal["zscore", "iqr", "isolation_forest"] = Field(
        default="zscore", description="zscore | iqr | isolation_forest"
    )
    threshold: float | None = Field(
        default=None,
        gt=0,
        description="z: 3.0; iqr: 1.5; isolation_forest: contamination in (0, 0.5] or auto",
    )
    max_fraction: float = Field(
        default=0.01, ge=0, le=1, description="share of rows that may be flagged"
    )
    seed: int = Field(default=0, description="isolation_forest's random_state")

    @model_validator(mode="after")
    def _consistent(self) -> OutlierRule:
        if self.column is not None and self.columns is not None:
            raise ValueError("give column or columns, not both")
        if (
            self.method == "isolation_forest"
            and self.threshold is not None
            and not 0 < self.threshold <= 0.5
        ):
            raise ValueError(
                f"threshold {self.threshold} is isolation_forest's contamination, a share "
                "of rows in (0, 0.5]; leave it out for 'auto'"
            )
        return self

    @property
    def chosen(self) -> list[str] | None:
        return [self.column] if self.column is not None else self.columns


class FreshnessRule(BaseModel):
    model_config = _STRICT

    column: str | None = Field(default=None, description="a timestamp column")
    path: str | None = Field(default=None, description="or a file/object (path or fsspec URL)")
    max_age: str | float = Field(description="the oldest the newest may be: 90s, 10m, 24h, 7d")
    as_of: str | None = Field(
        default=None, description="ISO-8601 time to measure at (default: now)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> FreshnessRule:
        if (self.column is None) == (self.path is None):
            raise ValueError("give column (a timestamp column) or path (a file), one of them")
        if not templated(self.max_age):
            try:
                seconds = parse_duration(self.max_age, "max_age")
            except UsageError as exc:
                raise ValueError(str(exc)) from None
            if seconds <= 0:
                raise ValueError(f"max_age {self.max_age!r} must be more than 0")
        if self.as_of is not None and not templated(self.as_of):
            try:
                parse_instant(self.as_of, "as_of")
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def label(self) -> str:
        return self.column if self.column is not None else str(self.path)


class CompletenessRule(BaseModel):
    model_config = _STRICT

    columns: list[str] | Literal["*"] = Field(
        default="*", description='columns to measure ("*": every column)'
    )
    min: float = Field(default=1.0, ge=0, le=1, description="least share of non-missing cells")


class QualityWeights(BaseModel):
    model_config = _STRICT

    completeness: float = Field(default=0.0, ge=0, le=1, description="share of non-missing cells")
    validity: float = Field(default=0.0, ge=0, le=1, description="1 - error_rate")
    freshness: float = Field(default=0.0, ge=0, le=1, description="the freshness rules' mean")
    outliers: float = Field(default=0.0, ge=0, le=1, description="1 - share of flagged rows")

    @model_validator(mode="after")
    def _sum_to_one(self) -> QualityWeights:
        total = self.completeness + self.validity + self.freshness + self.outliers
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"the weights sum to {total:g}; make them sum to 1 "
                "(e.g. completeness: 0.4, validity: 0.3, freshness: 0.2, outliers: 0.1)"
            )
        return self


class QualityScore(BaseModel):
    model_config = _STRICT

    weights: QualityWeights = Field(
        description="completeness, validity, freshness, outliers -> weight (sum 1)"
    )
    min: float = Field(default=0.8, ge=0, le=1, description="the least score that passes")


@dataclass
class Quality:
    """What the quality rules found, for the score: the rows an outlier rule flagged
    (``None``: no outlier rule), each freshness rule's score, the completeness."""

    outlier_rows: Any = None
    freshness: list[float] = field(default_factory=list)
    completeness: float | None = None


# -- outliers -------------------------------------------------------------------------


def outlier_checks(
    frame: Any, rules: list[OutlierRule], keep: int, quality: Quality
) -> list[dict[str, Any]]:
    """One check per column (z-score, IQR) or per rule (isolation forest); the
    flagged rows are or-ed into ``quality.outlier_rows``."""
    from pandas.api import types

    checks: list[dict[str, Any]] = []
    for rule in rules:
        columns = rule.chosen or [
            c
            for c in frame.columns
            if types.is_numeric_dtype(frame[c]) and not types.is_bool_dtype(frame[c])
        ]
        missing = [c for c in columns if c not in frame.columns]
        wrong = [
            c
            for c in columns
            if c in frame.columns
            and (not types.is_numeric_dtype(frame[c]) or types.is_bool_dtype(frame[c]))
        ]
        for name in missing:
            checks.append(failed_check(f"outliers({name}, {rule.method})", f"no column '{name}'"))
        for name in wrong:
            checks.append(
                failed_check(
                    f"outliers({name}, {rule.method})",
                    f"is {frame[name].dtype}, not numeric",
                )
            )
        usable = [c for c in columns if c not in missing and c not in wrong]
        if not usable:
            continue
        if rule.method == "isolation_forest":
            bad, facts = _isolation_forest(frame, usable, rule)
            checks.append(
                _row_check(
                    f"outliers({', '.join(usable)}, isolation_forest)",
                    frame,
                    bad,
                    rule.max_fraction,
                    keep,
                    facts,
                )
            )
            quality.outlier_rows = _union(quality.outlier_rows, bad)
            continue
        for name in usable:
            bad, facts = _univariate(frame[name], rule)
            checks.append(
                _row_check(
                    f"outliers({name}, {rule.method})", frame, bad, rule.max_fraction, keep, facts
                )
            )
            quality.outlier_rows = _union(quality.outlier_rows, bad)
    return checks


def _univariate(values: Any, rule: OutlierRule) -> tuple[Any, dict[str, Any]]:
    threshold = rule.threshold if rule.threshold is not None else _DEFAULT_THRESHOLD[rule.method]
    numbers = values.astype(float)
    if rule.method == "zscore":
        mean, std = float(numbers.mean()), float(numbers.std())
        if not math.isfinite(std) or std == 0:
            bad = numbers.isna() & False
        else:
            bad = ((numbers - mean).abs() / std) > threshold
        return bad.fillna(False).astype(bool), {
            "method": "zscore",
            "threshold": threshold,
            "mean": mean,
            "std": std,
        }
    q1, q3 = float(numbers.quantile(0.25)), float(numbers.quantile(0.75))
    lower, upper = q1 - threshold * (q3 - q1), q3 + threshold * (q3 - q1)
    bad = (numbers < lower) | (numbers > upper)
    return bad.fillna(False).astype(bool), {
        "method": "iqr",
        "threshold": threshold,
        "lower": lower,
        "upper": upper,
    }


def _isolation_forest(frame: Any, columns: list[str], rule: OutlierRule) -> tuple[Any, Any]:
    from stageflow.operators.ml._common import need

    ensemble = need("sklearn.ensemble", "outliers with method isolation_forest")
    data = frame[columns].astype(float)
    present = data.notna().all(axis=1)
    bad = present & False
    contamination: float | str = rule.threshold if rule.threshold is not None else "auto"
    if int(present.sum()) >= 2:
        forest = ensemble.IsolationForest(contamination=contamination, random_state=rule.seed)
        predicted = forest.fit_predict(data[present].to_numpy())
        bad.loc[present] = predicted == -1
    return bad.astype(bool), {
        "method": "isolation_forest",
        "threshold": contamination,
        "seed": rule.seed,
    }


def _union(current: Any, bad: Any) -> Any:
    mask = bad.to_numpy(dtype=bool)
    return mask if current is None else current | mask


# -- freshness ------------------------------------------------------------------------


def freshness_checks(
    frame: Any, rules: list[FreshnessRule], ctx: TaskContext, quality: Quality
) -> list[dict[str, Any]]:
    """One check per rule; each rule's score goes to ``quality.freshness``."""
    checks: list[dict[str, Any]] = []
    for rule in rules:
        check_name = f"freshness({rule.label})"
        try:
            max_age = parse_duration(rule.max_age, "max_age")
            now = parse_instant(rule.as_of, "as_of") if rule.as_of is not None else time.time()
        except UsageError as exc:  # a ${params.X} that held something else
            raise TaskFailed(f"data_validation: freshness: {exc}", retryable=False) from None
        if rule.column is not None:
            newest, why = _newest_in_column(frame, rule.column)
        else:
            newest, why = _modified(ctx.resolve_path(str(rule.path)))
        if newest is None:
            quality.freshness.append(0.0)
            checks.append(failed_check(check_name, why))
            continue
        age = now - newest
        passed = age <= max_age
        quality.freshness.append(max(0.0, min(1.0, 2.0 - age / max_age)))
        detail = f"newest {_iso(newest)}, {_age(age)} old" + (
            "" if passed else f", over max_age {rule.max_age}"
        )
        checks.append(
            {
                "check": check_name,
                "passed": passed,
                "failing": 0 if passed else 1,
                "detail": detail,
                "newest": _iso(newest),
                "age_seconds": age,
                "max_age_seconds": max_age,
            }
        )
    return checks


def _newest_in_column(frame: Any, name: str) -> tuple[float | None, str]:
    import pandas as pd
    from pandas.api import types

    if name not in frame.columns:
        return None, f"no column '{name}'"
    values = frame[name].dropna()
    if types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, utc=True)
    elif types.is_numeric_dtype(values) and not types.is_bool_dtype(values):
        stamps = pd.to_datetime(values.astype(float), unit="s", utc=True)
    else:
        stamps = pd.to_datetime(values.astype(str), utc=True, errors="coerce", format="ISO8601")
    stamps = stamps.dropna()
    if stamps.empty:
        return None, f"no timestamps in '{name}' ({len(values)} values, none a date or time)"
    return float(stamps.max().timestamp()), ""


def _modified(url: str) -> tuple[float | None, str]:
    """When the file or object at ``url`` was last written, as it is now (a remote
    one through ``operators.object_storage``: its endpoint and credentials from the
    environment, no cached listing); ``None`` and why when that cannot be told."""
    if "://" not in url:  # a local path (already joined to the pipeline's folder)
        try:
            return Path(url).stat().st_mtime, ""
        except FileNotFoundError:
            return None, f"no file at {url}"
        except OSError as exc:
            raise TaskFailed(f"data_validation: freshness of {url}: {exc}") from None
    try:
        info = object_storage.object_info(url, "data_validation: freshness")
    except ObjectStorageError as exc:  # retryable when the moment's (unreachable)
        raise TaskFailed(str(exc), retryable=exc.retryable) from None
    if info is None:
        return None, f"no file at {url}"
    keys = ("mtime", "LastModified", "last_modified", "updated", "created")
    moment = next((info[k] for k in keys if info.get(k) is not None), None)
    if moment is None:
        return None, f"{url}: its file system gives no modification time"
    return _seconds(moment), ""


def _seconds(moment: Any) -> float:
    from datetime import UTC, datetime

    if isinstance(moment, datetime):
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if isinstance(moment, str):
        return parse_instant(moment, "modification time")
    return float(moment)


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _age(seconds: float) -> str:
    if abs(seconds) >= 3600:
        return f"{seconds / 3600:.1f}h"
    if abs(seconds) >= 60:
        return f"{seconds / 60:.1f}m"
    return f"{seconds:.0f}s"


# -- completeness and the score ---------------------------------------------------------


def completeness_check(frame: Any, rule: CompletenessRule, quality: Quality) -> dict[str, Any]:
    """The share of non-missing cells over the rule's columns, against ``min``."""
    columns = list(frame.columns) if rule.columns == "*" else rule.columns
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        quality.completeness = 0.0
        return failed_check("completeness", f"no column {', '.join(repr(str(c)) for c in missing)}")
    ratio, per_column, empty = completeness_of(frame, columns)
    quality.completeness = ratio
    passed = ratio >= rule.min
    return {
        "check": "completeness",
        "passed": passed,
        "failing": empty,
        "rate": 1.0 - ratio,
        "completeness": ratio,
        "columns": per_column,
        "detail": f"{ratio:.1%} of {len(frame) * len(columns)} cells present"
        + ("" if passed else f", under min {rule.min:.1%}"),
    }


def completeness_of(frame: Any, columns: list[Any]) -> tuple[float, dict[str, float], int]:
    """The share of non-missing cells, each column's, and how many cells are missing
    (1.0 and 0 for an empty frame or no columns)."""
    rows = len(frame)
    if not rows or not columns:
        return 1.0, {str(c): 1.0 for c in columns}, 0
    counts = frame[columns].notna().sum()
    per_column = {str(c): float(counts[c]) / rows for c in columns}
    present = int(counts.sum())
    total = rows * len(columns)
    return present / total, per_column, total - present


def score_check(
    frame: Any, score: QualityScore, error_rate: float, quality: Quality
) -> dict[str, Any]:
    """The weighted score of the components (see the module's docstring)."""
    completeness = quality.completeness
    if completeness is None:
        completeness = completeness_of(frame, list(frame.columns))[0]
    rows = len(frame)
    outliers = 1.0
    if quality.outlier_rows is not None and rows:
        outliers = 1.0 - float(quality.outlier_rows.mean())
    freshness = sum(quality.freshness) / len(quality.freshness) if quality.freshness else 1.0
    components = {
        "completeness": completeness,
        "validity": 1.0 - error_rate,
        "freshness": freshness,
        "outliers": outliers,
    }
    weights = score.weights.model_dump()
    value = sum(weights[k] * components[k] for k in components)
    passed = value >= score.min - 1e-12
    used = ", ".join(f"{k} {components[k]:.3f} x {weights[k]:g}" for k in components if weights[k])
    return {
        "check": "quality_score",
        "passed": passed,
        "failing": 0 if passed else 1,
        "score": value,
        "components": components,
        "weights": weights,
        "detail": f"score {value:.3f} ({used})" + ("" if passed else f", under min {score.min:g}"),
    }


# -- report entries --------------------------------------------------------------------


def samples(frame: Any, bad: Any, keep: int) -> list[dict[str, Any]]:
    """Up to ``keep`` of the rows ``bad`` marks, as JSON records with their ``_row``."""
    if keep == 0 or not bool(bad.any()):
        return []
    rows = frame[bad.to_numpy()].head(keep)
    out: list[dict[str, Any]] = json.loads(
        rows.to_json(orient="records", date_format="iso", default_handler=str)
    )
    for item, index in zip(out, rows.index, strict=True):
        item["_row"] = index if isinstance(index, int) else str(index)
    return out


def _row_check(
    name: str, frame: Any, bad: Any, max_fraction: float, keep: int, facts: dict[str, Any]
) -> dict[str, Any]:
    rows = len(frame)
    count = int(bad.sum())
    rate = count / rows if rows else 0.0
    passed = rate <= max_fraction
    return {
        "check": name,
        "passed": passed,
        "failing": count,
        "rate": rate,
        "detail": f"{count} of {rows} rows ({rate:.1%})"
        + ("" if passed else f" over max_fraction {max_fraction:.1%}"),
        **facts,
        "samples": samples(frame, bad, keep),
    }


def failed_check(name: str, detail: str) -> dict[str, Any]:
    """A check that fails outright (a missing column, no timestamps): ``failing`` 1."""
    return {"check": name, "passed": False, "failing": 1, "detail": detail}


def templated(value: object) -> bool:
    """Whether ``value`` holds a ``${...}`` reference (checked once substituted)."""
    return isinstance(value, str) and "${" in value
