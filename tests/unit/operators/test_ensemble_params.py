"""What ``stageflow validate`` refuses in an ``ensemble`` task before anything runs:
too few models, an upstream that gives no model, mixed kinds, weights of the wrong
length, an unknown method or final estimator (each naming the task and field)."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow.runtime.plan import plan_problems
from stageflow.spec.models import Pipeline, Task


def pipeline(ensemble: dict[str, Any], *extra: Task, task_type: str | None = None) -> Pipeline:
    """features -> train_a (logistic_regression), train_b (random_forest),
    train_c (naive_bayes) -> the ``ensemble`` task, plus ``extra`` tasks."""
    features: dict[str, Any] = {"target": "target"}
    if task_type is not None:
        features["task_type"] = task_type
    tasks = [
        Task(id="ingest", operator="data_ingestion", parameters={"source": "sklearn:iris"}),
        Task(
            id="features", operator="feature_engineering", upstream=["ingest"], parameters=features
        ),
        Task(
            id="train_a",
            operator="model_training",
            upstream=["features"],
            parameters={"algorithm": "logistic_regression"},
        ),
        Task(
            id="train_b",
            operator="model_training",
            upstream=["features"],
            parameters={"algorithm": "random_forest"},
        ),
        Task(
            id="train_c",
            operator="model_training",
            upstream=["features"],
            parameters={"algorithm": "naive_bayes"},
        ),
        *extra,
        Task(id="ensemble", operator="ensemble", **ensemble),
    ]
    return Pipeline(name="p", tasks=tasks)


def problems(ensemble: dict[str, Any], *extra: Task, **kw: Any) -> list[tuple[Any, ...]]:
    return [
        (p.task, p.field, p.message)
        for p in plan_problems(pipeline(ensemble, *extra, **kw))
        if p.task == "ensemble"
    ]


ALL = ["features", "train_a", "train_b", "train_c"]


@pytest.mark.parametrize(
    "parameters",
    [
        pytest.param({}, id="default-soft-voting"),
        pytest.param({"method": "hard_voting", "weights": [1, 2, 1]}, id="hard-weighted"),
        pytest.param(
            {"method": "stacking", "final_estimator": "random_forest", "cv": 3}, id="stacking"
        ),
        pytest.param({"method": "soft_voting", "refit": True}, id="refit"),
    ],
)
def test_a_good_ensemble_has_no_problems(parameters: dict[str, Any]) -> None:
    assert problems({"upstream": ALL, "parameters": parameters}) == []


def test_fewer_than_two_models() -> None:
    assert problems({"upstream": ["features", "train_a"]}) == [
        (
            "ensemble",
            "upstream",
            "an ensemble needs at least 2 model upstreams (model_training tasks), "
            "got 1 (train_a); list them under upstream",
        )
    ]


def test_an_upstream_that_gives_no_model() -> None:
    found = problems({"upstream": ["features", "train_a", "train_b", "ingest"]})
    assert found == [
        (
            "ensemble",
            "upstream",
            "upstream 'ingest' (data_ingestion) gives no trained model; an ensemble takes "
            "ensemble or model_training tasks and their features task: remove it from upstream",
        )
    ]


def test_the_features_must_be_an_upstream() -> None:
    found = problems({"upstream": ["train_a", "train_b"]})
    assert [(t, f) for t, f, _ in found] == [("ensemble", "upstream")]
    assert "add the feature_engineering task to upstream" in found[0][2]


def test_mixed_classification_and_regression() -> None:
    reg = Task(
        id="train_r",
        operator="model_training",
        upstream=["features"],
        parameters={"algorithm": "ridge"},
    )
    found = problems({"upstream": ["features", "train_a", "train_r"]}, reg)
    assert found == [
        (
            "ensemble",
            "upstream",
            "the models mix classification and regression: train_a (classification), "
            "train_r (regression); ensemble models of one kind",
        )
    ]


def test_weights_must_match_the_models() -> None:
    found = problems({"upstream": ALL, "parameters": {"weights": [1, 2]}})
    assert found == [
        (
            "ensemble",
            "parameters.weights",
            "2 weights for 3 models (train_a, train_b, train_c); give one weight per model, "
            "in upstream order",
        )
    ]


def test_weights_are_not_for_stacking_nor_final_estimator_for_voting() -> None:
    stacking = problems(
        {"upstream": ALL, "parameters": {"method": "stacking", "weights": [1, 1, 1]}}
    )
    assert [(f, m.split(";")[0]) for _, f, m in stacking] == [
        ("parameters.weights", "weights are for voting")
    ]
    voting = problems({"upstream": ALL, "parameters": {"final_estimator": "ridge"}})
    assert [(f, m) for _, f, m in voting] == [
        (
            "parameters.final_estimator",
            "final_estimator is for stacking; set method: stacking or drop it",
        )
    ]


def test_an_unknown_method() -> None:
    (found,) = problems({"upstream": ALL, "parameters": {"method": "averaging"}})
    assert found[:2] == ("ensemble", "parameters.method")
    assert "'soft_voting', 'hard_voting' or 'stacking'" in found[2]


def test_an_unknown_final_estimator_with_a_did_you_mean() -> None:
    found = problems(
        {
            "upstream": ALL,
            "parameters": {"method": "stacking", "final_estimator": "logistic_regresion"},
        }
    )
    assert found == [
        (
            "ensemble",
            "parameters.final_estimator",
            "operator 'ensemble': unknown final_estimator 'logistic_regresion'; "
            "did you mean 'logistic_regression'?",
        )
    ]


def test_a_final_estimator_of_the_other_kind() -> None:
    found = problems(
        {"upstream": ALL, "parameters": {"method": "stacking", "final_estimator": "ridge"}}
    )
    assert [(f, m.split(";")[0]) for _, f, m in found] == [
        ("parameters.final_estimator", "final_estimator 'ridge' is not a classification model")
    ]


def test_hard_voting_of_regression_models() -> None:
    tasks = [
        Task(
            id=f"reg_{algo}",
            operator="model_training",
            upstream=["features"],
            parameters={"algorithm": algo},
        )
        for algo in ("random_forest", "knn")
    ]
    found = problems(
        {
            "upstream": ["features", "reg_random_forest", "reg_knn"],
            "parameters": {"method": "hard_voting"},
        },
        *tasks,
        task_type="regression",  # the algorithms fit both kinds: the features say which
    )
    assert [(f, m.split(":")[0]) for _, f, m in found] == [
        ("parameters.method", "hard_voting is for classification; regression models are averaged")
    ]


def test_a_misspelt_final_hyperparameter() -> None:
    found = problems(
        {
            "upstream": ALL,
            "parameters": {"method": "stacking", "final_hyperparameters": {"c": 0.5}},
        }
    )
    assert found == [
        (
            "ensemble",
            "parameters.final_hyperparameters.c",
            "LogisticRegression has no hyperparameter 'c'; did you mean 'C'?",
        )
    ]


def test_clustering_models_are_refused() -> None:
    tasks = [
        Task(
            id=f"cluster_{k}",
            operator="model_training",
            upstream=["features"],
            parameters={"algorithm": "kmeans", "hyperparameters": {"n_clusters": k}},
        )
        for k in (2, 3)
    ]
    found = problems({"upstream": ["features", "cluster_2", "cluster_3"]}, *tasks)
    assert [(f, m.split(" (")[0]) for _, f, m in found] == [
        ("upstream", "clustering models cannot be ensembled")
    ]


def test_one_mapped_training_task_gives_several_models() -> None:
    tasks = [
        Task(
            id="candidates",
            operator="search_space",
            parameters={"space": {"max_depth": [1, 2, 3]}},
        ),
        Task(
            id="train",
            operator="model_training",
            upstream=["features", "candidates"],
            map_over="candidates",
            parameters={"algorithm": "decision_tree", "model_type": "classification"},
        ),
    ]
    assert problems({"upstream": ["features", "train"]}, *tasks) == []


def test_python_steps_may_give_models_or_features_checked_when_run() -> None:
    steps = [Task(id=f"step_{k}", call="steps:train") for k in (1, 2)]
    assert problems({"upstream": ["step_1", "step_2"]}, *steps) == []
    bash = Task(id="script", operator="bash", parameters={"command": "echo hi"})
    found = problems({"upstream": [*ALL, "script"]}, bash)
    assert [(f, m.split(";")[0]) for _, f, m in found] == [
        ("upstream", "upstream 'script' (bash) gives no trained model")
    ]
