"""The ``ensemble`` operator on real data (scikit-learn's iris and diabetes): voting
and stacking over trained models, checked against the same combination done by
hand; its output evaluated, registered (a real local MLflow store) and
batch-scored downstream; ``examples/ensemble.yaml`` and ``validate`` through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from stageflow.operators.base import TaskFailed
from stageflow.operators.ml.ensemble import Ensemble, EnsembleParams
from stageflow.operators.ml.evaluation import EvaluationParams, ModelEvaluation
from stageflow.operators.ml.features import FeatureEngineering, FeatureParams
from stageflow.operators.ml.registry_ops import (
    BatchInference,
    BatchParams,
    ModelRegistration,
    RegistrationParams,
)
from stageflow.operators.ml.training import ModelTraining, TrainingParams
from support.ml import make_ctx, metadata

ROOT = Path(__file__).resolve().parents[2]
STAGEFLOW = Path(sys.executable).with_name("stageflow")


def train(home: Path, feats: Any, task: str, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = ModelTraining().run(
        TrainingParams.model_validate({"seed": 0, **params}),
        {"features": feats},
        make_ctx(home, task),
    )
    return out


def features(home: Path, frame: pd.DataFrame, task_type: str) -> dict[str, Any]:
    out: dict[str, Any] = FeatureEngineering().run(
        FeatureParams.model_validate(
            {"steps": [{"scale": {}}], "task_type": task_type, "seed": 0, "test_size": 0.3}
        ),
        {"data": frame},
        make_ctx(home, "features"),
    )
    return out


def combine(home: Path, data: dict[str, Any], members: list[str], task: str, **params: Any) -> Any:
    inputs = {"features": data["features"], **{m: data[m] for m in members}}
    return Ensemble().run(EnsembleParams.model_validate(params), inputs, make_ctx(home, task))


def split(data: dict[str, Any], name: str = "test") -> tuple[pd.DataFrame, pd.Series]:
    frame = data["features"][name]
    return frame.drop(columns=["target"]), frame["target"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if "MLFLOW_TRACKING_URI" in k}
    yield tmp_path_factory.mktemp("ensemble-home")
    os.environ.update(saved)


@pytest.fixture(scope="module")
def iris(home: Path) -> dict[str, Any]:
    """Iris with species names as labels (not 0..2), and three trained classifiers."""
    frame = load_iris(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "setosa", 1: "versicolor", 2: "virginica"})
    feats = features(home, frame, "classification")
    return {
        "features": feats,
        "train_lr": train(home, feats, "train_lr", algorithm="logistic_regression"),
        "train_tree": train(
            home, feats, "train_tree", algorithm="decision_tree", hyperparameters={"max_depth": 1}
        ),
        "train_nb": train(home, feats, "train_nb", algorithm="naive_bayes"),
    }


@pytest.fixture(scope="module")
def diabetes(home: Path) -> dict[str, Any]:
    feats = features(home, load_diabetes(as_frame=True).frame, "regression")
    return {
        "features": feats,
        "train_ridge": train(home, feats, "train_ridge", algorithm="ridge"),
        "train_tree": train(
            home, feats, "train_tree_r", algorithm="decision_tree", hyperparameters={"max_depth": 3}
        ),
    }


MEMBERS = ["train_lr", "train_tree", "train_nb"]


def test_soft_voting_of_trained_models_averages_their_probabilities(
    home: Path, iris: dict[str, Any]
) -> None:
    x, y = split(iris)
    before = {m: iris[m]["estimator"].predict_proba(x) for m in MEMBERS}
    out = combine(home, iris, MEMBERS, "soft", method="soft_voting", weights=[1, 2, 1])
    by_hand = (before["train_lr"] + 2 * before["train_tree"] + before["train_nb"]) / 4
    estimator = out["estimator"]
    assert np.allclose(estimator.predict_proba(x), by_hand)
    labels = np.array(iris["train_lr"]["classes"])[by_hand.argmax(axis=1)]
    assert list(estimator.predict(x)) == list(labels)
    # The members were used as trained: nothing was refit.
    for m in MEMBERS:
        assert np.array_equal(iris[m]["estimator"].predict_proba(x), before[m])
        assert estimator.named_estimators_[m].estimator is iris[m]["estimator"]
    # The ensemble's accuracy, computed and recorded like a trained model's.
    accuracy = float((estimator.predict(x) == y).mean())
    assert out["training_metrics"]["test_accuracy"] == pytest.approx(accuracy)
    recorded = metadata(make_ctx(home, "soft"))
    assert recorded["metrics"]["test_accuracy"] == pytest.approx(accuracy)
    assert recorded["info"]["hyperparameters"]["members"] == MEMBERS
    assert recorded["writes"][0]["kind"] == "model"
    # The same record as model_training's, plus the members.
    assert set(iris["train_lr"]) <= set(out)
    assert (out["kind"], out["algorithm"], out["model_type"]) == (
        "model",
        "ensemble",
        "classification",
    )
    assert out["classes"] == ["setosa", "versicolor", "virginica"]
    saved = joblib.load(out["model_file"])
    assert list(saved.predict(x)) == list(estimator.predict(x))


def test_hard_voting_counts_the_labels_each_model_predicts(
    home: Path, iris: dict[str, Any]
) -> None:
    x, _ = split(iris)
    out = combine(home, iris, MEMBERS, "hard", method="hard_voting")
    votes = pd.DataFrame({m: iris[m]["estimator"].predict(x) for m in MEMBERS})
    classes = iris["train_lr"]["classes"]

    def majority(row: pd.Series) -> str:
        counts = row.value_counts()
        best = counts[counts == counts.max()].index
        return str(min(best, key=classes.index))  # a tie goes to the first class

    expected = votes.apply(majority, axis=1)
    assert list(out["estimator"].predict(x)) == list(expected)
    assert out["hyperparameters"]["method"] == "hard_voting"


def test_stacking_fits_the_final_estimator_on_out_of_fold_predictions(
    home: Path, iris: dict[str, Any]
) -> None:
    x, y = split(iris)
    out = combine(home, iris, MEMBERS, "stack", method="stacking", cv=3, seed=0)
    estimator = out["estimator"]
    # By hand: out-of-fold probabilities of fresh copies on the training rows...
    x_train, y_train = split(iris, "train")
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    oof = [
        cross_val_predict(
            clone(iris[m]["estimator"]), x_train, y_train, cv=folds, method="predict_proba"
        )
        for m in MEMBERS
    ]
    classes, encoded = np.unique(y_train, return_inverse=True)
    final = LogisticRegression(max_iter=1000, random_state=0).fit(np.hstack(oof), encoded)
    # ...and at prediction time the trained members' probabilities.
    meta = np.hstack([iris[m]["estimator"].predict_proba(x) for m in MEMBERS])
    assert list(estimator.predict(x)) == list(classes[final.predict(meta)])
    assert np.allclose(estimator.predict_proba(x), final.predict_proba(meta))
    accuracy = float((estimator.predict(x) == y).mean())
    assert metadata(make_ctx(home, "stack"))["metrics"]["test_accuracy"] == pytest.approx(accuracy)
    assert out["hyperparameters"]["final_estimator"] == "logistic_regression"


def test_refit_trains_copies_and_leaves_the_models_alone(home: Path, iris: dict[str, Any]) -> None:
    out = combine(
        home, iris, ["train_lr", "train_tree"], "refit", method="stacking", refit=True, cv=3
    )
    fitted = out["estimator"].named_estimators_
    assert fitted["train_lr"] is not iris["train_lr"]["estimator"]
    x, _ = split(iris)
    assert np.allclose(
        fitted["train_lr"].predict_proba(x), iris["train_lr"]["estimator"].predict_proba(x)
    )  # the same model fit again on the same rows
    assert 0.8 <= out["training_metrics"]["test_accuracy"] <= 1.0


def test_regression_averages_and_stacks(home: Path, diabetes: dict[str, Any]) -> None:
    x, y = split(diabetes)
    members = ["train_ridge", "train_tree"]
    voted = combine(home, diabetes, members, "vote_r", weights=[3, 1])
    by_hand = (
        3 * diabetes["train_ridge"]["estimator"].predict(x)
        + diabetes["train_tree"]["estimator"].predict(x)
    ) / 4
    assert np.allclose(voted["estimator"].predict(x), by_hand)
    assert voted["model_type"] == "regression" and "test_r2" in voted["training_metrics"]
    stacked = combine(home, diabetes, members, "stack_r", method="stacking", cv=3)
    r2 = metadata(make_ctx(home, "stack_r"))["metrics"]["test_r2"]
    assert r2 == pytest.approx(stacked["estimator"].score(x, y))
    assert stacked["hyperparameters"]["final_estimator"] == "ridge"
    assert 0.2 < r2 < 0.8


def test_a_mapped_task_s_list_of_models_counts_as_its_elements(
    home: Path, iris: dict[str, Any]
) -> None:
    listed = {**iris, "train": [iris["train_lr"], iris["train_nb"]]}
    out = combine(home, listed, ["train"], "mapped", method="soft_voting")
    assert out["members"] == ["train[0]", "train[1]"]
    x, _ = split(iris)
    by_hand = (
        iris["train_lr"]["estimator"].predict_proba(x)
        + iris["train_nb"]["estimator"].predict_proba(x)
    ) / 2
    assert np.allclose(out["estimator"].predict_proba(x), by_hand)


def test_what_cannot_be_combined_fails_the_task_clearly(
    home: Path, iris: dict[str, Any], diabetes: dict[str, Any]
) -> None:
    with pytest.raises(TaskFailed, match="needs at least 2 trained models"):
        combine(home, iris, ["train_lr"], "one")
    mixed = {**iris, "train_ridge": diabetes["train_ridge"]}
    with pytest.raises(TaskFailed, match=r"mix kinds: train_lr \(classification\), train_ridge"):
        combine(home, mixed, ["train_lr", "train_ridge"], "mixed")
    other_rows = {**iris, "features": diabetes["features"]}
    with pytest.raises(TaskFailed, match="model 'train_lr' trained on other columns"):
        combine(home, other_rows, MEMBERS, "other_rows")


@pytest.mark.slow
def test_evaluate_register_and_score_downstream(home: Path, iris: dict[str, Any]) -> None:
    out = combine(home, iris, MEMBERS, "ensemble", method="soft_voting")
    evaluation = ModelEvaluation().run(
        EvaluationParams.model_validate({"pictures": True}),
        {"features": iris["features"], "ensemble": out},
        make_ctx(home, "evaluate"),
    )
    x, _ = split(iris)
    assert evaluation["metrics"]["accuracy"] == pytest.approx(
        out["training_metrics"]["test_accuracy"]
    )
    assert {"f1", "roc_auc", "log_loss"} <= set(evaluation["metrics"])
    registered = ModelRegistration().run(
        RegistrationParams.model_validate({"model_name": "iris-ensemble", "alias": "staging"}),
        {"evaluate": evaluation},
        make_ctx(home, "register"),
    )
    assert (registered["registered"], registered["version"]) == (True, "1")
    scored = BatchInference().run(
        BatchParams.model_validate({"model": "iris-ensemble@staging", "split": "test"}),
        {"features": iris["features"]},
        make_ctx(home, "score"),
    )
    assert list(scored["prediction"]) == list(out["estimator"].predict(x))


# -- through the CLI ----------------------------------------------------------------


def stageflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAGEFLOW_", "MLFLOW_"))}
    return subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_validate_refuses_a_bad_ensemble_with_exit_2(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    text = (ROOT / "examples" / "ensemble.yaml").read_text()
    text = text.replace(
        "      method: ${params.method}\n",
        "      method: ${params.method}\n      weights: [1, 2]\n",
    )
    spec.write_text(text)
    proc = stageflow(tmp_path, "validate", str(spec))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "task 'ensemble', field 'parameters.weights': 2 weights for 3 models" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_operators_show_ensemble_has_an_example() -> None:
    proc = subprocess.run(
        [str(STAGEFLOW), "operators", "show", "ensemble", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert {p["name"] for p in info["parameters"]} >= {
        "method",
        "weights",
        "final_estimator",
        "refit",
        "cv",
    }
    assert "operator: ensemble" in info["example"]


@pytest.mark.slow
def test_the_example_pipeline_runs_end_to_end(tmp_path: Path) -> None:
    """The example as it is, then stacked as the README shows (one MLflow store)."""
    runs = [
        ((), "soft_voting"),
        (("--param", "method=stacking", "--param", "model_name=stacked-classifier"), "stacking"),
    ]
    for args, model in runs:
        proc = stageflow(tmp_path, "run", "examples/ensemble.yaml", *args, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        states = {task: info["state"] for task, info in data["tasks"].items()}
        assert set(states.values()) == {"success"}, states
        assert {"ensemble", "evaluate", "register"} <= set(states)
        folder = tmp_path / "artifacts" / "runs" / data["run_id"]
        evaluation = json.loads((folder / "evaluate" / "evaluation.json").read_text())
        assert evaluation["model"] == model and evaluation["metrics"]["accuracy"] > 0.9
