"""``operations.access.path_problems`` with a run's parameters, and ``check_run_paths``:
a file path a run parameter (or its default) puts in a task is confined to the data
roots like one written in the spec."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow.operations.access import check_run_paths, path_problems
from stageflow.operations.pipelines import Forbidden
from stageflow.spec.load import pipeline_from_data

ROOTS = ("/data",)


def pipeline(parameters: dict[str, Any], **params: Any) -> Any:
    return pipeline_from_data(
        {
            "name": "p",
            "params": params or {"src": "/data/in.csv"},
            "tasks": [{"id": "t", "operator": "data_ingestion", "parameters": parameters}],
        }
    )


@pytest.mark.parametrize(
    ("parameters", "given", "field", "why"),
    [
        pytest.param(
            {"source": "${params.src}"},
            {"src": "/etc/passwd"},
            "parameters.source",
            "'/etc/passwd' (from run parameter 'src') is outside the data roots (/data)",
            id="whole",
        ),
        pytest.param(
            {"source": "${params.src}/x.csv"},
            {"src": "/data/../etc"},
            "parameters.source",
            "'/data/../etc/x.csv' (from run parameter 'src') is outside",
            id="inside-a-text",
        ),
        pytest.param(
            {"source": "in/${params.src}"},
            {"src": "../../x"},
            "parameters.source",
            "'in/../../x' (from run parameter 'src') climbs out of its folder",
            id="climbs",
        ),
        pytest.param(
            {"options": {"files": "${params.src}"}},
            {"src": ["/data/a.csv", "/srv/b.csv"]},
            "parameters.options.files.1",
            "'/srv/b.csv' (from run parameter 'src') is outside",
            id="a-list",
        ),
        pytest.param(
            {"source": "${params.src}"},
            {"src": {"anything": "/etc/shadow"}},
            "parameters.source.anything",
            "'/etc/shadow' (from run parameter 'src') is outside",
            id="a-mapping-under-a-file-key",
        ),
        pytest.param(
            {"source": "${params.src}"},
            {"src": "sqlite:////etc/app.db"},
            "parameters.source",
            "'sqlite:////etc/app.db' (from run parameter 'src') is outside",
            id="a-local-database-url",
        ),
    ],
)
def test_a_run_s_parameters_are_substituted_before_the_check(
    parameters: dict[str, Any], given: dict[str, Any], field: str, why: str
) -> None:
    spec = pipeline(parameters)
    assert path_problems(spec, ROOTS) == []  # the default is inside
    [(task, where, message)] = path_problems(spec, ROOTS, given)
    assert (task, where) == ("t", field)
    assert why in message


@pytest.mark.parametrize(
    "given",
    [
        {"src": "/data/sub/in.csv"},
        {"src": "relative/in.csv"},
        {"src": "s3://bucket/in.csv"},
        {"src": "sklearn:wine"},
        {"src": "sqlite:///relative.db"},
    ],
)
def test_values_under_the_roots_urls_and_datasets_pass(given: dict[str, Any]) -> None:
    assert path_problems(pipeline({"source": "${params.src}"}), ROOTS, given) == []


def test_a_default_is_checked_as_a_run_would_read_it() -> None:
    spec = pipeline({"source": "${params.src}"}, src="/etc/passwd")
    [(task, field, why)] = path_problems(spec, ROOTS)
    assert (task, field) == ("t", "parameters.source")
    assert "'/etc/passwd' (from run parameter 'src')" in why
    assert path_problems(spec, ROOTS, {"src": "/data/x.csv"}) == []  # a run's value wins


def test_a_secret_parameter_is_a_reference_not_a_path() -> None:
    spec = pipeline({"source": "${params.src}"}, src={"secret": True})
    assert path_problems(spec, ROOTS) == []


def test_check_run_paths_names_task_field_and_parameter_and_spares_admins() -> None:
    spec = pipeline({"source": "${params.src}"})
    with pytest.raises(Forbidden) as info:
        check_run_paths(spec, {"src": "/etc/passwd"}, ROOTS)
    assert (info.value.pipeline, info.value.task, info.value.field) == (
        "p",
        "t",
        "parameters.source",
    )
    assert "from run parameter 'src'" in str(info.value)
    assert "STAGEFLOW_API_DATA_ROOTS" in str(info.value)
    check_run_paths(spec, {"src": "/etc/passwd"}, None)  # an admin: not confined
    check_run_paths(spec, {"src": "/data/in.csv"}, ROOTS)
