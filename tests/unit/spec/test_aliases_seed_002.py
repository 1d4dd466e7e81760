"""Seed 002's shapes load into the one model: ``PipelineDefinition``'s ``pipeline_id``
(beside a display ``name``), Airflow's ``default_args`` and the ``deployment`` task
type. A key that cannot be mapped is named with a fix, never dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stageflow.errors import InvalidSpec
from stageflow.spec import Pipeline, RetryPolicy, pipeline_from_data, pipeline_from_text
from stageflow.spec.aliases import parse_duration, seed_notes

SEEDS = Path(__file__).resolve().parents[2] / "fixtures" / "specs" / "seeds"
TASKS = [{"task_id": "a", "task_type": "bash"}]


def load(**fields: Any) -> Pipeline:
    return pipeline_from_data({"tasks": TASKS, **fields})


def problems(**fields: Any) -> list[tuple[str | None, str]]:
    with pytest.raises(InvalidSpec) as info:
        load(**fields)
    return [(p.field, p.message) for p in info.value.problems]


def test_the_seed_002_pipeline_definition_loads_into_the_canonical_model() -> None:
    path = SEEDS / "002_pipeline_definition.json"
    p = pipeline_from_text(path.read_bytes(), fmt="json", source=path.name)

    assert (p.name, p.title, p.owner) == (
        "ml_training_pipeline",
        "ML Training Pipeline",
        "ml_team",
    )
    assert p.defaults.retry == RetryPolicy(max_retries=3, delay_seconds=300)
    assert p.defaults.timeout_seconds == 7200
    deploy = p.task("deploy_model")
    assert deploy.operator == "model_deployment"  # TaskType.DEPLOYMENT
    assert p.retry_of(deploy) == RetryPolicy()  # its own `retry_policy: {}` wins
    assert p.timeout_of(p.task("train_model")) == 7200
    assert p.retry_of(p.task("ingest_data")) == RetryPolicy(max_retries=3, delay_seconds=300)
    assert p._notes == []
    assert [c.email for c in p.on_failure] == [["ml-alerts@company.com"]]
    assert p.on_retry == []  # email_on_retry: False


# -- pipeline_id ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "name", "title"),
    [
        pytest.param({"pipeline_id": "fraud"}, "fraud", None, id="alone"),
        pytest.param({"pipeline_id": "fraud", "name": "fraud"}, "fraud", None, id="same-name"),
        pytest.param(
            {"pipeline_id": "fraud", "name": "Fraud Detection"},
            "fraud",
            "Fraud Detection",
            id="display-name",
        ),
    ],
)
def test_pipeline_id_is_the_name(fields: dict[str, Any], name: str, title: str | None) -> None:
    p = load(**fields)
    assert (p.name, p.title) == (name, title)


def test_pipeline_id_name_and_title_together_are_named() -> None:
    assert problems(pipeline_id="a", name="b", title="c") == [
        (
            "pipeline_id",
            "pipeline_id, name and title are all given; pipeline_id is the name and a "
            "different name is the title: keep two of them",
        )
    ]


def test_pipeline_id_that_is_not_text_is_named() -> None:
    found = problems(pipeline_id=7)
    assert ("pipeline_id", "pipeline_id is the pipeline's name and must be text, got 7") in found


def test_seed_002_and_canonical_shapes_give_the_same_pipeline() -> None:
    seed = load(
        pipeline_id="p",
        default_args={
            "owner": "ml_team",
            "retries": 2,
            "retry_delay": "timedelta(minutes=1)",
            "retry_exponential_backoff": True,
            "max_retry_delay": "1h",
            "execution_timeout": {"hours": 2},
            "pool": "gpu",
            "priority_weight": 5,
            "trigger_rule": "all_done",
        },
    )
    canonical = load(
        name="p",
        owner="ml_team",
        defaults={
            "retry": {
                "max_retries": 2,
                "delay_seconds": 60,
                "backoff": "exponential",
                "max_delay_seconds": 3600,
            },
            "timeout_seconds": 7200,
            "pool": "gpu",
            "priority": 5,
            "trigger_rule": "all_done",
        },
    )
    assert seed.canonical() == canonical.canonical()
    assert seed.content_hash() == canonical.content_hash()


# -- default_args -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(300, 300.0, id="int"),
        pytest.param(1.5, 1.5, id="float"),
        pytest.param("300", 300.0, id="numeric-text"),
        pytest.param("0:05:00", 300.0, id="timedelta-str"),
        pytest.param("1 day, 2:00:00", 93600.0, id="timedelta-str-days"),
        pytest.param("2 days, 0:00:01.5", 172801.5, id="timedelta-str-fraction"),
        pytest.param("5m", 300.0, id="minutes"),
        pytest.param("1h30m", 5400.0, id="compound"),
        pytest.param("250ms", 0.25, id="milliseconds"),
        pytest.param("1w", 604800.0, id="week"),
        pytest.param("timedelta(minutes=5)", 300.0, id="python-call"),
        pytest.param("timedelta(hours=2, minutes=30)", 9000.0, id="python-call-two"),
        pytest.param("datetime.timedelta(seconds=10)", 10.0, id="qualified-call"),
        pytest.param({"minutes": 5}, 300.0, id="mapping"),
        pytest.param({"days": 1, "seconds": 1}, 86401.0, id="mapping-two"),
        pytest.param(True, None, id="bool"),
        pytest.param(-1, None, id="negative"),
        pytest.param("soon", None, id="word"),
        pytest.param("5 minutes", None, id="long-unit"),
        pytest.param("timedelta(fortnights=1)", None, id="unknown-keyword"),
        pytest.param("timedelta(minutes=os.system)", None, id="not-a-number"),
        pytest.param({"minutes": "5"}, None, id="mapping-text"),
        pytest.param({"lightyears": 1}, None, id="mapping-unknown"),
        pytest.param("nan", None, id="nan"),
        pytest.param(None, None, id="none"),
    ],
)
def test_parse_duration(value: object, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param({"retries": 4}, {"retry": {"max_retries": 4}}, id="retries"),
        pytest.param(
            {"retry_delay": "0:00:30"}, {"retry": {"delay_seconds": 30.0}}, id="retry_delay"
        ),
        pytest.param(
            {"retry_exponential_backoff": True},
            {"retry": {"backoff": "exponential"}},
            id="exponential",
        ),
        pytest.param({"retry_exponential_backoff": False}, {"retry": {}}, id="fixed-the-default"),
        pytest.param(
            {"max_retry_delay": 600}, {"retry": {"max_delay_seconds": 600.0}}, id="max_delay"
        ),
        pytest.param({"execution_timeout": "2h"}, {"timeout_seconds": 7200.0}, id="timeout"),
        pytest.param({"pool": "gpu"}, {"pool": "gpu"}, id="pool"),
        pytest.param({"priority_weight": 3}, {"priority": 3}, id="priority"),
        pytest.param({"trigger_rule": "all_done"}, {"trigger_rule": "all_done"}, id="trigger"),
        pytest.param(
            {"depends_on_past": False, "email_on_failure": False, "email_on_retry": False},
            {},
            id="accepted-and-nothing-to-do",
        ),
    ],
)
def test_each_default_arg_lands_on_its_canonical_field(
    args: dict[str, Any], expected: dict[str, Any]
) -> None:
    p = load(name="p", default_args=args)
    got = p.defaults.model_dump(exclude_defaults=True)
    assert got == expected


def test_default_args_owner_is_the_pipeline_owner() -> None:
    assert load(name="p", default_args={"owner": "ml_team"}).owner == "ml_team"
    assert load(name="p", owner="ml_team", default_args={"owner": "ml_team"}).owner == "ml_team"


def test_default_args_merge_with_defaults_that_do_not_overlap() -> None:
    p = load(
        name="p",
        defaults={"retry": {"max_retries": 1}, "cache": True},
        default_args={"retry_delay": 9, "execution_timeout": 60},
    )
    assert p.defaults.retry == RetryPolicy(max_retries=1, delay_seconds=9)
    assert (p.defaults.cache, p.defaults.timeout_seconds) == (True, 60)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        pytest.param(
            {"default_args": {"retry_dealy": 5}},
            "default_args.retry_dealy",
            "unknown default_args key 'retry_dealy'; did you mean 'retry_delay'?",
            id="typo",
        ),
        pytest.param(
            {"default_args": {"start_date": "2024-01-01"}},
            "default_args.start_date",
            "unknown default_args key 'start_date'; stageflow maps: owner, retries, "
            "retry_delay, max_retry_delay, retry_exponential_backoff, execution_timeout, pool, "
            "priority_weight, trigger_rule, depends_on_past, email, email_on_failure, "
            "email_on_retry (other task settings go under `defaults:`)",
            id="unknown",
        ),
        pytest.param(
            {"default_args": {"retries": "three"}},
            "default_args.retries",
            "retries must be a whole number of retries (0 or more), got 'three'",
            id="retries-text",
        ),
        pytest.param(
            {"default_args": {"retries": -1}},
            "default_args.retries",
            "retries must be a whole number of retries (0 or more), got -1",
            id="retries-negative",
        ),
        pytest.param(
            {"default_args": {"retry_delay": "soon"}},
            "default_args.retry_delay",
            'retry_delay must be a duration: seconds, "0:05:00", "5m", '
            "\"timedelta(minutes=5)\" or {minutes: 5}; got 'soon'",
            id="delay-not-a-duration",
        ),
        pytest.param(
            {"default_args": {"execution_timeout": 0}},
            "default_args.execution_timeout",
            "execution_timeout must be more than 0 seconds",
            id="zero-timeout",
        ),
        pytest.param(
            {"default_args": {"retry_exponential_backoff": "yes"}},
            "default_args.retry_exponential_backoff",
            "retry_exponential_backoff must be true or false, got 'yes'",
            id="backoff-not-bool",
        ),
        pytest.param(
            {"default_args": {"email": 3}},
            "default_args.email",
            "email must be an address or a list of them, got 3",
            id="email-not-text",
        ),
        pytest.param(
            {"default_args": {"depends_on_past": True}},
            "default_args.depends_on_past",
            "depends_on_past: true is not supported: a stageflow run never waits for the "
            "previous run's tasks; remove it or set it to false",
            id="depends_on_past",
        ),
        pytest.param(
            {"owner": "a", "default_args": {"owner": "b"}},
            "default_args.owner",
            "default_args.owner and owner are both given; keep one",
            id="owner-twice",
        ),
        pytest.param(
            {"defaults": {"retry": {"max_retries": 1}}, "default_args": {"retries": 2}},
            "default_args.retries",
            "default_args.retries and defaults.retry.max_retries are both given; keep one",
            id="retries-twice",
        ),
        pytest.param(
            {"defaults": {"timeout_seconds": 5}, "default_args": {"execution_timeout": 6}},
            "default_args.execution_timeout",
            "default_args.execution_timeout and defaults.timeout_seconds are both given; keep one",
            id="timeout-twice",
        ),
        pytest.param(
            {"default_args": ["retries", 3]},
            "default_args",
            "default_args must be a mapping (Airflow's default arguments), got ['retries', 3]; "
            "or write `defaults:`",
            id="not-a-mapping",
        ),
    ],
)
def test_default_args_that_cannot_be_mapped_are_named(
    fields: dict[str, Any], field: str, message: str
) -> None:
    assert problems(name="p", **fields) == [(field, message)]


def test_every_unmappable_default_arg_is_reported_at_once() -> None:
    found = problems(
        name="p",
        default_args={"retries": 3, "retry_dealy": 5, "execution_timeout": "x", "owner": 1},
    )
    assert [f for f, _ in found] == [
        "default_args.retry_dealy",
        "default_args.execution_timeout",
        "default_args.owner",
    ]


# -- email: on_failure / on_retry hooks, and a note when no address is given ------------


@pytest.mark.parametrize(
    ("args", "failure", "retry", "noted"),
    [
        pytest.param(
            {"email_on_failure": True}, [], [], "default_args.email_on_failure:", id="no-address"
        ),
        pytest.param(
            {"email": "a@b.c", "email_on_failure": True, "email_on_retry": True},
            [["a@b.c"]],
            [["a@b.c"]],
            None,
            id="both",
        ),
        pytest.param(
            {"email": ["a@b.c", "d@e.f"]},
            [["a@b.c", "d@e.f"]],
            [],
            None,
            id="airflow-default-is-on",
        ),
        pytest.param({"email": "a@b.c", "email_on_failure": False}, [], [], None, id="off"),
        pytest.param({"retries": 1}, [], [], None, id="no-email"),
    ],
)
def test_email_becomes_hooks(
    args: dict[str, Any], failure: list[list[str]], retry: list[list[str]], noted: str | None
) -> None:
    p = load(name="p", default_args=args)
    assert p.owner is None and p.title is None
    assert [c.email for c in p.on_failure] == failure
    assert [c.email for c in p.on_retry] == retry
    if noted is None:
        assert p._notes == []
    else:
        [note] = p._notes
        assert noted in note and "default_args.email" in note


def test_email_hook_is_added_to_the_hooks_given() -> None:
    p = load(
        name="p",
        default_args={"email": "a@b.c"},
        on_failure=[{"webhook": "https://hooks.example.com/x"}],
    )
    assert [c.kind for c in p.on_failure] == ["webhook", "email"]


def test_seed_notes_of_what_is_not_a_pipeline_mapping() -> None:
    assert seed_notes(["x"]) == []
    assert seed_notes({"default_args": "x"}) == []


# -- deployment -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["task_type", "operator"])
def test_deployment_is_model_deployment(key: str) -> None:
    p = pipeline_from_data({"name": "p", "tasks": [{"task_id": "ship", key: "deployment"}]})
    assert p.task("ship").operator == "model_deployment"
