"""The safe condition language: what it evaluates, and everything it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stageflow.spec.expr import ExpressionError, parse_expression

OUTPUTS: dict[str, Any] = {
    "evaluate": {"accuracy": 0.91, "metrics": {"f1": 0.8}, "tags": ["a", "b"]},
    "train.rf": {"score": 3},
    "count": 7,
    "name": "rf",
}
PARAMS: dict[str, Any] = {"deploy": True, "threshold": 0.85, "env": "prod"}
IDS = list(OUTPUTS)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("${evaluate.accuracy} >= 0.85 and ${params.deploy}", True, id="issue-example"),
        pytest.param("${evaluate.accuracy} >= ${params.threshold}", True, id="param-vs-output"),
        pytest.param("${evaluate.metrics.f1} < 0.5", False, id="nested-key"),
        pytest.param("${train.rf.score} == 3", True, id="dotted-task-id"),
        pytest.param("${count} % 2 == 1", True, id="modulo"),
        pytest.param("(${count} + 3) * 2 == 20", True, id="arithmetic"),
        pytest.param("${count} / 2 == 3.5", True, id="true-division"),
        pytest.param("-${count} < 0", True, id="unary-minus"),
        pytest.param("'a' in ${evaluate.tags}", True, id="in-list"),
        pytest.param("${name} not in ['gb', 'lr']", True, id="not-in"),
        pytest.param('${params.env} == "prod"', True, id="string-equality"),
        pytest.param("${name} + '-v2' == 'rf-v2'", True, id="string-join"),
        pytest.param("1 < ${count} < 10", True, id="chained-comparison"),
        pytest.param("not false and true", True, id="lowercase-literals"),
        pytest.param("null == None", True, id="null"),
        pytest.param("${evaluate}['accuracy'] > 0.9", True, id="subscript"),
        pytest.param("${evaluate.tags.1} == 'b'", True, id="list-index-in-path"),
        pytest.param("false or ${count}", 7, id="or-returns-value"),
    ],
)
def test_evaluates(source: str, expected: Any) -> None:
    assert parse_expression(source, IDS).evaluate(PARAMS, OUTPUTS) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("x" * 2001, "limit is 2000", id="too-long"),
        pytest.param("${a} >=", "does not parse", id="syntax"),
        pytest.param("__import__('os').system('true')", "Call is not allowed", id="call"),
        pytest.param("(1).__class__", "Attribute is not allowed", id="dunder-attribute"),
        pytest.param("${count}.real", "Attribute is not allowed", id="attribute"),
        pytest.param("2 ** 100000", "Pow not allowed", id="power"),
        pytest.param("lambda: 1", "Lambda is not allowed", id="lambda"),
        pytest.param("[x for x in [1]]", "ListComp is not allowed", id="comprehension"),
        pytest.param("deploy", "unknown name 'deploy'", id="bare-name"),
        pytest.param("${count}[1:2]", "slices are not allowed", id="slice"),
        pytest.param("${a", "unclosed", id="unclosed-reference"),
        pytest.param("(" * 40 + "1" + ")" * 40, "nested too deeply", id="deep-nesting"),
        pytest.param("${params.}", "expected ${params.NAME}", id="bad-param-ref"),
        pytest.param("1 if true else 2", "IfExp is not allowed", id="ternary"),
        pytest.param("{'a': 1}", "Dict is not allowed", id="dict-literal"),
        pytest.param("1 is 1", "comparison not allowed", id="is"),
        pytest.param("~1", "operator not allowed", id="invert"),
        pytest.param("b'x' == b'x'", "not allowed", id="bytes-literal"),
        pytest.param("${count} ** 9 ** 9", "Pow not allowed", id="power-tower"),
        pytest.param("1 << 100000000", "LShift not allowed", id="left-shift"),
    ],
)
def test_refuses(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message.replace("$", r"\$").replace("{", r"\{")):
        parse_expression(source, IDS)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("${missing} == 1", "task 'missing' has no output", id="no-output"),
        pytest.param("${params.nope}", "no run parameter 'nope'", id="no-param"),
        pytest.param("${evaluate.recall} > 0", "no key 'recall'", id="no-key"),
        pytest.param("${name} * 3 == 'x'", "arithmetic needs numbers", id="string-times"),
        pytest.param("${count} / 0 == 1", "ZeroDivisionError", id="division-by-zero"),
        pytest.param("${count} < 'a'", "TypeError", id="mixed-comparison"),
    ],
)
def test_runtime_errors_say_what_went_wrong(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        parse_expression(source, IDS).evaluate(PARAMS, OUTPUTS)


@pytest.mark.parametrize(
    ("source", "params", "message"),
    [
        pytest.param(
            "${params.n} * ${params.n} > 0",
            {"n": 10**1000},
            "'${params.n} * ${params.n} > 0': arithmetic on integers of about 6,644 bits (a "
            "condition's integers have at most 4,096 bits",
            id="integer-product",
        ),
        pytest.param(
            "${params.n} + 1 > 0", {"n": 10**5000}, "integers of about 16,610 bits", id="operand"
        ),
        pytest.param(
            "1e308 * 1" + "0" * 400 + " > 0",
            {},
            "OverflowError: int too large to convert to float",
            id="float-overflow",
        ),
        pytest.param(
            "${params.n} / 3 > 0",
            {"n": 10**400},
            "'${params.n} / 3 > 0': OverflowError: integer division result too large",
            id="division-overflow",
        ),
        pytest.param(
            "${params.s} + ${params.s} == ''",
            {"s": "x" * 600_000},
            "joining strings would make 1,200,000 characters (the limit is 1,000,000)",
            id="string-join",
        ),
    ],
)
def test_evaluation_is_bounded(source: str, params: dict[str, Any], message: str) -> None:
    """The run loop evaluates conditions: nothing may hold it, or escape as a crash."""
    with pytest.raises(ExpressionError) as info:
        parse_expression(source, IDS).evaluate(params, OUTPUTS)
    assert message in str(info.value)


def test_large_integers_may_still_be_compared() -> None:
    expression = parse_expression("${params.n} > 10 and ${params.n} * 2.0 > 0", IDS)
    assert expression.evaluate({"n": 10**300}, OUTPUTS) is True
    assert parse_expression("${params.n} > 0", IDS).evaluate({"n": 10**5000}, OUTPUTS) is True


def test_no_code_runs_during_parse_or_evaluation(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    attempts = [
        f"__import__('pathlib').Path('{marker}').touch()",
        f"open('{marker}', 'w')",
        "().__class__.__bases__[0].__subclasses__()",
    ]
    for source in attempts:
        with pytest.raises(ExpressionError):
            parse_expression(source, IDS).evaluate(PARAMS, OUTPUTS)
    assert not marker.exists()


def test_references_are_reported_for_validation() -> None:
    expr = parse_expression("${train.rf.score} > ${params.threshold}", ["train.rf", "train"])
    assert [(r.kind, r.name, r.path) for r in expr.references] == [
        ("task", "train.rf", ("score",)),
        ("params", "threshold", ()),
    ]


# -- ${TASK.metrics.NAME}: what a task recorded -------------------------------------------

RECORDED = {"check": {"drifted_columns": 2.0, "passed": 0.0}, "evaluate": {"f1": 0.95}}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("${check.metrics.drifted_columns} > 0", True, id="recorded-metric"),
        pytest.param("${check.metrics.passed} == 0", True, id="verdict"),
        # recorded metrics win over the output's own "metrics" key ...
        pytest.param("${evaluate.metrics.f1} == 0.95", True, id="recorded-over-output"),
        # ... but a name only the output has is still read from the output
        pytest.param("${count} == 7 and ${evaluate.accuracy} > 0.9", True, id="output-unchanged"),
        pytest.param("${check.metrics}['passed'] == 0", True, id="all-metrics"),
    ],
)
def test_recorded_metrics_are_addressable(source: str, expected: Any) -> None:
    outputs = {**OUTPUTS, "check": "a DataFrame stands here"}
    expression = parse_expression(source, [*IDS, "check"])
    assert expression.evaluate(PARAMS, outputs, RECORDED) == expected


def test_an_output_s_metrics_key_is_read_when_nothing_was_recorded() -> None:
    expression = parse_expression("${evaluate.metrics.f1} < 0.5", IDS)
    assert expression.evaluate(PARAMS, OUTPUTS, {}) is False  # the output's 0.8


def test_a_metric_not_recorded_names_what_was() -> None:
    outputs = {**OUTPUTS, "check": "a DataFrame stands here"}
    expression = parse_expression("${check.metrics.drifted} > 0", [*IDS, "check"])
    with pytest.raises(ExpressionError) as exc:
        expression.evaluate(PARAMS, outputs, RECORDED)
    assert str(exc.value) == (
        "${check.metrics.drifted}: task 'check' recorded no metric 'drifted' "
        "(recorded: drifted_columns, passed)"
    )
    with pytest.raises(ExpressionError, match=r"recorded no metric 'x' \(recorded: none\)"):
        parse_expression("${check.metrics.x} > 0", ["check"]).evaluate({}, {"check": None}, {})


def test_a_metric_name_may_hold_dots_the_longest_recorded_one_wins() -> None:
    recorded = {"check": {"failing.not_null.age": 3.0, "failing": 1.0}}
    expression = parse_expression("${check.metrics.failing.not_null.age} == 3", ["check"])
    assert expression.evaluate({}, {"check": None}, recorded) is True
    expression = parse_expression("${check.metrics.failing} == 1", ["check"])
    assert expression.evaluate({}, {"check": None}, recorded) is True
