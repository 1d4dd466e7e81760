"""feature_engineering and model_training on real data: splits, every step kind,
algorithms by name and by class path, cross-validation, search, gates, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from stageflow.operators import registry
from stageflow.operators.base import TaskFailed
from stageflow.operators.ml.features import FeatureEngineering, FeatureParams
from stageflow.operators.ml.training import ModelTraining, TrainingParams
from stageflow.spec.models import Task
from support.ml import make_ctx, metadata


def iris() -> pd.DataFrame:
    frame: pd.DataFrame = load_iris(as_frame=True).frame
    return frame


def mixed(rows: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    amount = rng.lognormal(3, 1, rows)
    colour = rng.choice(["red", "green", "blue"], rows)
    size = rng.choice(["S", "M", "L"], rows)
    frame = pd.DataFrame(
        {
            "amount": amount,
            "age": rng.integers(18, 80, rows).astype(float),
            "colour": colour,
            "size": size,
            "target": ((amount > 20) ^ (colour == "red")).astype(int),
        }
    )
    frame.loc[::7, "age"] = np.nan
    return frame


def features(tmp_path: Path, frame: Any, **params: Any) -> dict[str, Any]:
    ctx = make_ctx(tmp_path, "features")
    out: dict[str, Any] = FeatureEngineering().run(
        FeatureParams.model_validate(params), {"data": frame}, ctx
    )
    return out


def train(tmp_path: Path, feats: Any, task: str = "train", **params: Any) -> dict[str, Any]:
    ctx = make_ctx(tmp_path, task)
    out: dict[str, Any] = ModelTraining().run(
        TrainingParams.model_validate(params), {"features": feats}, ctx
    )
    return out


# -- feature_engineering ------------------------------------------------------------


def test_split_is_deterministic_stratified_and_keeps_a_holdout(tmp_path: Path) -> None:
    a = features(tmp_path, iris(), test_size=0.2, holdout_size=0.1, seed=5)
    b = features(tmp_path, iris(), test_size=0.2, holdout_size=0.1, seed=5)
    c = features(tmp_path, iris(), test_size=0.2, holdout_size=0.1, seed=6)
    assert (len(a["train"]), len(a["test"]), len(a["holdout"])) == (105, 30, 15)
    assert a["test"].index.equals(b["test"].index)
    assert not a["test"].index.equals(c["test"].index)
    assert a["test"]["target"].value_counts().tolist() == [10, 10, 10]  # stratified
    assert a["task_type"] == "classification" and a["target"] == "target"
    assert set(a["train"].index).isdisjoint(a["test"].index)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("target", "classification", id="labels"),
        pytest.param("amount", "regression", id="float"),
        pytest.param(None, "clustering", id="no-target"),
    ],
)
def test_task_type_is_inferred(tmp_path: Path, target: str | None, expected: str) -> None:
    frame = mixed().drop(columns=["colour", "size"])
    if target is None:
        frame = frame.drop(columns=["target"])
    out = features(tmp_path, frame, target=target, steps=[{"impute": {}}])
    assert out["task_type"] == expected


def test_every_step_kind_transforms_by_column_name(tmp_path: Path) -> None:
    out = features(
        tmp_path,
        mixed(),
        steps=[
            {"impute": {"strategy": "median"}},
            {"log": {"columns": ["amount"]}},
            {"binning": {"columns": ["age"], "bins": 4}},
            {"ordinal": {"columns": ["size"], "categories": {"size": ["S", "M", "L"]}}},
            {"one_hot": None},
            {"polynomial": {"columns": ["amount"], "degree": 2}},
            {"scale": {"method": "minmax"}},
            {"select_k_best": {"k": 5}},
        ],
    )
    assert len(out["feature_names_out"]) == 5
    transformed = out["transformer"].transform(out["test"].drop(columns=["target"]))
    assert list(transformed.columns) == out["feature_names_out"]
    assert transformed.to_numpy().min() >= -1e-9 and transformed.to_numpy().max() <= 1 + 1e-9
    assert metadata(make_ctx(tmp_path, "features"))["writes"][0]["kind"] == "transformer"


def test_drop_and_call_steps(tmp_path: Path) -> None:
    out = features(
        tmp_path,
        mixed(),
        steps=[
            {"drop": ["colour", "size"]},
            {"call": "ml_step_helpers:add_ratio", "kwargs": {"factor": 2.0}},
            {"impute": {}},
        ],
    )
    assert out["feature_names_out"] == ["amount", "age", "ratio"]


def test_short_and_long_step_spellings_agree() -> None:
    short = FeatureParams.model_validate(
        {"steps": [{"scale": {"method": "robust"}}, {"drop": ["a"]}]}
    )
    long = FeatureParams.model_validate(
        {"steps": [{"op": "scale", "method": "robust"}, {"op": "drop", "columns": ["a"]}]}
    )
    assert short == long


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({"target": "label"}, r"missing target column 'label'", id="target"),
        pytest.param(
            {"steps": [{"scale": {"columns": ["weight"]}}]},
            r"missing column for step scale 'weight'",
            id="step-column",
        ),
        pytest.param(
            {"steps": [{"select_k_best": {"k": 2}}]}, r"select_k_best needs numeric", id="text"
        ),
        pytest.param(
            {"steps": [{"log": {"columns": ["shifted"]}}]}, r"log needs values > -1", id="log"
        ),
        pytest.param(
            {"test_size": 0.6, "holdout_size": 0.5}, r"test_size \+ holdout_size", id="sizes"
        ),
    ],
)
def test_feature_failures(tmp_path: Path, params: dict[str, Any], message: str) -> None:
    frame = mixed().assign(shifted=lambda f: f["amount"] - 1000)
    with pytest.raises(TaskFailed, match=message):
        features(tmp_path, frame, **params)


def test_an_unknown_step_is_refused_before_running() -> None:
    with pytest.raises(ValidationError, match="normalise"):
        FeatureParams.model_validate({"steps": [{"normalise": {}}]})


STEP_NAMES = "impute, scale, one_hot, ordinal, log, binning, polynomial, select_k_best, drop, call"


def step_problems(parameters: dict[str, Any]) -> list[tuple[str | None, str]]:
    task = Task(id="features", operator="feature_engineering", parameters=parameters)
    return [(p.field, p.message) for p in registry.task_problems(task, parameters, {})]


@pytest.mark.parametrize(
    ("step", "field", "message"),
    [
        pytest.param(
            {"scael": {"method": "robust"}},
            "parameters.steps.0",
            f"unknown step 'scael'; did you mean 'scale'? the steps are {STEP_NAMES}",
            id="misspelt-kind",
        ),
        pytest.param(
            {"normalise": None},
            "parameters.steps.0",
            f"unknown step 'normalise'; the steps are {STEP_NAMES}",
            id="unknown-kind",
        ),
        pytest.param(
            {"op": "scael"},
            "parameters.steps.0",
            "unknown step 'scael'; did you mean 'scale'?",
            id="misspelt-op",
        ),
        pytest.param(
            {"impute": {"strategy": "median", "extra": 1}},
            "parameters.steps.0.impute.extra",
            "step 1 (impute) has no parameter 'extra'; it takes: strategy, fill_value, columns",
            id="extra-parameter",
        ),
        pytest.param(
            {"scale": {"method": "robust", "columnz": ["a"]}},
            "parameters.steps.0.scale.columnz",
            "step 1 (scale) has no parameter 'columnz'; did you mean 'columns'?",
            id="misspelt-parameter",
        ),
        pytest.param(
            {"select_k_best": {}},
            "parameters.steps.0.select_k_best.k",
            "step 1 (select_k_best) needs parameter 'k'; add it: `- select_k_best: {k: ...}`",
            id="missing-parameter",
        ),
        pytest.param(
            {"scale": "robust"},
            "parameters.steps.0",
            "step 1 (scale) takes its parameters as a mapping, as `- scale: {...}`; got 'robust'",
            id="body-not-a-mapping",
        ),
        pytest.param(
            {"scale": {}, "impute": {}},
            "parameters.steps.0",
            "step 1 names 2 kinds of step (scale, impute); give each its own item",
            id="two-kinds",
        ),
        pytest.param(
            {"method": "robust"},
            "parameters.steps.0",
            "step 1 names no kind of step: write `- NAME: {...}` or `- {op: NAME, ...}` "
            f"with NAME one of {STEP_NAMES}",
            id="no-kind",
        ),
    ],
)
def test_step_problems_name_the_step_and_its_parameters(
    step: dict[str, Any], field: str, message: str
) -> None:
    found = step_problems({"steps": [step]})
    assert len(found) == 1, found
    assert found[0][0] == field
    assert found[0][1].startswith("operator 'feature_engineering': ")
    assert message in found[0][1]


def test_every_step_problem_is_reported_at_once() -> None:
    found = step_problems(
        {
            "steps": [
                {"scael": {"method": "robust"}},
                {"impute": {"strategy": "median", "extra": 1}},
                {"scale": {"method": "robust", "columnz": ["a"]}},
            ]
        }
    )
    assert [field for field, _ in found] == [
        "parameters.steps.0",
        "parameters.steps.1.impute.extra",
        "parameters.steps.2.scale.columnz",
    ]
    assert "did you mean 'scale'?" in found[0][1]
    assert "step 2 (impute) has no parameter 'extra'" in found[1][1]
    assert "step 3 (scale) has no parameter 'columnz'; did you mean 'columns'?" in found[2][1]
    assert not any("it takes: target" in message for _, message in found)


# -- model_training -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "minimum"),
    [
        pytest.param("logistic_regression", 0.9, id="logistic"),
        pytest.param("random_forest", 0.9, id="forest"),
        pytest.param("knn", 0.9, id="knn"),
        pytest.param("sklearn.tree.DecisionTreeClassifier", 0.85, id="class-path"),
        pytest.param("sklearn.naive_bayes:GaussianNB", 0.85, id="colon-path"),
    ],
)
def test_classifiers_train_and_score(tmp_path: Path, algorithm: str, minimum: float) -> None:
    feats = features(tmp_path, iris(), steps=[{"scale": {}}], seed=1)
    model = train(tmp_path, feats, algorithm=algorithm, seed=0)
    assert model["kind"] == "model" and model["model_type"] == "classification"
    assert model["training_metrics"]["test_accuracy"] >= minimum
    assert model["classes"] == [0, 1, 2]
    # The model is the features' transformer and the estimator: it scores raw rows.
    raw = feats["test"].drop(columns=["target"])
    assert (model["estimator"].predict(raw) == feats["test"]["target"]).mean() >= minimum


def test_text_columns_go_through_the_transformer_into_the_model(tmp_path: Path) -> None:
    feats = features(tmp_path, mixed(), steps=[{"impute": {}}, {"one_hot": None}])
    model = train(tmp_path, feats, algorithm="gradient_boosting", seed=0)
    raw = mixed(10).drop(columns=["target"])
    assert set(model["estimator"].predict(raw)) <= {0, 1}


def test_regression_and_clustering(tmp_path: Path) -> None:
    frame = load_diabetes(as_frame=True).frame
    feats = features(tmp_path, frame, task_type="regression", steps=[{"scale": {}}])
    model = train(tmp_path, feats, algorithm="linear_regression")
    assert model["model_type"] == "regression"
    assert 0.3 < model["training_metrics"]["test_r2"] < 0.7
    blobs = iris().drop(columns=["target"])
    clusters = train(
        tmp_path,
        features(tmp_path, blobs, steps=[{"scale": {}}]),
        algorithm="kmeans",
        hyperparameters={"n_clusters": 3},
        seed=0,
    )
    assert clusters["training_metrics"]["train_silhouette"] > 0.3


def test_cross_validation_and_grid_search(tmp_path: Path) -> None:
    feats = features(tmp_path, load_breast_cancer(as_frame=True).frame, steps=[{"scale": {}}])
    model = train(
        tmp_path,
        feats,
        algorithm="logistic_regression",
        cross_validation=3,
        search={"method": "grid", "space": {"C": [0.01, 1.0]}, "cv": 3},
        seed=0,
    )
    metrics = model["training_metrics"]
    assert metrics["search_candidates"] == 2
    assert model["hyperparameters"]["C"] in (0.01, 1.0)
    assert 0.9 < metrics["cv_mean"] <= 1 and metrics["cv_std"] >= 0
    meta = metadata(make_ctx(tmp_path, "train"))
    assert meta["metrics"]["cv_mean"] == metrics["cv_mean"]
    assert meta["writes"][0]["kind"] == "model"


def test_seed_makes_training_repeatable(tmp_path: Path) -> None:
    feats = features(tmp_path, iris(), seed=3)
    a = train(
        tmp_path, feats, algorithm="random_forest", hyperparameters={"n_estimators": 5}, seed=9
    )
    b = train(
        tmp_path, feats, algorithm="random_forest", hyperparameters={"n_estimators": 5}, seed=9
    )
    raw = iris().drop(columns=["target"])
    proba_a = a["estimator"].predict_proba(raw)
    assert (proba_a == b["estimator"].predict_proba(raw)).all()
    assert a["hyperparameters"] == {"n_estimators": 5}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param(
            {"algorithm": "random_forest", "hyperparameters": {"n_estimator": 10}},
            r"RandomForestClassifier has no hyperparameter 'n_estimator'; "
            r"did you mean 'n_estimators'",
            id="hyperparameter",
        ),
        pytest.param(
            {"algorithm": "logistic_regression", "min_accuracy": 0.999},
            r"test accuracy 0\.\d+ is below min_accuracy 0\.999",
            id="min-accuracy",
        ),
        pytest.param(
            {"algorithm": "sklearn.ensemble.NoSuchForest"},
            r"module sklearn\.ensemble has no class NoSuchForest",
            id="class-path",
        ),
        pytest.param(
            {"algorithm": "nosuchlib.Model"},
            r"needs nosuchlib, which is not installed",
            id="module",
        ),
        pytest.param(
            {"algorithm": "linear_regression"},
            r"'linear_regression' is not a classification algorithm \(it is for regression\)",
            id="wrong-type",
        ),
    ],
)
def test_training_failures(tmp_path: Path, params: dict[str, Any], message: str) -> None:
    feats = features(tmp_path, iris(), seed=1)
    with pytest.raises(TaskFailed, match=message):
        train(tmp_path, feats, **params)


def test_unencoded_text_fails_with_the_fix(tmp_path: Path) -> None:
    feats = features(tmp_path, mixed(), steps=[{"impute": {}}])
    with pytest.raises(TaskFailed, match=r"columns colour, size are not numeric; encode them"):
        train(tmp_path, feats, algorithm="logistic_regression")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({"algorithm": "random_forrest"}, "did you mean 'random_forest'", id="typo"),
        pytest.param({"algorithm": "magic"}, "unknown algorithm 'magic'", id="unknown"),
        pytest.param(
            {"algorithm": "kmeans", "model_type": "regression"},
            "is for clustering, not regression",
            id="type",
        ),
    ],
)
def test_bad_algorithm_names_are_refused_before_running(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainingParams.model_validate(params)


def test_a_plain_dataframe_with_a_target_trains_on_all_rows(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "train")
    params = TrainingParams.model_validate({"algorithm": "random_forest", "min_accuracy": 0.9})
    model = ModelTraining().run(params, {"validate": iris()}, ctx)
    assert model["training_metrics"]["train_accuracy"] > 0.9
    assert "test_accuracy" not in model["training_metrics"]


# -- a task type guessed from the target (issue 11) ----------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param([0.5, 1.5, 2.25, 3.0] * 10, "regression", id="fractions"),
        pytest.param([float(v) for v in range(40)], "regression", id="whole-floats-many"),
        pytest.param([0.0, 1.0] * 20, "classification", id="whole-floats-few"),
        pytest.param(list(range(30)) * 2, "regression", id="ints-many"),
        pytest.param([v % 13 for v in range(24)], "regression", id="over-half-the-rows"),
        pytest.param([v % 3 for v in range(40)], "classification", id="ints-few"),
        pytest.param(["a", "b"] * 20, "classification", id="text"),
    ],
)
def test_the_task_type_guess_follows_the_target_values(target: list[Any], expected: str) -> None:
    from stageflow.operators.ml.features import infer_task_type

    assert infer_task_type(pd.DataFrame({"y": target}), "y") == expected


def test_a_whole_number_float_target_with_many_values_is_regression(tmp_path: Path) -> None:
    frame = load_diabetes(as_frame=True).frame  # 214 distinct whole numbers stored as floats
    out = features(tmp_path, frame, steps=[{"scale": {}}])
    assert out["task_type"] == "regression"
    assert (len(out["train"]), len(out["test"])) == (354, 88)


def test_a_failed_guess_says_which_task_type_fixes_it(tmp_path: Path) -> None:
    # 20 whole-number values over 56 rows: taken for classes, two of them with one row
    y = [v % 18 for v in range(54)] + [100, 101]
    frame = pd.DataFrame({"x": range(56), "y": y})
    with pytest.raises(TaskFailed) as info:
        features(tmp_path, frame, target="y")
    assert str(info.value) == (
        "feature_engineering: cannot split 56 rows stratified on 'y': 2 of its 20 classes "
        "have a single row (100, 101); task_type was guessed as classification "
        "('y' has 20 distinct whole-number values in 56 rows): set `task_type: regression` "
        "if 'y' is a quantity, or `stratify: false`"
    )
    with pytest.raises(TaskFailed) as info:
        features(tmp_path, frame, target="y", task_type="classification")
    assert str(info.value).endswith("have a single row (100, 101); set `stratify: false`")
    out = features(tmp_path, frame, target="y", task_type="regression")
    assert out["task_type"] == "regression"
