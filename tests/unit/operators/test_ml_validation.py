"""data_validation: every rule on real frames, the error-rate tolerance, the report,
drift (KS, chi-square, PSI) against a reference, and the row-expression evaluator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from stageflow.operators.base import TaskFailed
from stageflow.operators.ml.expressions import ExpressionError, evaluate_rows, parse_rows
from stageflow.operators.ml.validation import DataValidation, ValidationParams
from support.ml import make_ctx, metadata

ROWS = pd.DataFrame(
    {
        "id": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "age": [34, 51, None, 28, 45, 39, 62, 19, 44, 70],
        "amount": [10.0, 250.5, 31.2, -4.0, 99.9, 12.0, 7.5, 560.0, 43.1, 8.8],
        "country": ["FR", "DE", "FR", "ES", "FR", "XX", "DE", "FR", "ES", "DE"],
        "email": ["a@x.io", "b@x.io", "bad", "c@x.io", "d@x.io"] * 2,
    }
)


def validate(tmp_path: Path, frame: Any = ROWS, **params: Any) -> tuple[Any, Any]:
    ctx = make_ctx(tmp_path, "validate")
    out = DataValidation().run(ValidationParams.model_validate(params), {"ingest": frame}, ctx)
    return out, ctx


def report(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "artifacts" / "runs" / "r1" / "validate" / "validation_report.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize(
    ("rules", "check", "failing"),
    [
        pytest.param({"not_null": ["age"]}, "not_null(age)", 1, id="not-null"),
        pytest.param({"ranges": {"amount": {"min": 0}}}, "range(amount)", 1, id="range-min"),
        pytest.param(
            {"ranges": {"amount": {"min": 0, "max": 300}}}, "range(amount)", 2, id="range-both"
        ),
        pytest.param(
            {"allowed_values": {"country": ["FR", "DE", "ES"]}},
            "allowed_values(country)",
            1,
            id="allowed",
        ),
        pytest.param({"unique": ["email"]}, "unique(email)", 10, id="unique"),
        pytest.param({"regex": {"email": r"[^@]+@[^@]+"}}, "regex(email)", 2, id="regex"),
        pytest.param(
            {"expressions": ["amount >= 0 and country != 'XX'"]},
            "expression(amount >= 0 and country != 'XX')",
            2,
            id="expression",
        ),
        pytest.param({"expressions": {"adult": "age >= 18"}}, "expression(adult)", 1, id="null"),
        pytest.param({"dtypes": {"age": "int"}}, "dtype(age)", 1, id="dtype"),
        pytest.param({"required_columns": ["income"]}, "required(income)", 1, id="required"),
        pytest.param({"min_rows": 20}, "min_rows", 1, id="min-rows"),
    ],
)
def test_each_rule_fails_with_its_count(
    tmp_path: Path, rules: dict[str, Any], check: str, failing: int
) -> None:
    with pytest.raises(TaskFailed, match=r"^data validation failed: 1 of 1 checks: ") as info:
        validate(tmp_path, **rules)
    assert check in str(info.value)
    [result] = report(tmp_path)["checks"]
    assert (result["check"], result["passed"], result["failing"]) == (check, False, failing)


def test_passing_rules_return_the_data_unchanged_and_report(tmp_path: Path) -> None:
    out, ctx = validate(
        tmp_path,
        required_columns=["id", "amount"],
        dtypes={"amount": "float", "id": "int", "country": "string"},
        unique=["id"],
        ranges={"id": {"min": 1, "max": 10}},
    )
    assert out is ROWS
    data = report(tmp_path)
    assert data["passed"] is True and data["rows"] == 10 and len(data["checks"]) == 7
    meta = metadata(ctx)
    assert meta["metrics"]["failed_checks"] == 0
    assert meta["writes"][0]["kind"] == "report"


def test_max_error_rate_tolerates_a_share_of_bad_rows(tmp_path: Path) -> None:
    out, ctx = validate(tmp_path, not_null="*", ranges={"amount": {"min": 0}}, max_error_rate=0.1)
    assert out is ROWS
    assert metadata(ctx)["metrics"]["error_rate"] == pytest.approx(0.2)  # rows 3 and 4
    with pytest.raises(TaskFailed, match=r"over max_error_rate 5\.0%"):
        validate(tmp_path, not_null="*", max_error_rate=0.05)


def test_samples_of_bad_rows_are_kept(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed):
        validate(tmp_path, allowed_values={"country": ["FR", "DE"]}, sample_rows=1)
    [check] = report(tmp_path)["checks"]
    assert check["failing"] == 3
    assert check["samples"] == [
        {"id": 4, "age": 28.0, "amount": -4.0, "country": "ES", "email": "c@x.io", "_row": 3}
    ]


def test_warn_lets_the_data_through(tmp_path: Path) -> None:
    out, ctx = validate(tmp_path, not_null=["age"], on_failure="warn")
    assert out is ROWS
    assert metadata(ctx)["metrics"]["failed_checks"] == 1


def test_seed_001_validation_rules_merge_with_top_level_rules(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match="2 of 2 checks") as info:
        validate(tmp_path, not_null=["age"], validation_rules={"unique": ["email"]})
    assert "not_null(age)" in str(info.value) and "unique(email)" in str(info.value)


def test_input_path_reads_the_data_itself(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "validate")
    params = ValidationParams.model_validate({"input_path": "sklearn:iris", "min_rows": 100})
    out = DataValidation().run(params, {}, ctx)
    assert len(out) == 150
    assert metadata(ctx)["reads"][0]["uri"] == "sklearn:iris"


# -- drift ----------------------------------------------------------------------


def _numeric(shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(shift, 1.0, 800), "y": rng.normal(0, 1, 800)})


def test_ks_finds_a_shifted_numeric_column(tmp_path: Path) -> None:
    reference = _numeric(0.0, 1)
    with pytest.raises(TaskFailed, match=r"drift: 1 of 2 columns drifted \(x\)"):
        _drift(tmp_path, _numeric(0.5, 2), reference)
    drift = {d["column"]: d for d in report(tmp_path)["drift"]}
    assert drift["x"]["test"] == "ks" and drift["x"]["drifted"] and drift["x"]["p_value"] < 1e-6
    assert not drift["y"]["drifted"]


def test_same_distribution_is_no_drift(tmp_path: Path) -> None:
    out, ctx = _drift(tmp_path, _numeric(0.0, 2), _numeric(0.0, 1))
    assert len(out) == 800
    assert metadata(ctx)["metrics"]["drifted_columns"] == 0


@pytest.mark.parametrize("test", ["chi2", "psi"])
def test_categorical_drift(tmp_path: Path, test: str) -> None:
    reference = pd.DataFrame({"c": ["a"] * 500 + ["b"] * 500})
    current = pd.DataFrame({"c": ["a"] * 850 + ["b"] * 150})
    with pytest.raises(TaskFailed, match="1 of 1 columns drifted"):
        _drift(tmp_path, current, reference, categorical_test=test)
    [result] = report(tmp_path)["drift"]
    assert result["test"] == test and result["drifted"]


def test_drift_reference_from_a_file(tmp_path: Path) -> None:
    _numeric(0.0, 1).to_parquet(tmp_path / "ref.parquet")
    out, ctx = validate(
        tmp_path,
        frame=_numeric(0.0, 2),
        drift={"reference": str(tmp_path / "ref.parquet"), "max_drifted_columns": 1},
    )
    assert len(out) == 800
    assert metadata(ctx)["reads"][0]["uri"] == str(tmp_path / "ref.parquet")


def _drift(tmp_path: Path, current: Any, reference: Any, **drift: Any) -> tuple[Any, Any]:
    ctx = make_ctx(tmp_path, "validate")
    params = ValidationParams.model_validate(
        {"input": "now", "drift": {"reference": "ref", **drift}}
    )
    out = DataValidation().run(params, {"now": current, "ref": reference}, ctx)
    return out, ctx


# -- expressions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("amount > 50", [False, True, False, False, True], id="compare"),
        pytest.param("1 <= amount < 100", [True, False, True, False, True], id="chained"),
        pytest.param("country in ['FR', 'DE']", [True, True, True, False, False], id="in"),
        pytest.param(
            "not (country == 'FR') or amount * 2 > 100", [False, True, False, True, True], id="bool"
        ),
        pytest.param("isnull(note)", [False, False, True, False, True], id="isnull"),
        pytest.param(
            "length(country) == 2 and lower(country) != 'es'", [True] * 3 + [False] * 2, id="fn"
        ),
        pytest.param("`unit price` % 2 == 0", [True, False, True, False, True], id="backticks"),
        pytest.param("abs(amount - 50) < 20", [False, False, True, False, True], id="abs"),
    ],
)
def test_row_expressions_are_vectorised(text: str, expected: list[bool]) -> None:
    frame = pd.DataFrame(
        {
            "amount": [10.0, 250.0, 31.0, 0.5, 60.0],
            "country": ["FR", "DE", "FR", "ES", "es"],
            "note": ["x", "y", None, "z", None],
            "unit price": [2, 3, 4, 5, 6],
        }
    )
    assert evaluate_rows(text, frame).tolist() == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("__import__('os').system('true')", id="call"),
        pytest.param("amount.__class__", id="attribute"),
        pytest.param("[x for x in amount]", id="comprehension"),
        pytest.param("lambda: 1", id="lambda"),
        pytest.param("amount[0]", id="subscript"),
        pytest.param("amount >", id="syntax"),
    ],
)
def test_anything_outside_the_whitelist_is_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        parse_rows(text)
    with pytest.raises(ValidationError):
        ValidationParams.model_validate({"expressions": [text]})


def test_an_unknown_column_in_an_expression_fails_that_check(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match=r"expression\(salary > 0\): unknown column 'salary'"):
        validate(tmp_path, expressions=["salary > 0"])
