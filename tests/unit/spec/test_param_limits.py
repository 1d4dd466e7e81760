"""Run parameters that would break later: names that are no identifier, values
nested past the parser's recursion. Both are refused up front, naming the parameter."""

from __future__ import annotations

import pytest

from stageflow import Pipeline, Task
from stageflow.errors import UsageError
from stageflow.spec.params import (
    MAX_PARAM_DEPTH,
    param_name_collisions,
    param_name_problem,
    parse_param_value,
)
from stageflow.spec.validate import pipeline_problems


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _lists(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("3", 3, id="number"),
        pytest.param("[1, 2]", [1, 2], id="list"),
        pytest.param("not json [", "not json [", id="text"),
        pytest.param(_nested(MAX_PARAM_DEPTH), _lists(MAX_PARAM_DEPTH), id="at-the-limit"),
    ],
)
def test_values_within_the_limit_parse(text: str, expected: object) -> None:
    assert parse_param_value(text, "x") == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_nested(MAX_PARAM_DEPTH + 1), id="one-over"),
        pytest.param(_nested(5000), id="5000-lists"),
        pytest.param('{"a":' * 5000 + "1" + "}" * 5000, id="5000-objects"),
        pytest.param("[" * 5000, id="5000-unclosed"),
    ],
)
def test_values_nested_too_deep_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--param x: the value is nested deeper than 64 levels"):
        parse_param_value(text, "x")


@pytest.mark.parametrize("name", ["A=B", "a b", "1st", "a-b", "a.b", "", "é"])
def test_names_that_are_no_identifier_are_problems(name: str) -> None:
    why = param_name_problem(name)
    assert why is not None
    assert why.startswith(f"run parameter {name!r} is not a valid name")


@pytest.mark.parametrize("name", ["a", "A_B", "_x", "epochs2"])
def test_identifiers_are_names(name: str) -> None:
    assert param_name_problem(name) is None


def test_a_pipeline_with_a_bad_parameter_name_is_invalid() -> None:
    pipeline = Pipeline(
        "p",
        tasks=[Task("t", operator="bash", parameters={"command": "true"})],
        params={"A=B": 1},
    )
    problems = [p for p in pipeline_problems(pipeline) if p.field == "params.A=B"]
    assert len(problems) == 1
    assert "run parameter 'A=B' is not a valid name" in problems[0].message


# -- names that differ only in case (both would be STAGEFLOW_PARAM_X) --------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(["x", "y"], [], id="distinct"),
        pytest.param(["x", "X"], [("x", "X")], id="pair"),
        pytest.param(["lr", "LR", "Lr"], [("lr", "LR"), ("lr", "Lr")], id="three"),
        pytest.param(["a_b", "A_B", "c", "C"], [("a_b", "A_B"), ("c", "C")], id="two-pairs"),
        pytest.param(["A=B", "a=b"], [], id="invalid-names-left-to-their-own-problem"),
        pytest.param([], [], id="none"),
    ],
)
def test_names_that_differ_only_in_case_collide(
    names: list[str], expected: list[tuple[str, str]]
) -> None:
    assert param_name_collisions(names) == expected


def test_a_pipeline_with_parameters_differing_in_case_is_invalid() -> None:
    pipeline = Pipeline(
        "p",
        tasks=[Task("t", operator="bash", parameters={"command": "true"})],
        params={"x": 1, "X": 2},
    )
    [problem] = [p for p in pipeline_problems(pipeline) if p.field and "params" in p.field]
    assert problem.field == "params.X"
    assert problem.message == (
        "run parameters 'x' and 'X' differ only in case; tasks would see both as "
        "STAGEFLOW_PARAM_X (one hiding the other); rename one of them"
    )
