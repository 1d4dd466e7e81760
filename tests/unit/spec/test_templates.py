"""Task groups from templates (`use:`): expansion, namespacing, wiring, errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stageflow.errors import InvalidSpec
from stageflow.spec.load import pipeline_from_data
from stageflow.spec.templates import expand_templates

SUB: dict[str, Any] = {
    "name": "sub",
    "params": {"factor": 2},
    "defaults": {"retry": {"max_retries": 3}, "timeout_seconds": 60},
    "tasks": [
        {"id": "a", "operator": "bash", "parameters": {"command": "echo ${params.factor}"}},
        {
            "id": "b",
            "operator": "bash",
            "upstream": ["a"],
            "parameters": {"command": "echo"},
            "timeout_seconds": 5,
            "when": "${a} != '' and ${params.factor} > 1",
        },
        {"id": "c", "operator": "bash", "upstream": ["a"], "parameters": {"command": "echo"}},
    ],
}


def loader(files: dict[str, dict[str, Any]]) -> Any:
    def load(reference: str, from_source: str) -> tuple[str, dict[str, Any]]:
        if reference not in files:
            raise InvalidSpec([])
        return reference, copy.deepcopy(files[reference])

    return load


def outer(**group: Any) -> dict[str, Any]:
    return {
        "name": "outer",
        "tasks": [
            {"id": "ingest", "operator": "bash", "parameters": {"command": "echo"}},
            {"id": "g", "use": "sub.yaml", "upstream": ["ingest"], **group},
            {
                "id": "after",
                "operator": "bash",
                "upstream": ["g"],
                "parameters": {"command": "echo"},
            },
        ],
    }


def test_expansion_namespaces_and_wires_the_group() -> None:
    doc = expand_templates(outer(**{"with": {"factor": 7}}), loader({"sub.yaml": SUB}), "o.yaml")
    pipeline = pipeline_from_data(doc)
    up = pipeline.upstream_map()
    assert list(up) == ["ingest", "g.a", "g.b", "g.c", "after"]
    assert up["g.a"] == ["ingest"]  # entry task takes the group's upstream
    assert up["g.b"] == ["g.a"]
    assert up["after"] == ["g.b", "g.c"]  # outer dependents wait for the exits
    tasks = {t.id: t for t in pipeline.tasks}
    assert tasks["g.a"].parameters == {"command": "echo 7"}  # `with` over the defaults
    assert tasks["g.a"].group == "g" and tasks["ingest"].group is None
    assert pipeline.retry_of(tasks["g.a"]).max_retries == 3  # the template's defaults
    assert tasks["g.b"].timeout_seconds == 5 and tasks["g.c"].timeout_seconds == 60
    assert tasks["g.b"].when == "${g.a} != '' and 7 > 1"


def test_templates_nest() -> None:
    middle = {"name": "mid", "tasks": [{"id": "inner", "use": "sub.yaml"}]}
    doc = expand_templates(
        {"name": "top", "tasks": [{"id": "m", "use": "mid.yaml"}]},
        loader({"sub.yaml": SUB, "mid.yaml": middle}),
        "top.yaml",
    )
    ids = [t["id"] for t in doc["tasks"]]
    assert ids == ["m.inner.a", "m.inner.b", "m.inner.c"]
    assert doc["tasks"][0]["group"] == "m.inner"


@pytest.mark.parametrize(
    ("group", "files", "field", "message"),
    [
        pytest.param(
            {"with": {"nope": 1}},
            {"sub.yaml": SUB},
            "with",
            "declares no parameter 'nope'",
            id="undeclared-with",
        ),
        pytest.param(
            {"with": [1]}, {"sub.yaml": SUB}, "with", "must be a mapping", id="with-not-mapping"
        ),
        pytest.param(
            {"operator": "bash"},
            {"sub.yaml": SUB},
            "operator",
            "a `use:` task takes only",
            id="extra-keys",
        ),
        pytest.param(
            {},
            {"sub.yaml": {"name": "loop", "tasks": [{"id": "x", "use": "sub.yaml"}]}},
            "use",
            "uses itself",
            id="self-use",
        ),
    ],
)
def test_group_mistakes_name_the_group(
    group: dict[str, Any], files: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        expand_templates(outer(**group), loader(files), "sub-parent.yaml")
    problem = info.value.problems[0]
    assert problem.field == field and message in problem.message


def test_repeat_unrolls_gated_iterations_and_a_collector() -> None:
    doc = expand_templates(
        outer(repeat={"until": "${b} == 'x' and ${params.factor} > 1", "max_iterations": 3}),
        loader({"sub.yaml": SUB}),
        "o.yaml",
    )
    tasks = {t["id"]: t for t in doc["tasks"]}
    assert [t for t in tasks if t.startswith("g.")] == [
        f"g.{k}.{n}" for k in (1, 2, 3) for n in ("a", "b", "c")
    ]
    assert "when" not in tasks["g.1.a"] and tasks["g.1.a"]["upstream"] == ["ingest"]
    # the group's input, and the previous round's outputs
    assert tasks["g.2.a"]["upstream"] == ["ingest", "g.1.b", "g.1.c"]
    assert tasks["g.2.a"]["when"] == "not (${g.1.b} == 'x' and 2 > 1)"
    assert tasks["g"]["upstream"] == [f"g.{k}.{n}" for k in (1, 2, 3) for n in ("b", "c")]
    assert tasks["g"]["parameters"] == {"exits": ["b", "c"], "iterations": 3}
    assert tasks["after"]["upstream"] == ["g"]
    pipeline_from_data(doc)  # a valid pipeline


@pytest.mark.parametrize(
    ("repeat", "field"),
    [
        pytest.param({"until": "${a} > 1"}, "repeat.max_iterations", id="no-bound"),
        pytest.param({"until": "", "max_iterations": 2}, "repeat.until", id="empty-until"),
        pytest.param(
            {"until": "x", "max_iterations": 1000}, "repeat.max_iterations", id="too-many"
        ),
        pytest.param({"until": "x", "max_iterations": 2, "every": 1}, "repeat", id="extra-key"),
    ],
)
def test_bad_repeat_is_named(repeat: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        expand_templates(outer(repeat=repeat), loader({"sub.yaml": SUB}), "o.yaml")
    assert info.value.problems[0].field == field


def test_last_iteration_returns_the_last_round_that_ran() -> None:
    from stageflow.spec.templates import last_iteration

    outputs = ("b1", "c1", "b2", "c2", None, None)
    assert last_iteration(*outputs, exits=["b", "c"], iterations=3) == {
        "iteration": 2,
        "outputs": {"b": "b2", "c": "c2"},
    }
    assert last_iteration(None, None, exits=["b", "c"], iterations=1) == {
        "iteration": 0,
        "outputs": {},
    }


def test_the_group_s_trigger_rule_and_when_go_to_its_entry_tasks() -> None:
    doc = expand_templates(
        outer(trigger_rule="all_done", when="${ingest} != ''"),
        loader({"sub.yaml": SUB}),
        "o.yaml",
    )
    tasks = {t["id"]: t for t in doc["tasks"]}
    assert tasks["g.a"]["trigger_rule"] == "all_done"
    assert tasks["g.a"]["when"] == "${ingest} != ''"
    # Inside the group, tasks keep their own (b's condition is its own, prefixed).
    assert "trigger_rule" not in tasks["g.c"] and "when" not in tasks["g.c"]
    assert tasks["g.b"]["when"] == "${g.a} != '' and 2 > 1"
    pipeline_from_data(doc)  # and it validates


def test_an_entry_task_s_own_condition_is_anded_with_the_group_s() -> None:
    sub = copy.deepcopy(SUB)
    sub["tasks"][0]["when"] = "${params.factor} > 1"
    doc = expand_templates(outer(when="${ingest} != ''"), loader({"sub.yaml": sub}), "o.yaml")
    entry = next(t for t in doc["tasks"] if t["id"] == "g.a")
    assert entry["when"] == "(${ingest} != '') and (2 > 1)"


@pytest.mark.parametrize("key", ["trigger_rule", "when"])
def test_a_group_s_trigger_rule_or_when_must_be_text(key: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        expand_templates(outer(**{key: 3}), loader({"sub.yaml": SUB}), "o.yaml")
    problem = raised.value.problems[0]
    assert (problem.task, problem.field) == ("g", key)
    assert "must be text" in problem.message
