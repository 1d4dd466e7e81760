"""data_processing on real pandas DataFrames: every step, the short forms, the
expressions checked when the spec is validated, and the failures a run meets
(unknown columns, values that do not cast) named with the columns there are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from stageflow.operators import registry
from stageflow.operators.base import TaskFailed
from stageflow.operators.ml.processing import DataProcessing, ProcessingParams, apply
from stageflow.operators.ml.registry_ops import ModelDeployment
from stageflow.spec.models import Task
from support.ml import make_ctx, metadata

SALES = pd.DataFrame(
    {
        "order_id": [1, 2, 2, 3, 4, 5],
        "region": ["east", "west", "west", "east", None, "west"],
        "quantity": ["3", "1", "1", "x", "2", "4"],
        "unit_price": [2.5, 10.0, 10.0, 4.0, 7.0, np.nan],
    }
)


def steps(*items: Any) -> list[Any]:
    return ProcessingParams.model_validate({"steps": list(items)}).steps


def run_steps(frame: pd.DataFrame, *items: Any) -> pd.DataFrame:
    for step in steps(*items):
        frame = apply(step, frame)
    return frame


def failure(frame: pd.DataFrame, *items: Any) -> str:
    with pytest.raises(TaskFailed) as info:
        run_steps(frame, *items)
    return str(info.value)


def problems(
    parameters: dict[str, Any], upstream: tuple[str, ...] = ("ingest",), after: tuple[str, ...] = ()
) -> list[tuple[str | None, str]]:
    task = Task(
        id="clean",
        operator="data_processing",
        parameters=parameters,
        upstream=list(upstream),
        after=list(after),
    )
    return [(p.field, p.message) for p in registry.task_problems(task, parameters, {})]


# -- each step ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        pytest.param({"op": "drop_missing"}, [1, 2, 2, 3], id="drop_missing-any"),
        pytest.param({"op": "drop_missing", "subset": ["region"]}, [1, 2, 2, 3, 5], id="subset"),
        pytest.param(
            {"op": "drop_missing", "subset": ["region", "unit_price"], "how": "all"},
            [1, 2, 2, 3, 4, 5],
            id="how-all",
        ),
        pytest.param({"op": "drop_duplicates"}, [1, 2, 3, 4, 5], id="drop_duplicates"),
        pytest.param(
            {"op": "drop_duplicates", "subset": ["region"], "keep": "last"},
            [3, 4, 5],
            id="drop_duplicates-last",
        ),
        pytest.param(
            {"op": "drop_duplicates", "subset": ["order_id"], "keep": "none"},
            [1, 3, 4, 5],
            id="drop_duplicates-none",
        ),
        pytest.param(
            {"op": "filter", "expr": "unit_price >= 4 and region in ['east', 'west']"},
            [2, 2, 3],
            id="filter",
        ),
        pytest.param({"op": "filter", "expr": "isnull(region)"}, [4], id="filter-isnull"),
    ],
)
def test_row_steps_keep_the_expected_rows(step: dict[str, Any], expected: list[int]) -> None:
    out = run_steps(SALES, step)
    assert out["order_id"].tolist() == expected
    assert list(out.columns) == list(SALES.columns)


def test_derive_computes_a_column_from_an_expression() -> None:
    out = run_steps(
        SALES,
        {"op": "cast", "dtypes": {"quantity": "float"}, "errors": "coerce"},
        {"op": "derive", "column": "revenue", "expr": "quantity * unit_price"},
        {"op": "derive", "column": "loud", "expr": "upper(region)"},
        {"op": "derive", "column": "source", "expr": "'shop'"},
    )
    assert out["revenue"].tolist()[:3] == [7.5, 10.0, 10.0]
    assert np.isnan(out["revenue"].iloc[3])  # 'x' became missing, so does its revenue
    assert out["loud"].tolist()[:2] == ["EAST", "WEST"]
    assert set(out["source"]) == {"shop"}


def test_derive_replaces_an_existing_column() -> None:
    out = run_steps(SALES, {"op": "derive", "column": "unit_price", "expr": "unit_price * 2"})
    assert out["unit_price"].tolist()[:2] == [5.0, 20.0]


@pytest.mark.parametrize(
    ("dtype", "values", "expected", "kind"),
    [
        pytest.param("int", ["1", "2", None], [1, 2, pd.NA], "Int64", id="int"),
        pytest.param("float", ["1.5", "2", None], [1.5, 2.0, np.nan], "float64", id="float"),
        pytest.param("string", [1, 2, 3], ["1", "2", "3"], "string", id="string"),
        pytest.param("bool", ["yes", "False", "1"], [True, False, True], "boolean", id="bool"),
        pytest.param("category", ["a", "b", "a"], ["a", "b", "a"], "category", id="category"),
    ],
)
def test_cast_converts_each_type(
    dtype: str, values: list[Any], expected: list[Any], kind: str
) -> None:
    out = run_steps(pd.DataFrame({"v": values}), {"op": "cast", "dtypes": {"v": dtype}})
    assert str(out["v"].dtype) == kind
    got = out["v"].tolist()
    assert [None if pd.isna(g) else g for g in got] == [
        None if e is pd.NA or (isinstance(e, float) and np.isnan(e)) else e for e in expected
    ]


def test_cast_to_datetime() -> None:
    out = run_steps(
        pd.DataFrame({"day": ["2024-01-02", "2024-03-04"]}),
        {"op": "cast", "dtypes": {"day": "datetime"}},
    )
    assert out["day"].dt.month.tolist() == [1, 3]


def test_cast_refuses_a_value_that_is_not_of_the_type_unless_coerced() -> None:
    message = failure(SALES, {"op": "cast", "dtypes": {"quantity": "int"}})
    assert message == (
        "data_processing: column 'quantity' has 1 value that is not int (first: 'x' at row 3); "
        "fix the data, or add `errors: coerce` to the step to make them missing "
        "(`- cast: {quantity: int, errors: coerce}`)"
    )
    out = run_steps(SALES, {"op": "cast", "dtypes": {"quantity": "int"}, "errors": "coerce"})
    assert out["quantity"].isna().tolist() == [False, False, False, True, False, False]
    fractions = failure(pd.DataFrame({"v": [1.5]}), {"op": "cast", "dtypes": {"v": "int"}})
    assert "1 value that is not int (first: 1.5 at row 0)" in fractions


@pytest.mark.parametrize(
    ("index", "row"),
    [
        pytest.param(pd.Index([4, 5, 6]), "row 5", id="int64-label"),
        pytest.param(pd.Index([4, 5, 6], dtype="uint64"), "row 5", id="uint64-label"),
        pytest.param(pd.Index([1.0, 2.5, 3.0]), "row 2.5", id="float-label"),
        pytest.param(pd.Index(["a", "b", "c"]), "row 'b'", id="text-label"),
    ],
)
def test_cast_names_the_row_as_written(index: pd.Index, row: str) -> None:
    frame = pd.DataFrame({"unit_price": ["1.5", "abc", "2"]}, index=index)
    message = failure(frame, {"op": "cast", "dtypes": {"unit_price": "float"}})
    assert f"(first: 'abc' at {row});" in message
    assert "np." not in message


def test_the_advice_of_a_cast_error_is_a_step_that_validates() -> None:
    frame = pd.DataFrame({"quantity": ["1", "x"], "unit_price": ["1.5", "abc"]})
    short = {"cast": {"quantity": "int", "unit_price": "float", "errors": "coerce"}}
    assert problems({"steps": [short]}) == []
    assert steps(short) == steps(
        {"op": "cast", "dtypes": {"quantity": "int", "unit_price": "float"}, "errors": "coerce"}
    )
    out = run_steps(frame, short)
    assert out["quantity"].isna().tolist() == [False, True]
    assert out["unit_price"].isna().tolist() == [False, True]
    # a column named `errors` is still a column: it takes a type
    assert steps({"cast": {"errors": "int"}})[0].dtypes == {"errors": "int"}


def test_a_backticked_column_is_shown_as_written() -> None:
    frame = pd.DataFrame({"unit_price": ["1.5", "abc"]})
    message = failure(frame, {"filter": "`unit_price` > 2"})
    assert "cannot compare `unit_price` > 2:" in message
    assert "_col" not in message


def test_fill_missing_by_value_per_column_and_strategy() -> None:
    by_value = run_steps(SALES, {"op": "fill_missing", "values": {"region": "unknown"}})
    assert by_value["region"].tolist()[4] == "unknown"
    assert np.isnan(by_value["unit_price"].iloc[5])
    median = run_steps(SALES, {"op": "fill_missing", "strategy": "median"})
    assert median["unit_price"].iloc[5] == 7.0  # numeric columns only, by default
    assert median["region"].isna().sum() == 1
    mode = run_steps(SALES, {"op": "fill_missing", "strategy": "mode", "columns": ["region"]})
    assert mode["region"].iloc[4] == "west"
    constant = run_steps(SALES, {"op": "fill_missing", "value": 0, "columns": ["unit_price"]})
    assert constant["unit_price"].iloc[5] == 0


def test_rename_select_drop_and_sort() -> None:
    out = run_steps(
        SALES,
        {"op": "rename", "columns": {"unit_price": "price"}},
        {"op": "select", "columns": ["price", "order_id"]},
        {"op": "sort", "by": ["price", "order_id"], "ascending": [False, True]},
    )
    assert list(out.columns) == ["price", "order_id"]
    assert out["order_id"].tolist() == [2, 2, 4, 3, 1, 5]  # missing last
    dropped = run_steps(SALES, {"op": "drop", "columns": ["quantity", "region"]})
    assert list(dropped.columns) == ["order_id", "unit_price"]


def test_aggregate_groups_with_whitelisted_functions() -> None:
    out = run_steps(
        SALES.dropna(subset=["region"]),
        {
            "op": "aggregate",
            "by": "region",
            "aggregations": {"unit_price": ["sum", "mean", "max"], "order_id": "nunique"},
        },
    )
    assert list(out.columns) == [
        "region",
        "unit_price_sum",
        "unit_price_mean",
        "unit_price_max",
        "order_id",
    ]
    east = out.set_index("region").loc["east"]
    assert (east["unit_price_sum"], east["unit_price_mean"], east["order_id"]) == (6.5, 3.25, 2)
    west = out.set_index("region").loc["west"]
    assert (west["unit_price_sum"], west["unit_price_max"], west["order_id"]) == (20.0, 10.0, 2)


def test_aggregate_without_by_gives_one_row_even_for_no_rows() -> None:
    spec = {"op": "aggregate", "aggregations": {"unit_price": ["sum", "size"], "region": "first"}}
    out = run_steps(SALES, spec)
    assert out.to_dict("records") == [
        {"unit_price_sum": 33.5, "unit_price_size": 6, "region": "east"}
    ]
    empty = run_steps(SALES.iloc[0:0], spec)
    assert empty.to_dict("records") == [
        {"unit_price_sum": 0.0, "unit_price_size": 0, "region": None}
    ]


def test_short_forms_mean_the_long_forms() -> None:
    short = steps(
        "drop_duplicates",
        {"drop_missing": ["region"]},
        {"filter": "unit_price > 1"},
        {"cast": {"unit_price": "float"}},
        {"rename": {"unit_price": "price"}},
        {"select": ["region", "price"]},
        {"group_by": {"by": "region", "aggregations": {"price": "sum"}}},
    )
    long = steps(
        {"op": "drop_duplicates"},
        {"op": "drop_missing", "subset": ["region"]},
        {"op": "filter", "expr": "unit_price > 1"},
        {"op": "cast", "dtypes": {"unit_price": "float"}},
        {"op": "rename", "columns": {"unit_price": "price"}},
        {"op": "select", "columns": ["region", "price"]},
        {"op": "aggregate", "by": ["region"], "aggregations": {"price": "sum"}},
    )
    assert short == long


# -- checked when the spec is validated ------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "field", "needle"),
    [
        pytest.param(
            {"steps": [{"filter": "__import__('os').system('true')"}]},
            "parameters.steps.0.filter.expr",
            "only the functions abs, isnull, notnull, length, lower, upper may be called",
            id="attribute-call",
        ),
        pytest.param(
            {"steps": [{"filter": "region.startswith('e')"}]},
            "parameters.steps.0.filter.expr",
            "only the functions abs, isnull, notnull, length, lower, upper may be called",
            id="method-call",
        ),
        pytest.param(
            {"steps": [{"filter": "(lambda: 1) == 0"}]},
            "parameters.steps.0.filter.expr",
            "Lambda is not allowed",
            id="lambda",
        ),
        pytest.param(
            {"steps": [{"derive": {"column": "r", "expr": "quantity *"}}]},
            "parameters.steps.0.derive.expr",
            "cannot parse 'quantity *'",
            id="syntax",
        ),
        pytest.param(
            {"steps": [{"derive": {"column": "r", "expr": "[x for x in a]"}}]},
            "parameters.steps.0.derive.expr",
            "ListComp is not allowed",
            id="comprehension",
        ),
        pytest.param(
            {"steps": [{"aggregate": {"by": "a", "aggregations": {"b": "summ"}}}]},
            "parameters.steps.0.aggregate.aggregations",
            "unknown aggregation 'summ' for column 'b'; did you mean 'sum'?",
            id="aggregation-typo",
        ),
        pytest.param(
            {"steps": [{"aggregate": {"aggregations": {"b": "eval"}}}]},
            "parameters.steps.0.aggregate.aggregations",
            "unknown aggregation 'eval' for column 'b'; use count, size, nunique, sum",
            id="aggregation-not-whitelisted",
        ),
        pytest.param(
            {"steps": [{"aggregate": {"by": ["b"], "aggregations": {"b": "max"}}}]},
            "parameters.steps.0.aggregate",
            "aggregate makes the column 'b' twice",
            id="aggregation-name-clash",
        ),
        pytest.param(
            {"steps": [{"drop_dupes": None}]},
            "parameters.steps.0",
            "unknown step 'drop_dupes'; did you mean 'drop_duplicates'?",
            id="unknown-step",
        ),
        pytest.param(
            {"steps": ["drop_missing", {"op": "pivot"}]},
            "parameters.steps.1",
            "unknown step 'pivot'; the steps are drop_missing, fill_missing",
            id="unknown-op",
        ),
        pytest.param(
            {"steps": [{"filter": "a > 1", "select": ["a"]}]},
            "parameters.steps.0",
            "step 1 names 2 kinds of step (filter, select); give each its own item",
            id="two-kinds-in-one",
        ),
        pytest.param(
            {"steps": [{"filtr": "a > 1"}]},
            "parameters.steps.0",
            "unknown step 'filtr'; did you mean 'filter'? the steps are drop_missing, ",
            id="misspelt-step-with-text",
        ),
        pytest.param(
            {"steps": [{"fillna": {"valu": 0}}]},
            "parameters.steps.0.fill_missing.valu",
            "step 1 (fill_missing) has no parameter 'valu'; did you mean 'value'?",
            id="misspelt-parameter",
        ),
        pytest.param(
            {"steps": ["drop_missing", {"sort": {"by": "a", "extra": 1}}]},
            "parameters.steps.1.sort.extra",
            "step 2 (sort) has no parameter 'extra'; it takes: by, ascending",
            id="extra-parameter",
        ),
        pytest.param(
            {"steps": [{"derive": {"expr": "a + 1"}}]},
            "parameters.steps.0.derive.column",
            "step 1 (derive) needs parameter 'column'; add it: `- derive: {column: ...}`",
            id="missing-parameter",
        ),
        pytest.param(
            {"steps": [{"aggregate": {"aggregations": {"b": "avg"}}}]},
            "parameters.steps.0.aggregate.aggregations",
            "unknown aggregation 'avg' for column 'b'; did you mean 'mean'?",
            id="aggregation-synonym",
        ),
        pytest.param(
            {"steps": [{"fill_missing": {"columns": ["a"]}}]},
            "parameters.steps.0.fill_missing",
            "fill_missing takes exactly one of `value`, `values` (per column) or `strategy`",
            id="fill-nothing",
        ),
        pytest.param(
            {"steps": [{"cast": {"a": "integer"}}]},
            "parameters.steps.0.cast.dtypes.a",
            "'int', 'float', 'string', 'bool', 'datetime' or 'category'",
            id="unknown-dtype",
        ),
        pytest.param(
            {"source": "sqlite:///x.db"},
            "parameters.source",
            "read it with a `data_ingestion` task",
            id="database-source",
        ),
        pytest.param(
            {"steps": [{"derive": {"column": "r", "expr": "quantity + 9**9**9"}}]},
            "parameters.steps.0.derive.expr",
            "9 ** 9 ** 9 raises a power to a power (write a single power, with an exponent "
            "from -64 to 64) in 'quantity + 9**9**9'",
            id="power-tower",
        ),
        pytest.param(
            {"steps": [{"filter": "'a' * 10**9 == region"}]},
            "parameters.steps.0.filter.expr",
            "would make a text or list of 1,000,000,000 characters or items (the limit is "
            "1,000,000 per value)",
            id="huge-string",
        ),
        pytest.param(
            {"stepz": []},
            "parameters.stepz",
            "operator 'data_processing' has no parameter 'stepz'; did you mean 'steps'?",
            id="unknown-parameter",
        ),
    ],
)
def test_bad_parameters_are_named_when_the_spec_is_validated(
    parameters: dict[str, Any], field: str, needle: str
) -> None:
    found = problems(parameters)
    assert len(found) == 1, found
    assert found[0][0] == field
    assert needle in found[0][1]


def test_every_problem_of_the_steps_is_reported_at_once() -> None:
    found = problems(
        {"steps": ["dedupe", {"filter": "a >"}, {"aggregate": {"aggregations": {"a": "avg"}}}]}
    )
    assert [field for field, _ in found] == [
        "parameters.steps.0",
        "parameters.steps.1.filter.expr",
        "parameters.steps.2.aggregate.aggregations",
    ]


def test_good_parameters_have_no_problems() -> None:
    assert problems({}) == []
    assert problems({"steps": ["drop_missing", {"filter": "`unit price` > 0"}]}) == []


@pytest.mark.parametrize(
    ("parameters", "upstream", "after", "expected"),
    [
        pytest.param(
            {"steps": ["drop_missing"]},
            (),
            (),
            (
                "parameters.source",
                "operator 'data_processing' has no DataFrame to process: set `source:` (a "
                "path, URL or sklearn:NAME) or list an upstream task that produces a DataFrame "
                "under `upstream:`",
            ),
            id="nothing-to-process",
        ),
        pytest.param(
            {},
            (),
            ("ingest",),
            (
                "parameters.source",
                "has no DataFrame to process (`after: [ingest]` only orders tasks; it passes no "
                "data): set `source:`",
            ),
            id="after-passes-no-data",
        ),
        pytest.param(
            {"input": "ingset"},
            ("ingest",),
            (),
            (
                "parameters.input",
                "input 'ingset' is not a data upstream of this task (upstream: ingest); name "
                "one of them or add it under `upstream:`",
            ),
            id="input-not-upstream",
        ),
        pytest.param({"source": "sklearn:iris"}, (), (), None, id="source"),
        pytest.param({}, ("ingest",), (), None, id="upstream"),
        pytest.param({"input": "b"}, ("a", "b"), (), None, id="input-upstream"),
        pytest.param({"source": "x.csv", "input": "a"}, (), (), None, id="source-wins"),
    ],
)
def test_a_task_without_data_fails_validation(
    parameters: dict[str, Any],
    upstream: tuple[str, ...],
    after: tuple[str, ...],
    expected: tuple[str, str] | None,
) -> None:
    found = problems(parameters, upstream, after)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1, found
        assert found[0][0] == expected[0]
        assert expected[1] in found[0][1]


# -- failures met on the data ---------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "needle"),
    [
        pytest.param(
            {"op": "drop_missing", "subset": ["regoin"]},
            "data_processing: missing column 'regoin'; the data has: order_id, region, quantity, "
            "unit_price",
            id="subset",
        ),
        pytest.param(
            {"op": "select", "columns": ["order_id", "price", "qty"]},
            "missing columns 'price', 'qty'",
            id="select",
        ),
        pytest.param(
            {"op": "cast", "dtypes": {"price": "float"}}, "missing column 'price'", id="cast"
        ),
        pytest.param(
            {"op": "aggregate", "by": ["country"], "aggregations": {"unit_price": "sum"}},
            "missing column 'country'",
            id="aggregate-by",
        ),
        pytest.param(
            {"op": "filter", "expr": "price > 1"},
            "data_processing: unknown column 'price' in 'price > 1'; the data has: order_id, "
            "region, quantity, unit_price",
            id="filter",
        ),
        pytest.param(
            {"op": "derive", "column": "r", "expr": "qty * unit_price"},
            "unknown column 'qty' in 'qty * unit_price'",
            id="derive",
        ),
        pytest.param(
            {"op": "aggregate", "aggregations": {"region": "mean"}},
            "data_processing: cannot aggregate: TypeError",
            id="mean-of-text",
        ),
    ],
)
def test_what_the_data_lacks_is_named(step: dict[str, Any], needle: str) -> None:
    assert needle in failure(SALES, step)


# -- the operator -----------------------------------------------------------------------


def test_the_operator_takes_the_upstream_frame_and_records_rows_per_step(
    tmp_path: Path,
) -> None:
    ctx = make_ctx(tmp_path, "clean")
    params = ProcessingParams.model_validate(
        {"steps": ["drop_duplicates", {"filter": "unit_price > 2"}]}
    )
    out = DataProcessing().run(params, {"ingest": SALES}, ctx)
    assert out["order_id"].tolist() == [1, 2, 3, 4]
    meta = metadata(ctx)
    assert meta["info"]["steps"] == [
        {"step": 1, "op": "drop_duplicates", "rows_in": 6, "rows_out": 5},
        {"step": 2, "op": "filter", "rows_in": 5, "rows_out": 4},
    ]
    assert (meta["metrics"]["rows_in"], meta["metrics"]["rows_out"]) == (6, 4)
    assert meta["reads"][0]["uri"] == "task:ingest"


def test_the_operator_reads_a_source_instead(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "clean")
    params = ProcessingParams.model_validate(
        {
            "source": "sklearn:iris",
            "steps": [
                {"aggregate": {"by": "target", "aggregations": {"petal length (cm)": "mean"}}}
            ],
        }
    )
    out = DataProcessing().run(params, {}, ctx)
    assert out["target"].tolist() == [0, 1, 2]
    assert out["petal length (cm)"].round(3).tolist() == [1.462, 4.26, 5.552]
    assert metadata(ctx)["reads"][0]["uri"] == "sklearn:iris"


def test_the_operator_without_input_says_what_it_needs(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match="data_processing: needs a DataFrame from an upstream"):
        DataProcessing().run(ProcessingParams(), {}, make_ctx(tmp_path))


def test_registry_knows_data_processing_and_deployment() -> None:
    assert registry.get("data_processing") is DataProcessing
    assert "data_processing" in registry.names()
    assert registry.get("deployment") is ModelDeployment  # seed 002's TaskType.DEPLOYMENT
    with pytest.raises(ValidationError):
        ProcessingParams.model_validate({"steps": "drop_missing"})
