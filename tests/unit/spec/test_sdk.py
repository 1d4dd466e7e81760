"""The Python SDK: ``@task``, ``Task(id, fn, upstream=...)`` and ``Pipeline.run``.

Tasks are made inside each test: putting a task in a ``Pipeline`` wires its
upstream by parameter name (it mutates the task), so sharing module-level
tasks between tests would couple them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stageflow import InvalidSpec, Pipeline, Resources, RetryPolicy, Task, TriggerRule, task


def test_bare_task_takes_the_function_name_and_docstring() -> None:
    @task
    def load_rows() -> list[int]:
        """Read the rows.

        More text that is not the summary.
        """
        return [1, 2]

    assert isinstance(load_rows, Task)
    assert load_rows.id == "load_rows"
    assert load_rows.description == "Read the rows."
    assert load_rows.operator_name == "python"
    assert (load_rows.retry, load_rows.timeout_seconds, load_rows.priority) == (None, None, None)
    assert load_rows() == [1, 2]  # still callable as the function


def test_task_with_options_sets_every_policy() -> None:
    @task(
        id="train-model",
        retries=2,
        retry_delay=1.5,
        backoff="exponential",
        timeout=30,
        resources={"cpu": 2, "memory_gb": 4, "gpu": 1},
        priority="critical",
        trigger_rule="all_done",
        after=["cleanup"],
        parameters={"epochs": 3},
    )
    def train(epochs: int) -> int:
        return epochs

    assert train.id == "train-model"
    assert train.retry == RetryPolicy(max_retries=2, delay_seconds=1.5, backoff="exponential")
    assert train.timeout_seconds == 30
    assert train.resources == Resources(cpu=2, memory_gb=4, gpu=1)
    assert train.priority == 100
    assert train.trigger_rule is TriggerRule.ALL_DONE
    assert train.after == ["cleanup"]
    assert train.parameters == {"epochs": 3}
    assert train.description is None


@pytest.mark.parametrize(
    ("options", "check"),
    [
        pytest.param({"retries": 4}, lambda t: t.retry.max_retries == 4, id="retries-only"),
        pytest.param({"priority": 7}, lambda t: t.priority == 7, id="int-priority"),
        pytest.param({"priority": "low"}, lambda t: t.priority == -10, id="low"),
        pytest.param({"timeout": 0.5}, lambda t: t.timeout_seconds == 0.5, id="timeout"),
    ],
)
def test_task_options_one_at_a_time(options: dict[str, Any], check: Any) -> None:
    def step() -> None:
        return None

    assert check(task(**options)(step))


def test_upstream_is_wired_by_parameter_name() -> None:
    @task
    def load() -> list[int]:
        return [1, 2, 3]

    @task
    def features(load: list[int], scale: int = 2) -> list[int]:
        return [x * scale for x in load]

    def raw_data() -> str:
        return "raw"

    def uses_dashed(raw_data: str) -> str:
        return raw_data.upper()

    p = Pipeline(
        "wired",
        tasks=[load, features, Task("raw-data", raw_data), Task("clean.up", uses_dashed)],
    )
    assert p.upstream_map() == {
        "load": [],
        "features": ["load"],
        "raw-data": [],
        "clean.up": ["raw-data"],  # '-' and '.' read as '_'
    }


def test_explicit_upstream_and_after(tmp_path: Path) -> None:
    seen: list[str] = []

    def t0() -> str:
        seen.append("t0")
        return "zero"

    def t1() -> str:
        seen.append("t1")
        return "one"

    @task(after=["t1"])
    def last() -> str:
        seen.append("last")
        return "done"

    p = Pipeline(
        "ordered",
        tasks=[last, Task("t1", t1, upstream=["t0"]), Task("t0", t0)],
        max_parallel_tasks=4,
    )
    assert p.upstream_map() == {"last": ["t1"], "t1": ["t0"], "t0": []}
    assert p.task("last").upstream == []  # ordering only, no data

    result = p.run(home=str(tmp_path))

    assert result.state == "success", result.as_json()
    assert seen == ["t0", "t1", "last"]
    assert result.output("last") == "done"


def test_outputs_flow_by_name_and_star_args_get_the_rest_in_upstream_order(
    tmp_path: Path,
) -> None:
    @task
    def load() -> list[int]:
        return [1, 2, 3]

    @task
    def features(load: list[int]) -> list[int]:
        return [x * 10 for x in load]

    def first() -> str:
        return "first"

    def second() -> str:
        return "second"

    def combine(features: list[int], *rest: Any) -> dict[str, Any]:
        return {"features": features, "rest": list(rest)}

    def gather(*outs: Any) -> list[Any]:
        return list(outs)

    p = Pipeline(
        "flow",
        tasks=[
            load,
            features,
            Task("second", second),
            Task("first", first),
            Task("combine", combine, upstream=["second", "first", "load"]),
            Task("gather", gather, upstream=["first", "features", "second"]),
        ],
    )
    assert p.task("combine").upstream == ["second", "first", "load", "features"]

    result = p.run(home=str(tmp_path))

    assert result.state == "success", result.as_json()
    assert result.output("features") == [10, 20, 30]
    assert result.output("combine") == {
        "features": [10, 20, 30],
        "rest": ["second", "first", [1, 2, 3]],
    }
    assert result.output("gather") == ["first", [10, 20, 30], "second"]


def test_parameters_and_run_params_reach_the_function(tmp_path: Path) -> None:
    @task(parameters={"scale": 3})
    def scaled(scale: int, offset: int) -> int:
        return scale * 10 + offset

    p = Pipeline("params", tasks=[scaled], params={"offset": 1})
    assert p.run(home=str(tmp_path)).output("scaled") == 31
    assert p.run(home=str(tmp_path), params={"offset": 5}).output("scaled") == 35


def test_a_failing_task_fails_the_run_with_its_error(tmp_path: Path) -> None:
    @task
    def explode() -> None:
        raise ValueError("bad rows in batch 3")

    @task
    def after_it(explode: None) -> str:
        return "never"

    result = Pipeline("boom", tasks=[explode, after_it]).run(home=str(tmp_path))

    assert result.state == "failed"
    assert result.tasks["explode"].state == "failed"
    assert result.tasks["explode"].error == "ValueError: bad rows in batch 3"
    assert result.tasks["after_it"].state == "upstream_failed"


@pytest.mark.parametrize(
    ("build", "task_id", "field", "needle"),
    [
        pytest.param(
            lambda: [Task("t1", lambda: 1, upstream=["t0"])],
            "t1",
            "upstream",
            "upstream task 't0' does not exist",
            id="unknown-upstream",
        ),
        pytest.param(
            lambda: [Task("train", lambda: 1), Task("eval", lambda: 1, upstream=["trian"])],
            "eval",
            "upstream",
            "did you mean 'train'?",
            id="did-you-mean",
        ),
        pytest.param(
            lambda: [Task("a", lambda b: b), Task("b", lambda a: a)],
            "a",
            "upstream",
            "the tasks form a cycle: a -> b -> a",
            id="cycle-by-parameter-names",
        ),
        pytest.param(
            lambda: [Task("a", lambda rows: rows)],
            "a",
            "call",
            "needs parameter 'rows', but no upstream task, task parameter or run parameter",
            id="unbound-parameter",
        ),
        pytest.param(
            lambda: [Task("a", lambda: 1, after=["z"])],
            "a",
            "upstream",
            "upstream task 'z' does not exist",
            id="unknown-after",
        ),
        pytest.param(
            lambda: [Task("a", lambda: 1), Task("a", lambda: 2)],
            "a",
            "id",
            "duplicate task id",
            id="duplicate",
        ),
        pytest.param(
            lambda: [Task("no spaces", lambda: 1)],
            "no spaces",
            "id",
            "task id 'no spaces' is invalid",
            id="bad-id",
        ),
    ],
)
def test_sdk_mistakes_are_refused_before_anything_runs(
    tmp_path: Path, build: Any, task_id: str, field: str, needle: str
) -> None:
    p = Pipeline("sdk-mistake", tasks=build())
    with pytest.raises(InvalidSpec) as info:
        p.run(home=str(tmp_path))
    found = [(x.task, x.field, x.message) for x in info.value.problems]
    assert any((t, f) == (task_id, field) and needle in m for t, f, m in found), found
    assert info.value.pipeline == "sdk-mistake"
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


def test_run_refuses_an_undeclared_param_and_a_bad_executor(tmp_path: Path) -> None:
    from stageflow.errors import UsageError

    def one() -> int:
        return 1

    p = Pipeline("opts", tasks=[Task("one", one)], params={"n": 1})
    with pytest.raises(InvalidSpec, match="declares no parameter 'm'"):
        p.run(home=str(tmp_path), params={"m": 2})
    with pytest.raises(UsageError, match="unknown executor 'ray'; use one of: thread, process"):
        p.run(home=str(tmp_path), executor="ray")
    with pytest.raises(UsageError, match="--max-parallel is 0; it must be at least 1"):
        p.run(home=str(tmp_path), max_parallel=0)
