"""data_validation's quality monitors on real frames: outliers (z-score, IQR,
IsolationForest), freshness of a column and of a file, completeness, the weighted
score, pandera schemas (YAML and module:object), the verdict's metrics, and every
parameter mistake reported by validation naming the task and the parameter."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stageflow.errors import InvalidSpec
from stageflow.operators.base import TaskFailed
from stageflow.operators.ml.validation import DataValidation, ValidationParams
from stageflow.operators.registry import imports_code
from stageflow.runtime.loading import load_pipeline
from stageflow.runtime.plan import check
from stageflow.spec.times import parse_instant
from support.ml import make_ctx, metadata

#: 30 ordinary values around 10 and one planted outlier (row 30).
VALUES = [10, 11, 9, 10, 12, 8, 10, 11, 9, 10] * 3 + [100]
AS_OF = "2026-03-03T00:00:00Z"
SCHEMA = textwrap.dedent(
    """\
    columns:
      age:
        dtype: int64
        checks:
          in_range: {min_value: 0, max_value: 120}
      country:
        checks:
          isin: [FR, DE]
    """
)


def report(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "artifacts" / "runs" / "r1" / "validate" / "validation_report.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def run(tmp_path: Path, frame: Any, **params: Any) -> tuple[Any, Any]:
    ctx = make_ctx(tmp_path, "validate", pipeline_dir=tmp_path)
    out = DataValidation().run(ValidationParams.model_validate(params), {"ingest": frame}, ctx)
    return out, ctx


def failed(tmp_path: Path, frame: Any, **params: Any) -> str:
    with pytest.raises(TaskFailed) as info:
        run(tmp_path, frame, **params)
    assert info.value.retryable is False  # the data's verdict is never retried
    return str(info.value)


# -- outliers -----------------------------------------------------------------------------


def test_zscore_flags_the_planted_value_and_reports_it_exactly(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": VALUES})
    message = failed(tmp_path, frame, outliers={"column": "x", "method": "zscore"})
    assert "outliers(x, zscore): 1 of 31 rows (3.2%) over max_fraction 1.0%" in message
    [result] = report(tmp_path)["checks"]
    values = np.array(VALUES, dtype=float)
    assert result == {
        "check": "outliers(x, zscore)",
        "passed": False,
        "failing": 1,
        "rate": 1 / 31,
        "detail": "1 of 31 rows (3.2%) over max_fraction 1.0%",
        "method": "zscore",
        "threshold": 3.0,
        "mean": pytest.approx(values.mean()),
        "std": pytest.approx(values.std(ddof=1)),
        "samples": [{"x": 100, "_row": 30}],
    }


def test_iqr_flags_outside_the_fences(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": VALUES})
    failed(tmp_path, frame, outliers={"column": "x", "method": "iqr"})
    [result] = report(tmp_path)["checks"]
    # Q1 = 9, Q3 = 11: fences at 9 - 1.5 * 2 and 11 + 1.5 * 2
    assert (result["lower"], result["upper"], result["failing"]) == (6.0, 14.0, 1)
    assert result["samples"] == [{"x": 100, "_row": 30}]
    # a wider k keeps 100 out, a tolerance lets one row through
    out, ctx = run(tmp_path, frame, outliers={"column": "x", "method": "iqr", "max_fraction": 0.05})
    assert out is frame
    assert metadata(ctx)["metrics"]["failing.outliers.x.iqr"] == 1


def test_zscore_and_iqr_check_every_numeric_column_by_default(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": VALUES, "y": [1.0] * 31, "label": ["a"] * 31})
    failed(tmp_path, frame, outliers=[{"method": "zscore"}, {"method": "iqr"}])
    checks = {c["check"]: (c["passed"], c["failing"]) for c in report(tmp_path)["checks"]}
    assert checks == {
        "outliers(x, zscore)": (False, 1),
        "outliers(y, zscore)": (True, 0),  # no spread: nothing is far
        "outliers(x, iqr)": (False, 1),
        "outliers(y, iqr)": (True, 0),
    }


def test_isolation_forest_flags_the_planted_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.normal(0, 1, (300, 2)), columns=["a", "b"])
    planted = pd.DataFrame({"a": [8.0, -9.0, 10.0], "b": [8.0, 7.0, -10.0]}, index=[300, 301, 302])
    frame = pd.concat([frame, planted])
    failed(
        tmp_path,
        frame,
        outliers={"columns": ["a", "b"], "method": "isolation_forest", "threshold": 0.01},
        sample_rows=10,
    )
    [result] = report(tmp_path)["checks"]
    assert result["check"] == "outliers(a, b, isolation_forest)"
    assert (result["method"], result["threshold"], result["seed"]) == ("isolation_forest", 0.01, 0)
    flagged = {s["_row"] for s in result["samples"]}
    assert {300, 301, 302} <= flagged and len(flagged) == result["failing"] <= 4


def test_outliers_on_a_missing_or_text_column_fail_that_check(tmp_path: Path) -> None:
    frame = pd.DataFrame({"label": ["a", "b"]})
    message = failed(tmp_path, frame, outliers={"columns": ["label", "nope"]})
    assert "outliers(nope, zscore): no column 'nope'" in message
    assert "outliers(label, zscore): is " in message and "not numeric" in message


# -- freshness --------------------------------------------------------------------------


def test_stale_timestamps_fail_freshness_at_48h_with_max_age_24h(tmp_path: Path) -> None:
    frame = pd.DataFrame({"ts": pd.date_range("2026-02-27", "2026-03-01", freq="D")})
    message = failed(tmp_path, frame, freshness={"column": "ts", "max_age": "24h", "as_of": AS_OF})
    assert "freshness(ts): newest 2026-03-01T00:00:00Z, 48.0h old, over max_age 24h" in message
    [result] = report(tmp_path)["checks"]
    assert result == {
        "check": "freshness(ts)",
        "passed": False,
        "failing": 1,
        "detail": "newest 2026-03-01T00:00:00Z, 48.0h old, over max_age 24h",
        "newest": "2026-03-01T00:00:00Z",
        "age_seconds": 172800.0,
        "max_age_seconds": 86400.0,
    }
    out, _ = run(tmp_path, frame, freshness={"column": "ts", "max_age": "3d", "as_of": AS_OF})
    assert out is frame


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(["2026-03-02T12:00:00Z", "2026-02-01T00:00:00Z", None], id="iso-text"),
        pytest.param(["2026-03-02T13:00:00+01:00", "garbage"], id="offset"),
        pytest.param([parse_instant("2026-03-02T12:00:00Z", "t"), 0.0], id="epoch-seconds"),
    ],
)
def test_freshness_reads_text_and_epoch_timestamps(tmp_path: Path, values: list[Any]) -> None:
    frame = pd.DataFrame({"ts": values})
    _, ctx = run(tmp_path, frame, freshness={"column": "ts", "max_age": "13h", "as_of": AS_OF})
    assert metadata(ctx)["metrics"]["passed"] == 1
    assert report(tmp_path)["checks"][0]["age_seconds"] == 12 * 3600


def test_freshness_of_a_file_is_its_modification_time(tmp_path: Path) -> None:
    data = tmp_path / "drop" / "orders.csv"
    data.parent.mkdir()
    data.write_text("a\n1\n")
    two_days = parse_instant(AS_OF, "t") - 48 * 3600
    os.utime(data, (two_days, two_days))
    frame = pd.DataFrame({"a": [1]})
    message = failed(
        tmp_path, frame, freshness={"path": "drop/orders.csv", "max_age": "1d", "as_of": AS_OF}
    )
    assert "freshness(drop/orders.csv): newest 2026-03-01T00:00:00Z, 48.0h old" in message
    gone = failed(tmp_path, frame, freshness={"path": "drop/none.csv", "max_age": "1d"})
    assert f"freshness(drop/none.csv): no file at {tmp_path / 'drop' / 'none.csv'}" in gone


def test_freshness_of_an_fsspec_object_written_just_now(tmp_path: Path) -> None:
    import fsspec

    with fsspec.open("memory://quality-test/fresh.csv", "wb") as handle:
        handle.write(b"a\n1\n")
    rule = {"path": "memory://quality-test/fresh.csv", "max_age": "1h"}  # measured now
    _, ctx = run(tmp_path, pd.DataFrame({"a": [1]}), freshness=rule)
    assert metadata(ctx)["metrics"]["passed"] == 1
    assert 0 <= report(tmp_path)["checks"][0]["age_seconds"] < 60


# -- completeness and the score ---------------------------------------------------------------


def test_completeness_counts_missing_cells(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.0, None, 3.0, 4.0, None], "b": ["x"] * 5})
    message = failed(tmp_path, frame, completeness={"min": 0.95})
    assert "completeness: 80.0% of 10 cells present, under min 95.0%" in message
    [result] = report(tmp_path)["checks"]
    assert result["columns"] == {"a": 0.6, "b": 1.0} and result["failing"] == 2
    out, ctx = run(tmp_path, frame, completeness={"columns": ["b"], "min": 0.95})
    assert out is frame and metadata(ctx)["metrics"]["completeness"] == 1.0


def test_quality_score_weighs_the_components(tmp_path: Path) -> None:
    # 20 rows: 3 break a range rule (validity 0.85), 1 is an outlier (outliers 0.95),
    # 4 of 40 cells are missing (completeness 0.9), the newest timestamp is 36h old
    # with max_age 24h (freshness 1 - 12/24 = 0.5)
    frame = pd.DataFrame(
        {
            "x": [10.0, 11, 9, 10, 12, 8, 10, 11, 9, 10, 10, 11, 9, 10, 12, 8, 10, 11, 9, 500],
            "ts": ["2026-03-01T12:00:00Z"] + [None] * 4 + ["2026-02-01T00:00:00Z"] * 15,
        }
    )
    weights = {"completeness": 0.4, "validity": 0.3, "freshness": 0.2, "outliers": 0.1}
    params: dict[str, Any] = {
        "ranges": {"x": {"max": 11}},
        "max_error_rate": 1.0,
        "outliers": {"column": "x", "method": "iqr", "max_fraction": 1.0},
        "freshness": {"column": "ts", "max_age": "1d", "as_of": AS_OF},
        "completeness": {"min": 0.5},
    }
    expected = 0.4 * 0.9 + 0.3 * 0.85 + 0.2 * 0.5 + 0.1 * 0.95
    message = failed(tmp_path, frame, quality_score={"weights": weights, "min": 0.9}, **params)
    assert f"quality_score: score {expected:.3f} (" in message and "under min 0.9" in message
    score = report(tmp_path)["checks"][-1]
    assert score["components"] == pytest.approx(
        {"completeness": 0.9, "validity": 0.85, "freshness": 0.5, "outliers": 0.95}
    )
    assert score["score"] == pytest.approx(expected)
    lower = {"weights": weights, "min": 0.8}
    _, ctx = run(tmp_path, frame, quality_score=lower, on_violation="warn", **params)
    metrics = metadata(ctx)["metrics"]
    assert metrics["quality_score"] == pytest.approx(expected)
    # the score passes its min; the task's verdict still counts the stale timestamp
    assert metrics["failing.quality_score"] == 0 and metrics["failing.freshness.ts"] == 1
    assert metrics["passed"] == 0


# -- pandera --------------------------------------------------------------------------------


def test_a_pandera_yaml_schema_catches_a_bad_column(tmp_path: Path) -> None:
    frame = pd.DataFrame({"age": [30, 200, 41, -1], "country": ["FR", "DE", "XX", "FR"]})
    (tmp_path / "orders.yaml").write_text(SCHEMA)
    message = failed(tmp_path, frame, pandera={"file": "orders.yaml"})
    assert "2 of 2 checks" in message
    checks = report(tmp_path)["checks"]
    assert checks == [
        {
            "check": "pandera(age: in_range(0, 120))",
            "passed": False,
            "failing": 2,
            "detail": "2 failure cases: 200, -1",
            "samples": [{"failure_case": 200, "_row": 1}, {"failure_case": -1, "_row": 3}],
            "rate": 0.5,
        },
        {
            "check": "pandera(country: isin(['FR', 'DE']))",
            "passed": False,
            "failing": 1,
            "detail": "1 failure case: XX",
            "samples": [{"failure_case": "XX", "_row": 2}],
            "rate": 0.25,
        },
    ]
    good = pd.DataFrame({"age": [30, 41], "country": ["FR", "DE"]})
    out, _ = run(tmp_path, good, pandera={"yaml": SCHEMA})
    assert out is good
    assert report(tmp_path)["checks"] == [
        {
            "check": "pandera",
            "passed": True,
            "failing": 0,
            "detail": "the schema's 2 columns and their checks hold",
        }
    ]


def test_column_names_may_start_with_an_underscore(tmp_path: Path) -> None:
    frame = pd.DataFrame({"_id": [1, 2], "user__name": ["a", "b"]})
    schema = "columns:\n  _id: {dtype: int64, unique: true}\n  user__name: {dtype: str}\n"
    out, ctx = run(tmp_path, frame, pandera={"yaml": schema})
    assert out is frame and metadata(ctx)["metrics"]["passed"] == 1


def test_a_pandera_schema_names_a_missing_column(tmp_path: Path) -> None:
    message = failed(tmp_path, pd.DataFrame({"country": ["FR"]}), pandera={"yaml": SCHEMA})
    assert "pandera(column_in_dataframe): 1 failure case: age" in message


def test_a_pandera_model_from_module_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "quality_schemas_mod.py").write_text(
        textwrap.dedent(
            """\
            import pandera.pandas as pa

            class Orders(pa.DataFrameModel):
                amount: float = pa.Field(ge=0)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    frame = pd.DataFrame({"amount": [1.5, -2.0]})
    message = failed(tmp_path, frame, pandera={"call": "quality_schemas_mod:Orders"})
    assert "pandera(amount: greater_than_or_equal_to(0)): 1 failure case: -2.0" in message


