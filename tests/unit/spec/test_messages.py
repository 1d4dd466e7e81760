"""pydantic's errors as a person writes them (``spec.messages.readable_error``)."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow.spec.messages import readable_error


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        pytest.param(
            {"type": "value_error", "msg": "Value error, give exactly one of a and b", "input": {}},
            "give exactly one of a and b",
            id="validator",
        ),
        pytest.param(
            {"type": "assertion_error", "msg": "Assertion failed, a < b", "input": 1},
            "a < b",
            id="assertion",
        ),
        pytest.param(
            {"type": "less_than", "msg": "Input should be less than 1", "input": 2},
            "should be less than 1, got 2",
            id="pydantic-own",
        ),
        pytest.param(
            {"type": "x", "msg": "Field required"}, "field required", id="no-input-no-got"
        ),
        pytest.param(
            {"type": "string_type", "msg": "Input should be a valid string", "input": "x" * 100},
            "should be a valid string, got '" + "x" * 56 + "...",
            id="long-value-cut",
        ),
    ],
)
def test_readable_error(err: dict[str, Any], expected: str) -> None:
    assert readable_error(err) == expected
