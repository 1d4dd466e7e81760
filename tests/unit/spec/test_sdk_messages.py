"""Python pipelines as their authors meet them: ``@task`` takes every option
``Task(...)`` does, advice names ``Pipeline(..., params=...)``, a misspelt
function parameter gets a did-you-mean, and ``inputs=`` binds an upstream output
to any parameter name (generated graphs reuse one function across many tasks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stageflow import InvalidSpec, Pipeline, Task, task
from stageflow.runtime.plan import check, resolve_params
from stageflow.spec.load import pipeline_from_data
from stageflow.spec.sdk import TASK_OPTIONS

# -- @task takes what Task(...) takes ---------------------------------------------------

#: Task fields @task sets itself or that do not apply to a function.
_NOT_OPTIONS = {"id", "fn", "operator", "call", "group", "map_over"}


def test_task_options_cover_every_task_field() -> None:
    assert set(Task.model_fields) - _NOT_OPTIONS <= set(TASK_OPTIONS)


@pytest.mark.parametrize(
    ("options", "field", "expected"),
    [
        pytest.param({"cache": True}, "cache", True, id="cache"),
        pytest.param({"cache_ttl_seconds": 60}, "cache_ttl_seconds", 60, id="cache-ttl"),
        pytest.param({"cache_version": "2"}, "cache_version", "2", id="cache-version"),
        pytest.param({"pool": "training"}, "pool", "training", id="pool"),
        pytest.param({"exclusive": True}, "exclusive", True, id="exclusive"),
        pytest.param({"estimated_seconds": 5}, "estimated_seconds", 5, id="estimate"),
        pytest.param({"enforce_limits": True}, "enforce_limits", True, id="enforce-limits"),
        pytest.param({"fatal_on": ["KeyError"]}, "fatal_on", ["KeyError"], id="fatal-on"),
        pytest.param({"upstream": ["a"]}, "upstream", ["a"], id="upstream"),
        pytest.param({"name": "Train"}, "name", "Train", id="name"),
        pytest.param({"inputs": {"x": "a"}}, "inputs", {"x": "a"}, id="inputs"),
        pytest.param({"timeout_seconds": 3}, "timeout_seconds", 3, id="timeout-seconds"),
    ],
)
def test_task_takes_the_options_of_task(options: dict[str, Any], field: str, expected: Any) -> None:
    def step(x: int = 0) -> int:
        return x

    made = task(**options)(step)
    assert getattr(made, field) == expected


def test_task_takes_the_policy_objects_as_mappings() -> None:
    @task(
        fallback={"value": 0},
        approval={"message": "ok?"},
        circuit_breaker={"failure_threshold": 2},
        retry={"max_retries": 3},
    )
    def step() -> int:
        return 1

    assert step.fallback is not None and step.fallback.value == 0
    assert step.approval is not None and step.approval.message == "ok?"
    assert step.circuit_breaker is not None and step.circuit_breaker.failure_threshold == 2
    assert step.retry is not None and step.retry.max_retries == 3


def test_task_map_makes_a_mapped_task() -> None:
    @task(map="items", min_success_ratio=0.5)
    def train(items: int) -> int:
        return items

    assert train.map_over == "items" and train.upstream == ["items"]
    assert train.min_success_ratio == 0.5


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        pytest.param({"cahce": True}, "@task has no option 'cahce'; did you mean 'cache'?"),
        pytest.param({"operator": "bash"}, "@task has no option 'operator'"),
        pytest.param(
            {"retries": 2, "retry": {"max_retries": 1}}, "give retries=/retry_delay=/backoff="
        ),
        pytest.param({"timeout": 1, "timeout_seconds": 2}, "give timeout= or timeout_seconds="),
    ],
)
def test_task_names_an_option_it_does_not_take(options: dict[str, Any], needle: str) -> None:
    def step() -> None:
        return None

    with pytest.raises(TypeError, match="@task") as info:
        task(**options)(step)
    assert needle in str(info.value)


# -- advice for Python pipelines ----------------------------------------------------------


def test_an_undeclared_param_of_a_python_pipeline_names_pipeline_params() -> None:
    def train(n_estimators: int = 3) -> int:
        return n_estimators

    p = Pipeline("py", params={"n_estimators": 3}, tasks=[Task("train", train)])
    with pytest.raises(InvalidSpec) as info:
        resolve_params(p, {"n_estimator": 5})
    (problem,) = info.value.problems
    assert "did you mean 'n_estimators'?" in problem.message
    assert "Pipeline(..., params={...})" in problem.message
    assert "`params:`" not in problem.message


def test_a_misspelt_function_parameter_gets_a_did_you_mean() -> None:
    def load() -> list[int]:
        return [1]

    def train(lod: list[int]) -> int:
        return len(lod)

    p = Pipeline("py", tasks=[Task("load", load), Task("train", train)])
    with pytest.raises(InvalidSpec) as info:
        check(p)
    (problem,) = info.value.problems
    assert problem.task == "train"
    assert "needs parameter 'lod'" in problem.message
    assert "did you mean 'load'?" in problem.message


def test_a_misspelt_task_parameter_gets_a_did_you_mean() -> None:
    def train(epochs: int) -> int:
        return epochs

    p = Pipeline("py", tasks=[Task("train", train, parameters={"epoch": 3, "epochs": 3})])
    with pytest.raises(InvalidSpec) as info:
        check(p)
    (problem,) = info.value.problems
    assert problem.field == "parameters.epoch"
    assert "did you mean 'epochs'?" in problem.message


# -- inputs= --------------------------------------------------------------------------


def inc(x: int) -> int:
    return x + 1


def zero() -> int:
    return 0


def add(a: int, b: int) -> int:
    return a + b


def _chain(n: int) -> Pipeline:
    tasks = [Task("t0", zero)]
    tasks += [Task(f"t{i}", inc, inputs={"x": f"t{i - 1}"}) for i in range(1, n)]
    return Pipeline("chain", tasks=tasks)


def test_a_needs_parameter_error_points_at_inputs() -> None:
    p = Pipeline("gen", tasks=[Task("t0", zero), Task("t1", inc, upstream=["t0"])])
    with pytest.raises(InvalidSpec) as info:
        check(p)
    (problem,) = info.value.problems
    assert "needs parameter 'x'" in problem.message
    assert "inputs={'x': 't0'}" in problem.message


def test_inputs_makes_the_source_upstream_and_binds_it(tmp_path: Path) -> None:
    p = _chain(4)
    assert p.task("t3").upstream == ["t2"]
    result = p.run(home=str(tmp_path))
    assert result.state == "success", result
    assert result.output("t3") == 3


def test_inputs_binds_two_upstreams_to_other_names(tmp_path: Path) -> None:
    p = Pipeline(
        "two",
        tasks=[
            Task("left", zero),
            Task("right", lambda: 5),
            Task("sum", add, inputs={"a": "left", "b": "right"}),
        ],
    )
    result = p.run(home=str(tmp_path))
    assert result.output("sum") == 5


@pytest.mark.parametrize(
    ("tasks", "field", "needle"),
    [
        pytest.param(
            lambda: [Task("load", zero), Task("t1", inc, inputs={"x": "lod"})],
            "inputs.x",
            "inputs maps parameter 'x' to task 'lod', which does not exist; did you mean 'load'?",
            id="unknown-source",
        ),
        pytest.param(
            lambda: [Task("t0", zero), Task("t1", inc, inputs={"y": "t0"})],
            "inputs.y",
            "function inc has no parameter 'y' (it takes: x)",
            id="unknown-parameter",
        ),
        pytest.param(
            lambda: [Task("t1", inc, inputs={"x": "t1"})],
            "inputs.x",
            "maps parameter 'x' to this task itself",
            id="itself",
        ),
        pytest.param(
            lambda: [
                Task("t0", zero),
                Task("t1", operator="bash", parameters={"command": "x"}, inputs={"x": "t0"}),
            ],
            "inputs",
            "inputs binds upstream outputs to a Python function's parameters",
            id="not-a-function",
        ),
    ],
)
def test_inputs_mistakes_are_named(tasks: Any, field: str, needle: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        check(Pipeline("bad", tasks=tasks()))
    found = [(p.task, p.field, p.message) for p in info.value.problems]
    assert any(f == field and needle in m for _t, f, m in found), found
    assert not any(f == "upstream" for _t, f, _m in found), found  # reported once


def test_inputs_round_trips_through_the_canonical_spec() -> None:
    p = _chain(3)
    data = p.canonical()
    assert data["tasks"][2]["inputs"] == {"x": "t1"}
    again = pipeline_from_data(data)
    assert again.task("t2").inputs == {"x": "t1"}
    assert again.task("t2").upstream == ["t1"]
    assert again.content_hash() == p.content_hash()


def test_inputs_in_a_yaml_spec() -> None:
    p = pipeline_from_data(
        {
            "name": "y",
            "tasks": [
                {"id": "t0", "call": "steps:zero"},
                {"id": "t1", "call": "steps:inc", "inputs": {"x": "t0"}},
            ],
        }
    )
    assert p.task("t1").upstream == ["t0"] and p.task("t1").inputs == {"x": "t0"}