def test_without_pandera_the_rule_names_its_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandera.pandas", None)  # import raises ImportError
    params = ValidationParams.model_validate({"pandera": {"yaml": SCHEMA}})  # YAML checked
    ctx = make_ctx(tmp_path, "validate")
    with pytest.raises(TaskFailed, match=r"pip install 'stageflow\[pandera\]'"):
        DataValidation().run(params, {"ingest": pd.DataFrame({"age": [1]})}, ctx)


# -- the verdict -----------------------------------------------------------------------------


def test_on_violation_warn_records_the_verdict_as_metrics(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": VALUES, "y": [None] + [1.0] * 30})
    out, ctx = run(
        tmp_path,
        frame,
        not_null=["y"],
        outliers={"column": "x"},
        on_violation="warn",
    )
    assert out is frame
    metrics = metadata(ctx)["metrics"]
    assert metrics == {
        "passed": 0,
        "error_rate": pytest.approx(1 / 31),
        "checks": 2,
        "failed_checks": 2,
        "drifted_columns": 0,
        "failing.not_null.y": 1,
        "failing.outliers.x.zscore": 1,
    }


# -- mistakes found before the run -------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "field", "words"),
    [
        pytest.param(
            {"outliers": {"method": "lof"}},
            "parameters.outliers.0.method",
            "'zscore', 'iqr' or 'isolation_forest'",
            id="method",
        ),
        pytest.param(
            {"outliers": {"method": "isolation_forest", "threshold": 0.9}},
            "parameters.outliers.0",
            "threshold 0.9 is isolation_forest's contamination, a share of rows in (0, 0.5]",
            id="contamination",
        ),
        pytest.param(
            {"outliers": {"threshold": -1}},
            "parameters.outliers.0.threshold",
            "greater than 0",
            id="threshold",
        ),
        pytest.param(
            {"freshness": {"column": "ts", "max_age": "a day"}},
            "parameters.freshness.0",
            "max_age 'a day' is not a duration; give seconds or a number with a unit",
            id="duration",
        ),
        pytest.param(
            {"freshness": {"max_age": "1d"}},
            "parameters.freshness.0",
            "give column (a timestamp column) or path (a file), one of them",
            id="freshness-what",
        ),
        pytest.param(
            {
                "quality_score": {
                    "weights": {"completeness": 0.5, "validity": 0.4},
                }
            },
            "parameters.quality_score.weights",
            "the weights sum to 0.9; make them sum to 1",
            id="weights",
        ),
        pytest.param(
            {"quality_score": {"weights": {"freshness": 1.0}}},
            "parameters",
            "quality_score.weights.freshness is 1 but there is no freshness rule",
            id="weight-without-rule",
        ),
        pytest.param(
            {"pandera": {"yaml": "columns: [a, "}},
            "parameters.pandera",
            "the pandera schema is not YAML",
            id="yaml-syntax",
        ),
        pytest.param(
            {"pandera": {"yaml": "columns:\n  a:\n    checks:\n      no_such_check: 1\n"}},
            "parameters.pandera",
            "the pandera schema does not load: AttributeError",
            id="yaml-check",
        ),
        pytest.param(
            {"pandera": {"yaml": "columns:\n  a:\n    checks:\n      __init__: 1\n"}},
            "parameters.pandera",
            "names '__init__'; a check name may not start with '_'",
            id="dunder",
        ),
        pytest.param(
            {"pandera": {"yaml": "columns:\n  a:\n    _private: 1\n"}},
            "parameters.pandera",
            "names '_private'; a check name may not start with '_'",
            id="private-flat",
        ),
        pytest.param(
            {"pandera": {"file": "no_such_schema.yaml"}},
            "parameters.pandera.file",
            "pandera.file 'no_such_schema.yaml' does not exist",
            id="file",
        ),
        pytest.param(
            {"pandera": {"call": "not a reference"}},
            "parameters.pandera",
            "is not module:object",
            id="call",
        ),
        pytest.param(
            {"on_violation": "skip"},
            "parameters.on_violation",
            "'fail', 'warn' or 'skip_downstream'",
            id="on-violation",
        ),
    ],
)
def test_parameter_mistakes_are_validation_problems(
    tmp_path: Path, parameters: dict[str, Any], field: str, words: str
) -> None:
    spec = tmp_path / "quality.yaml"
    import yaml

    spec.write_text(
        yaml.safe_dump(
            {
                "name": "quality",
                "tasks": [
                    {"id": "validate", "operator": "data_validation", "parameters": parameters}
                ],
            }
        )
    )
    with pytest.raises(InvalidSpec) as info:
        check(load_pipeline(str(spec)))
    [problem] = info.value.problems
    assert (problem.task, problem.field) == ("validate", field)
    assert words in problem.message


def test_a_pandera_call_imports_code_so_it_needs_admin_over_the_api(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: p\ntasks:\n"
        "  - {id: v, operator: data_validation, parameters: {pandera: {call: 'm:schema'}}}\n"
        "  - {id: w, operator: data_validation, parameters: {pandera: {file: s.yaml}}}\n"
    )
    pipeline = load_pipeline(str(spec))
    assert [imports_code(t) for t in pipeline.tasks] == [True, False]
