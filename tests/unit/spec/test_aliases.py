"""Seed 000's workflow JSON and seed 001's pipeline JSON load into the one model.

The fixture files are written in the seeds' shapes (``shared/seeds/000_*`` and
``001_*``); every alias is mapped onto a canonical field, and a document that
gives both an alias and its canonical key is reported, never silently resolved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stageflow.errors import InvalidSpec
from stageflow.runtime.loading import load_pipeline
from stageflow.runtime.plan import check
from stageflow.spec import Pipeline, Resources, RetryPolicy, pipeline_from_data, pipeline_from_text

SPECS = Path(__file__).resolve().parents[2] / "fixtures" / "specs"


def _load(name: str) -> Pipeline:
    return pipeline_from_text((SPECS / name).read_bytes(), fmt="json", source=name)


def _problems(data: dict[str, Any]) -> list[tuple[str | None, str | None, str]]:
    with pytest.raises(InvalidSpec) as info:
        pipeline_from_data(data)
    return [(p.task, p.field, p.message) for p in info.value.problems]


# -- seed 000: workflow JSON ------------------------------------------------------


def test_seed_000_workflow_loads_into_the_canonical_model() -> None:
    p = _load("seed_000_workflow.json")

    assert p.name == "churn-workflow"
    assert p.max_parallel_tasks == 5
    assert p.failure_strategy == "fail_fast"
    assert [t.id for t in p.tasks] == [
        "data_ingestion",
        "feature_engineering",
        "model_training",
        "model_evaluation",
    ]
    assert p.upstream_map() == {
        "data_ingestion": [],
        "feature_engineering": ["data_ingestion"],
        "model_training": ["feature_engineering"],
        "model_evaluation": ["model_training", "feature_engineering"],
    }
    ingest = p.task("data_ingestion")
    assert ingest.name == "Ingest Data"  # seed 000's `name` is a display name
    assert ingest.operator == "data_processing"  # task_type
    assert ingest.parameters == {"source": "s3://bucket/raw.csv"}
    assert ingest.retry == RetryPolicy(max_retries=3, delay_seconds=60, backoff="exponential")
    assert ingest.resources == Resources(cpu=2.0, memory_gb=4.0, gpu=0)
    assert ingest.timeout_seconds == 3600  # moved out of resources


@pytest.mark.parametrize(
    ("task_id", "priority"),
    [
        pytest.param("data_ingestion", 100, id="critical"),
        pytest.param("model_training", 10, id="high"),
        pytest.param("feature_engineering", 0, id="normal"),
        pytest.param("model_evaluation", -10, id="low"),
    ],
)
def test_seed_000_priority_names_map_to_numbers(task_id: str, priority: int) -> None:
    p = _load("seed_000_workflow.json")
    assert p.task(task_id).priority == priority
    assert p.priority_of(p.task(task_id)) == priority


def test_seed_000_retry_and_resources_of_each_task() -> None:
    p = _load("seed_000_workflow.json")

    features = p.task("feature_engineering")
    assert features.retry == RetryPolicy(max_retries=1, delay_seconds=5, backoff="fixed")
    assert features.resources == Resources(cpu=1.0, memory_gb=0.5)
    assert features.timeout_seconds is None

    train = p.task("model_training")
    assert train.retry is None
    assert train.resources == Resources(cpu=4.0, memory_gb=8.0, gpu=1)
    assert train.timeout_seconds == 7200
    assert p.timeout_of(train) == 7200

    evaluate = p.task("model_evaluation")
    assert evaluate.resources is None
    assert p.resources_of(evaluate) is None  # declared nothing: a worker slot only


def test_seed_000_pipeline_defaults_take_seed_spellings_too() -> None:
    p = pipeline_from_data(
        {
            "name": "p",
            "defaults": {
                "retry": {"max_retries": 2, "retry_delay": 7, "exponential_backoff": True},
                "resources": {"cpu_cores": 3, "memory_mb": 2048, "gpu_count": 1},
            },
            "tasks": [{"task_id": "a", "task_type": "bash"}],
        }
    )
    a = p.task("a")
    assert p.retry_of(a) == RetryPolicy(max_retries=2, delay_seconds=7, backoff="exponential")
    assert p.resources_of(a) == Resources(cpu=3, memory_gb=2.0, gpu=1)


def test_seed_000_file_naming_bash_without_its_command_says_exactly_which() -> None:
    p = load_pipeline(str(SPECS / "seed_000_bash_missing_command.json"))
    assert p.task("upload_dump").operator == "bash"

    with pytest.raises(InvalidSpec) as info:
        check(p)

    assert info.value.pipeline == "nightly-export"
    assert [(x.task, x.field) for x in info.value.problems] == [
        ("upload_dump", "parameters.command")
    ]
    message = info.value.problems[0].message
    assert "operator 'bash' needs parameter 'command'" in message
    assert "add it under `parameters:`" in message
    assert "task 'upload_dump', field 'parameters.command'" in str(info.value)


# -- seed 001: pipeline JSON ------------------------------------------------------


def test_seed_001_pipeline_loads_into_the_canonical_model() -> None:
    p = _load("seed_001_pipeline.json")

    assert p.name == "ml-training-pipeline"
    assert p.owner == "data-science-team"
    assert [t.id for t in p.tasks] == [
        "ingest-data",
        "validate-data",
        "train-model",
        "register-model",
    ]
    assert [t.operator for t in p.tasks] == [
        "data_ingestion",
        "data_validation",
        "model_training",
        "model_registration",
    ]
    assert p.upstream_map() == {
        "ingest-data": [],
        "validate-data": ["ingest-data"],
        "train-model": ["validate-data"],
        "register-model": ["train-model"],
    }
    assert p.task("ingest-data").resources == Resources(cpu=1.0, memory_gb=2.0)
    assert p.task("validate-data").resources == Resources(cpu=0.5, memory_gb=1.0)
    assert p.task("train-model").resources == Resources(cpu=4.0, memory_gb=8.0, gpu=1)
    assert p.task("train-model").parameters["hyperparameters"] == {
        "n_estimators": 100,
        "max_depth": 10,
    }
    register = p.task("register-model")
    assert register.trigger_rule == "all_success"
    assert register.resources is None
    assert register.description == "owner: ml-platform"  # a task-level owner is kept


def test_seed_001_top_level_resources_merge_with_a_resources_mapping() -> None:
    p = pipeline_from_data(
        {
            "name": "p",
            "tasks": [{"name": "a", "operator": "bash", "gpu": 2, "resources": {"cpu": 3}}],
        }
    )
    assert p.task("a").resources == Resources(cpu=3, gpu=2)


def test_seed_shapes_and_canonical_shape_give_the_same_pipeline() -> None:
    seed = pipeline_from_data(
        {
            "name": "same",
            "tasks": [
                {"task_id": "a", "task_type": "bash", "priority": "high"},
                {
                    "task_id": "b",
                    "task_type": "bash",
                    "dependencies": ["a"],
                    "retry_policy": {"max_retries": 2, "retry_delay": 1},
                    "resources": {"cpu_cores": 2, "memory_mb": 1024, "timeout_seconds": 9},
                },
            ],
        }
    )
    canonical = pipeline_from_data(
        {
            "name": "same",
            "tasks": [
                {"id": "a", "operator": "bash", "priority": 10},
                {
                    "id": "b",
                    "operator": "bash",
                    "upstream": ["a"],
                    "retry": {"max_retries": 2, "delay_seconds": 1},
                    "resources": {"cpu": 2, "memory_gb": 1},
                    "timeout_seconds": 9,
                },
            ],
        }
    )
    assert seed.canonical() == canonical.canonical()
    assert seed.content_hash() == canonical.content_hash()


# -- mistakes in seed shapes ----------------------------------------------------------


def _task(**fields: Any) -> dict[str, Any]:
    return {"name": "p", "tasks": [{"task_id": "a", "task_type": "bash", **fields}]}


@pytest.mark.parametrize(
    ("data", "field", "needle"),
    [
        pytest.param(
            _task(dependencies=[], upstream=[]),
            "dependencies",
            "'dependencies' is another spelling of 'upstream', which is also given; keep one",
            id="dependencies-and-upstream",
        ),
        pytest.param(
            _task(id="b"),
            "task_id",
            "'task_id' is another spelling of 'id', which is also given; keep one",
            id="task_id-and-id",
        ),
        pytest.param(
            _task(retry_policy={"exponential_backoff": "yes"}),
            "retry.exponential_backoff",
            "exponential_backoff must be true or false, got 'yes'",
            id="exponential_backoff-not-bool",
        ),
        pytest.param(
            _task(retry_policy={"exponential_backoff": True, "backoff": "fixed"}),
            "retry.exponential_backoff",
            "exponential_backoff and backoff are both given; keep one",
            id="exponential_backoff-and-backoff",
        ),
        pytest.param(
            _task(retry_policy={"retry_delay": 1, "delay_seconds": 2}),
            "retry.retry_delay",
            "'retry_delay' is another spelling of 'delay_seconds'",
            id="retry_delay-and-delay_seconds",
        ),
        pytest.param(
            _task(resources={"memory_mb": "lots"}),
            "resources.memory_mb",
            "memory_mb must be a number of megabytes, got 'lots'",
            id="memory_mb-not-number",
        ),
        pytest.param(
            _task(resources={"memory_mb": 1024, "memory_gb": 2}),
            "resources.memory_mb",
            "memory_mb and memory_gb are both given; keep one",
            id="memory_mb-and-memory_gb",
        ),
        pytest.param(
            _task(resources={"cpu_cores": 1, "cpu": 2}),
            "resources.cpu_cores",
            "'cpu_cores' is another spelling of 'cpu'",
            id="cpu_cores-and-cpu",
        ),
        pytest.param(
            _task(timeout_seconds=5, resources={"timeout_seconds": 9}),
            "resources.timeout_seconds",
            "timeout_seconds is given both here and on the task; keep one",
            id="timeout-twice",
        ),
        pytest.param(
            _task(priority="urgent"),
            "priority",
            "priority must be an integer or one of low, normal, high, critical, got 'urgent'",
            id="unknown-priority-name",
        ),
        pytest.param(
            _task(resources={"gpu_count": -1}),
            "resources.gpu",
            "greater than or equal to 0",
            id="negative-gpu_count",
        ),
    ],
)
def test_seed_shape_mistakes_are_named(data: dict[str, Any], field: str, needle: str) -> None:
    problems = _problems(data)
    assert len(problems) == 1, problems
    task, got_field, message = problems[0]
    assert task in ("a", "b")
    assert got_field == field
    assert needle in message


def test_seed_000_example_documented_in_the_seed_loads_verbatim() -> None:
    # The "Workflow Configuration" block of seed 000, with its one task made
    # self-contained (the seed's example depends on "other_task_id").
    text = json.dumps(
        {
            "name": "my-workflow",
            "description": "Description",
            "tasks": [
                {
                    "task_id": "unique_id",
                    "name": "Task Name",
                    "task_type": "data_processing",
                    "dependencies": [],
                    "priority": "high",
                    "parameters": {},
                    "retry_policy": {
                        "max_retries": 3,
                        "retry_delay": 60,
                        "exponential_backoff": True,
                    },
                    "resources": {
                        "cpu_cores": 2.0,
                        "memory_mb": 4096,
                        "gpu_count": 1,
                        "timeout_seconds": 3600,
                    },
                }
            ],
            "max_parallel_tasks": 5,
            "failure_strategy": "fail_fast",
        }
    )
    t = pipeline_from_text(text, fmt="json").task("unique_id")
    assert (t.priority, t.timeout_seconds) == (10, 3600)
    assert t.retry is not None and t.retry.backoff == "exponential"
    assert t.resources == Resources(cpu=2.0, memory_gb=4.0, gpu=1)
