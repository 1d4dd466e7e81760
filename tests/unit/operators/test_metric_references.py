"""``${TASK.metrics.NAME}`` in a condition is checked against what TASK's operator
records (``Operator.metric_names``), before anything runs."""

from __future__ import annotations

import pytest

from stageflow.operators.registry import metric_reference_problems
from stageflow.spec.models import Pipeline, Task


def pipeline(when: str, check: Task | None = None) -> Pipeline:
    check = check or Task(id="check", operator="data_validation", parameters={"not_null": "*"})
    return Pipeline(
        name="p",
        tasks=[check, Task(id="next", call="m:f", upstream=["check"], when=when)],
    )


@pytest.mark.parametrize(
    "when",
    [
        "${check.metrics.drifted_columns} > 0",
        "${check.metrics.passed} == 1",
        "${check.metrics.failing.not_null.age} > 0",  # one per check: a prefix
        "${check.metrics} != null",  # all of them
        "${check.rows} > 0",  # the output, not a metric
    ],
)
def test_what_the_operator_records_is_accepted(when: str) -> None:
    p = pipeline(when)
    assert metric_reference_problems(p.tasks[1], p) == []


def test_a_metric_it_never_records_names_the_task_field_and_a_fix() -> None:
    p = pipeline("${check.metrics.drift_columns} > 0")
    (problem,) = metric_reference_problems(p.tasks[1], p)
    assert (problem.task, problem.field) == ("next", "when")
    assert problem.message == (
        "condition refers to ${check.metrics.drift_columns}, but operator 'data_validation' "
        "of task 'check' records no metric 'drift_columns'; did you mean 'drifted_columns'?"
    )


def test_without_a_close_name_it_lists_what_it_records() -> None:
    p = pipeline("${check.metrics.zzz} > 0")
    (problem,) = metric_reference_problems(p.tasks[1], p)
    assert problem.message.endswith(
        "records no metric 'zzz'; it records: passed, error_rate, checks, failed_checks, "
        "drifted_columns, quality_score, completeness, failing."
    )


@pytest.mark.parametrize(
    "check",
    [
        Task(id="check", call="m:g"),  # a Python step records anything
        Task(id="check", operator="bash", parameters={"command": "true"}),
        Task(id="check", operator="no_such_operator"),  # reported for that task
    ],
    ids=["python", "bash", "unknown-operator"],
)
def test_operators_that_cannot_say_are_not_checked(check: Task) -> None:
    p = pipeline("${check.metrics.anything} > 0", check)
    assert metric_reference_problems(p.tasks[1], p) == []
