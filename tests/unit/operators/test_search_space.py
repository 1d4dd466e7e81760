"""search_space's candidates (grid order, seeded random draws without repeats,
validation), and the operators that take them: model_training merging a
candidate's hyperparameters, model_selection ranking the lists a mapped task
outputs (evaluations, or trained models by a training metric)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.datasets import load_iris

from stageflow.operators import registry
from stageflow.operators.base import TaskFailed
from stageflow.operators.ml.evaluation import EvaluationParams, ModelEvaluation
from stageflow.operators.ml.features import FeatureEngineering, FeatureParams
from stageflow.operators.ml.registry_ops import ModelSelection, SelectionParams
from stageflow.operators.ml.search import SearchSpace, SearchSpaceParams, candidates
from stageflow.operators.ml.training import ModelTraining, TrainingParams
from stageflow.runtime.plan import plan_problems
from stageflow.spec.models import Pipeline, Task
from support.ml import make_ctx, metadata


def space(**params: Any) -> list[dict[str, Any]]:
    return candidates(SearchSpaceParams.model_validate(params))


def chosen(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(c["hyperparameters"].values()) for c in items]


# -- candidates ---------------------------------------------------------------------


def test_grid_is_the_full_product_first_hyperparameter_slowest() -> None:
    out = space(space={"max_depth": [2, None], "criterion": ["gini", "entropy", "log_loss"]})
    assert chosen(out) == [
        (2, "gini"),
        (2, "entropy"),
        (2, "log_loss"),
        (None, "gini"),
        (None, "entropy"),
        (None, "log_loss"),
    ]
    assert [c["index"] for c in out] == list(range(6))
    assert all(c["kind"] == "candidate" for c in out)
    assert list(out[0]["hyperparameters"]) == ["max_depth", "criterion"]


def test_random_is_seeded_distinct_in_grid_order_and_drawn_from_the_grid() -> None:
    grid = {"a": [1, 2, 3, 4], "b": [0.1, 0.2, 0.3], "c": ["x", "y"]}
    full = chosen(space(space=grid))
    first = space(method="random", n_iter=7, seed=3, space=grid)
    assert first == space(method="random", n_iter=7, seed=3, space=grid)  # reproducible
    picked = chosen(first)
    assert len(picked) == 7 and len(set(picked)) == 7
    assert set(picked) <= set(full)
    assert picked == sorted(picked, key=full.index)  # listed in grid order
    assert [c["index"] for c in first] == list(range(7))
    others = {tuple(chosen(space(method="random", n_iter=7, seed=s, space=grid))) for s in range(5)}
    assert len(others) > 1  # the seed matters


def test_random_is_capped_at_the_grid_size() -> None:
    grid = {"a": [1, 2], "b": [True, False]}
    assert space(method="random", n_iter=50, seed=0, space=grid) == space(space=grid)


def test_random_draws_from_a_huge_space_without_listing_it() -> None:
    huge = {f"p{i}": list(range(10)) for i in range(12)}  # 10**12 combinations
    out = space(method="random", n_iter=20, seed=1, space=huge)
    assert len({json.dumps(c["hyperparameters"], sort_keys=True) for c in out}) == 20
    assert all(set(c["hyperparameters"]) == set(huge) for c in out)


def test_every_position_decodes_to_the_product_order() -> None:
    grid = {"a": [1, 2, 3], "b": ["x", "y"], "c": [None, 0.5]}
    # n_iter = the grid size draws every position: it must be the product exactly.
    assert chosen(space(method="random", n_iter=12, seed=9, space=grid)) == list(
        itertools.product(*grid.values())
    )


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        pytest.param({"space": {}}, "parameters.space", "space is empty", id="empty"),
        pytest.param(
            {"space": {"max_depth": 3}},
            "parameters.space",
            "space.max_depth is 3, not a list of values to try; "
            "write it as a list, e.g. max_depth: [3]",
            id="not-a-list",
        ),
        pytest.param(
            {"space": {"max_depth": "deep"}},
            "parameters.space",
            "space.max_depth is 'deep', not a list",
            id="a-string",
        ),
        pytest.param(
            {"space": {"C": []}}, "parameters.space", "space.C is an empty list", id="no-values"
        ),
        pytest.param(
            {"space": {"C": [1, 2, 1]}}, "parameters.space", "space.C lists 1 more", id="repeat"
        ),
        pytest.param(
            {"space": [1, 2]}, "parameters.space", "space must map each hyperparameter", id="list"
        ),
        pytest.param(
            {"method": "random", "n_iter": 0, "space": {"C": [1]}},
            "parameters.n_iter",
            "n_iter is 0; random search needs at least 1 candidate",
            id="n_iter",
        ),
        pytest.param(
            {"n_iter": 4, "space": {"C": [1]}},
            "parameters",
            "n_iter applies to method: random",
            id="n_iter-with-grid",
        ),
        pytest.param(
            {"method": "bayes", "space": {"C": [1]}}, "parameters.method", "'grid' or", id="method"
        ),
        pytest.param({}, "parameters.space", "needs parameter 'space'", id="missing"),
    ],
)
def test_a_bad_spec_is_a_problem_naming_the_task_and_field(
    params: dict[str, Any], field: str, message: str
) -> None:
    task = Task("candidates", operator="search_space", parameters=params)
    [problem] = registry.task_problems(task, params, {})
    assert (problem.task, problem.field) == ("candidates", field)
    assert message in problem.message


def test_the_operator_outputs_and_records_the_candidates(tmp_path: Path) -> None:
    assert registry.get("search_space") is SearchSpace
    ctx = make_ctx(tmp_path, "candidates")
    params = SearchSpaceParams.model_validate(
        {"method": "random", "n_iter": 3, "seed": 0, "space": {"a": [1, 2], "b": [3, 4]}}
    )
    out = SearchSpace().run(params, {}, ctx)
    assert out == candidates(params)
    assert metadata(ctx)["metrics"] == {"candidates": 3, "grid_size": 4}


# -- model_training with a candidate ----------------------------------------------------


@pytest.fixture(scope="module")
def feats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    frame: pd.DataFrame = load_iris(as_frame=True).frame
    out: dict[str, Any] = FeatureEngineering().run(
        FeatureParams.model_validate({"steps": [{"scale": {}}], "seed": 0, "test_size": 0.3}),
        {"data": frame},
        make_ctx(tmp_path_factory.mktemp("features"), "features"),
    )
    return out


def train(
    tmp_path: Path, feats: dict[str, Any], candidate: Any, task: str = "train[0]", **params: Any
) -> dict[str, Any]:
    ctx = make_ctx(tmp_path, task)
    out: dict[str, Any] = ModelTraining().run(
        TrainingParams.model_validate({"algorithm": "decision_tree", "seed": 0, **params}),
        {"features": feats, "grid": candidate},
        ctx,
    )
    return out


def candidate(index: int, **hyperparameters: Any) -> dict[str, Any]:
    return {"kind": "candidate", "index": index, "hyperparameters": hyperparameters}


def test_training_merges_the_candidate_over_its_hyperparameters(
    tmp_path: Path, feats: dict[str, Any]
) -> None:
    out = train(
        tmp_path,
        feats,
        candidate(2, max_depth=1, criterion="entropy"),
        task="train[2]",
        hyperparameters={"max_depth": 8, "min_samples_leaf": 3},
    )
    model = out["estimator"].named_steps["model"]
    assert (model.max_depth, model.criterion, model.min_samples_leaf) == (1, "entropy", 3)
    assert out["hyperparameters"] == {"max_depth": 1, "criterion": "entropy", "min_samples_leaf": 3}
    assert out["candidate"] == {
        "index": 2,
        "hyperparameters": {"max_depth": 1, "criterion": "entropy"},
        "source": "grid",
    }
    ctx = make_ctx(tmp_path, "train[2]")
    assert metadata(ctx)["info"]["candidate"] == 2
    plain = ModelTraining().run(
        TrainingParams.model_validate({"algorithm": "decision_tree", "seed": 0}),
        {"features": feats},
        make_ctx(tmp_path, "plain"),
    )
    assert plain["candidate"] is None


def test_a_misspelt_candidate_hyperparameter_fails_with_a_did_you_mean(
    tmp_path: Path, feats: dict[str, Any]
) -> None:
    with pytest.raises(TaskFailed) as info:
        train(tmp_path, feats, candidate(1, max_dept=3))
    assert str(info.value).startswith(
        "model_training: DecisionTreeClassifier has no hyperparameter 'max_dept' "
        "(from candidate 1 of 'grid'); did you mean 'max_depth'?"
    )
    with pytest.raises(TaskFailed, match=r"no hyperparameter 'max_dept'; did you mean"):
        train(tmp_path, feats, candidate(1, max_depth=3), hyperparameters={"max_dept": 3})


def test_a_list_of_candidates_asks_for_map_over(tmp_path: Path, feats: dict[str, Any]) -> None:
    with pytest.raises(TaskFailed) as info:
        train(tmp_path, feats, [candidate(0, max_depth=1), candidate(1, max_depth=2)])
    assert "input 'grid' is a list of 2 search candidates; add `map_over: grid`" in str(info.value)


def test_search_may_not_choose_what_the_candidate_sets(
    tmp_path: Path, feats: dict[str, Any]
) -> None:
    with pytest.raises(TaskFailed, match=r"search.space and candidate 0 of 'grid' both choose"):
        train(
            tmp_path,
            feats,
            candidate(0, max_depth=1),
            search={"space": {"max_depth": [1, 2]}, "cv": 2},
        )


# -- model_selection over a mapped task's list ----------------------------------------------


def test_selection_ranks_the_elements_of_a_mapped_evaluation(
    tmp_path: Path, feats: dict[str, Any]
) -> None:
    depths = [1, 3, 2]
    evaluations = []
    for k, depth in enumerate(depths):
        model = train(tmp_path, feats, candidate(k, max_depth=depth), task=f"train[{k}]")
        out = ModelEvaluation().run(
            EvaluationParams(pictures=False, metric="log_loss"),
            {"features": feats, "train": model},
            make_ctx(tmp_path, f"evaluate[{k}]"),
        )
        evaluations.append(out)
    ctx = make_ctx(tmp_path, "select")
    best = ModelSelection().run(SelectionParams(), {"evaluate": evaluations}, ctx)
    losses = [e["metrics"]["log_loss"] for e in evaluations]
    k = losses.index(min(losses))  # the evaluations' primary metric; lower is better
    assert best["selection"]["metric"] == "log_loss"
    assert best["selection"]["selected"] == f"evaluate[{k}]"
    assert best["candidate"]["index"] == k
    ranking = best["selection"]["ranking"]
    assert [r["value"] for r in ranking] == sorted(losses)
    assert sorted(r["task"] for r in ranking) == ["evaluate[0]", "evaluate[1]", "evaluate[2]"]
    assert all(r["candidate"]["hyperparameters"]["max_depth"] in depths for r in ranking)
    assert metadata(ctx)["info"]["selected"] == f"evaluate[{k}]"

    only = ModelSelection().run(
        SelectionParams(metric="accuracy", candidates=["evaluate[0]", "evaluate[2]"]),
        {"evaluate": evaluations},
        make_ctx(tmp_path, "select2"),
    )
    assert {r["task"] for r in only["selection"]["ranking"]} == {"evaluate[0]", "evaluate[2]"}


def test_selection_ranks_trained_models_by_cv_mean_else_the_test_score(
    tmp_path: Path, feats: dict[str, Any]
) -> None:
    models = [
        train(tmp_path, feats, candidate(k, max_depth=d), f"train[{k}]", cross_validation=3)
        for k, d in enumerate([1, 4])
    ]
    best = ModelSelection().run(SelectionParams(), {"train": models}, make_ctx(tmp_path, "s"))
    scores = [m["training_metrics"]["cv_mean"] for m in models]
    assert best["selection"]["metric"] == "cv_mean"
    assert best["selection"]["selected"] == f"train[{scores.index(max(scores))}]"
    assert best["kind"] == "model"

    plain = train(tmp_path, feats, candidate(0, max_depth=1), "t[0]")  # no cross-validation
    fallback = ModelSelection().run(SelectionParams(), {"t": [plain]}, make_ctx(tmp_path, "s2"))
    assert fallback["selection"]["metric"] == "test_accuracy"


def test_selection_without_a_held_out_score_says_what_to_do(tmp_path: Path) -> None:
    model = {"kind": "model", "estimator": None, "training_metrics": {"train_accuracy": 1.0}}
    with pytest.raises(TaskFailed) as info:
        ModelSelection().run(SelectionParams(), {"train": [model]}, make_ctx(tmp_path, "s"))
    message = str(info.value)
    assert "no held-out score to rank by (cv_mean or test_accuracy)" in message
    assert "set `cross_validation:`" in message and "they have: train_accuracy" in message


# -- hyperparameter names checked by validation (issue 11) ------------------------------


def test_misspelt_hyperparameters_are_problems_before_running() -> None:
    pipeline = Pipeline(
        "search",
        tasks=[
            Task(
                "features",
                operator="feature_engineering",
                parameters={"task_type": "${params.kind}"},
            ),
            Task(
                "typed", operator="feature_engineering", parameters={"task_type": "classification"}
            ),
            Task(
                "candidates",
                operator="search_space",
                parameters={"space": {"max_dept": [1, 2], "criterion": ["gini"]}},
            ),
            Task(
                "train",
                operator="model_training",
                upstream=["features", "candidates"],
                map_over="candidates",
                parameters={
                    "algorithm": "random_forest",
                    "hyperparameters": {"n_estimator": 10, "max_depth": 3},
                    "search": {"space": {"min_samples_lef": [1, 2]}},
                },
            ),
            Task(
                "train_typed",
                operator="model_training",
                upstream=["typed"],
                parameters={"algorithm": "random_forest", "hyperparameters": {"n_estimator": 10}},
            ),
            Task(
                "train_path",
                operator="model_training",
                upstream=["typed"],
                parameters={"algorithm": "sklearn.svm.LinearSVC", "hyperparameters": {"c": 1}},
            ),
        ],
        params={"kind": "regression"},
    )
    found = [(p.task, p.field, p.message) for p in plan_problems(pipeline)]
    assert found == [
        (
            "train",
            "parameters.hyperparameters.n_estimator",
            "RandomForestRegressor has no hyperparameter 'n_estimator'; "
            "did you mean 'n_estimators'?",
        ),
        (
            "train",
            "parameters.search.space.min_samples_lef",
            "search.space: RandomForestRegressor has no hyperparameter 'min_samples_lef'; "
            "did you mean 'min_samples_leaf'?",
        ),
        (
            "candidates",
            "parameters.space.max_dept",
            "task 'train' trains these candidates: RandomForestRegressor has no "
            "hyperparameter 'max_dept'; did you mean 'max_depth'?",
        ),
        (
            "train_typed",
            "parameters.hyperparameters.n_estimator",
            "RandomForestClassifier has no hyperparameter 'n_estimator'; "
            "did you mean 'n_estimators'?",
        ),
        (
            "train_path",
            "parameters.hyperparameters.c",
            "LinearSVC has no hyperparameter 'c'; did you mean 'C'?",
        ),
    ]


def test_without_a_known_task_type_a_name_of_either_estimator_passes() -> None:
    task = Task(
        "train",
        operator="model_training",
        parameters={"algorithm": "random_forest", "hyperparameters": {"class_weight": None}},
    )
    assert registry.task_problems(task, task.parameters, {}) == []
    task = Task(
        "train",
        operator="model_training",
        parameters={"algorithm": "random_forest", "hyperparameters": {"n_estimator": 5}},
    )
    [problem] = registry.task_problems(task, task.parameters, {})
    assert problem.message == (
        "neither RandomForestClassifier nor RandomForestRegressor has a hyperparameter "
        "'n_estimator'; did you mean 'n_estimators'?"
    )
