"""The row-expression language's bounds: no formula of ``filter``, ``derive`` or a
``data_validation`` expression may hold the CPU or fill memory. What needs no data
is refused when the spec is validated; what depends on the data, before the
operation runs. Errors show the expression as written (backticked names too)."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from pydantic import ValidationError

from stageflow.operators.ml import expressions
from stageflow.operators.ml.expressions import ExpressionError, evaluate_values, parse_rows
from stageflow.operators.ml.validation import ValidationParams

BIG = 10**1000  # a Python integer of 3,322 bits: below the bound, its square is not

FRAME = pd.DataFrame(
    {
        "quantity": [1, 2, 3],
        "x": [3.0, 1.0, 0.5],
        "y": [4.0, 1.0, 0.5],
        "region": ["east", "west", "north"],
        "times": [1, 2, 2_000_000],
        "big": pd.Series([10**30, 2, 3], dtype=object),
        "huge": pd.Series([BIG, 1, 1], dtype=object),
        "mixed": pd.Series(["%s", 1, None], dtype=object),
        "unit price": ["1.5", "abc", "2"],
    }
)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param(
            "quantity + 9**9**9",
            "9 ** 9 ** 9 raises a power to a power (write a single power, with an exponent "
            "from -64 to 64) in 'quantity + 9**9**9'",
            id="tower",
        ),
        pytest.param("10**10**10 > 0", "10 ** 10 ** 10 raises a power to a power", id="tower-2"),
        pytest.param("(quantity ** 8) ** 8", "raises a power to a power", id="power-of-power"),
        pytest.param("-(quantity ** 8) ** 8", "raises a power to a power", id="negated-base"),
        pytest.param(
            "quantity ** 65",
            "the exponent of quantity ** 65 is above 64 (`**` takes an exponent from -64 to 64)",
            id="exponent",
        ),
        pytest.param("quantity ** -1000", "is above 64", id="negative-exponent"),
        pytest.param("x ** 1e9", "is above 64", id="float-exponent"),
        pytest.param(
            "'a' * 10**9 == region",
            "'a' * 10 ** 9 would make a text or list of 1,000,000,000 characters or items (the "
            "limit is 1,000,000 per value) in \"'a' * 10**9 == region\"",
            id="string-repetition",
        ),
        pytest.param("region in [0] * 2000000", "of 2,000,000 characters or items", id="list"),
        pytest.param(
            "length('ab' * 999999) > 0", "would make a text or list of 1,999,998", id="in-a-call"
        ),
        pytest.param(
            "'a' * 600000 + 'b' * 600000 == region", "of 1,200,000 characters", id="joined"
        ),
        pytest.param(
            f"{'9' * 1300} * 10 > quantity",
            "would make an integer of about 4,323 bits (an expression's integers have at most "
            "4,096 bits",
            id="integer-product",
        ),
        pytest.param(
            "'%0999999999d' % 1 == region",
            "(`%` is the remainder of two numbers; it does not format text)",
            id="string-formatting",
        ),
        pytest.param("quantity << 99999999", "LShift is not allowed", id="shift"),
    ],
)
def test_what_needs_no_data_is_refused_when_parsed(text: str, needle: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_rows(text)
    assert needle in str(info.value)
    with pytest.raises(ValidationError, match="expression"):
        ValidationParams.model_validate({"expressions": [text]})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param(
            "region * times",
            "region * times would make a text or list of 10,000,000 characters or items (the "
            "limit is 1,000,000 per value)",
            id="repeat-by-a-column",
        ),
        pytest.param("region * 300000", "of 1,500,000 characters", id="repeat-a-column"),
        pytest.param(
            "big ** quantity * 0 + huge * huge",
            "huge * huge would make an integer of about 6,644 bits",
            id="object-integers",
        ),
        pytest.param("big ** 50", "big ** 50 would make an integer of about 5,000 bits", id="pow"),
        pytest.param("mixed % 2", "cannot compute mixed % 2 (`%` is the remainder", id="format"),
        pytest.param(
            "`unit price` > 2",
            "cannot compare `unit price` > 2: Invalid comparison between dtype=str and int (a "
            "column of text that holds numbers needs a `cast` step first)",
            id="backticked-name-shown",
        ),
        pytest.param("-region", "cannot compute -region", id="negate-text"),
        pytest.param("abs(region)", "cannot compute abs(region)", id="abs-of-text"),
        pytest.param("quantity ** -1", "cannot compute quantity ** (-1)", id="int-to-negative"),
    ],
)
def test_what_depends_on_the_data_is_refused_before_it_runs(text: str, needle: str) -> None:
    parse_rows(text)  # passes validation: the data decides
    with pytest.raises(ExpressionError) as info:
        evaluate_values(text, FRAME)
    assert needle in str(info.value)
    assert "_col" not in str(info.value)


def test_a_column_may_not_grow_past_the_total_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expressions, "MAX_TEXT_TOTAL", 30)
    assert evaluate_values("region * 2", FRAME).tolist() == ["easteast", "westwest", "northnorth"]
    with pytest.raises(ExpressionError, match="would make 39 characters or items over the column"):
        evaluate_values("region * 3", FRAME)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("quantity ** 2", [1, 4, 9], id="square"),
        pytest.param("x ** 64 > 0", [True, True, True], id="exponent-64"),
        pytest.param("(x ** 2 + y ** 2) ** 0.5", [5.0, 2**0.5, 2**0.5 / 2], id="powers-in-a-sum"),
        pytest.param("quantity ** quantity", [1, 4, 27], id="column-exponent"),
        pytest.param("2 ** -2 * quantity", [0.25, 0.5, 0.75], id="negative-exponent"),
        pytest.param("region * 2 == 'westwest'", [False, True, False], id="repeat-text"),
        pytest.param(
            "region * quantity", ["east", "westwest", "northnorthnorth"], id="repeat-by-column"
        ),
        pytest.param("big * big > 0", [True, True, True], id="object-integers"),
        pytest.param("10.0 ** 60 * 1e300", [float("inf")] * 3, id="float-overflow-is-inf"),
        pytest.param("quantity % 2", [1, 0, 1], id="remainder"),
    ],
)
def test_what_stays_within_the_bounds_is_computed(text: str, expected: list[object]) -> None:
    assert evaluate_values(text, FRAME).tolist() == expected


def test_the_reported_formulas_are_refused_at_once() -> None:
    started = time.monotonic()
    for text in ("quantity + 9**9**9", "10**10**10 > 0", "'a' * 10**9 == region"):
        with pytest.raises(ExpressionError):
            evaluate_values(text, FRAME)
    assert time.monotonic() - started < 5
