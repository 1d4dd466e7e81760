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
