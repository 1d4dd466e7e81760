"""model_evaluation (metrics, thresholds, pictures) and model_selection on real models."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from stageflow.operators.base import TaskFailed
from stageflow.operators.ml import plots
from stageflow.operators.ml.evaluation import EvaluationParams, ModelEvaluation
from stageflow.operators.ml.features import FeatureEngineering, FeatureParams
from stageflow.operators.ml.ingestion import DataIngestion, IngestionParams
from stageflow.operators.ml.registry_ops import ModelSelection, SelectionParams
from stageflow.operators.ml.training import ModelTraining, TrainingParams
from support.ml import make_ctx, metadata


def prepared(tmp_path: Path, frame: Any, algorithm: str, **extra: Any) -> tuple[Any, Any]:
    feats = FeatureEngineering().run(
        FeatureParams.model_validate({"steps": [{"scale": {}}], "seed": 0, **extra}),
        {"data": frame},
        make_ctx(tmp_path, "features"),
    )
    model = ModelTraining().run(
        TrainingParams.model_validate({"algorithm": algorithm, "seed": 0}),
        {"features": feats},
        make_ctx(tmp_path, f"train_{algorithm}"),
    )
    return feats, model


def evaluate(tmp_path: Path, feats: Any, model: Any, task: str = "evaluate", **params: Any) -> Any:
    ctx = make_ctx(tmp_path, task)
    params_model = EvaluationParams.model_validate(params)
    return ModelEvaluation().run(params_model, {"features": feats, "train": model}, ctx), ctx


def test_binary_classification_metrics_and_pictures(tmp_path: Path) -> None:
    frame = load_breast_cancer(as_frame=True).frame
    feats, model = prepared(tmp_path, frame, "logistic_regression")
    out, ctx = evaluate(tmp_path, feats, model, thresholds={"accuracy": 0.9, "log_loss": 0.5})
    metrics = out["metrics"]
    assert set(metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert metrics["accuracy"] > 0.9 and metrics["roc_auc"] > 0.95
    assert out["kind"] == "evaluation" and out["estimator"] is model["estimator"]
    assert set(out["pictures"]) == {"confusion_matrix", "roc_curve"}
    for uri in out["pictures"].values():
        with Image.open(uri) as picture:
            assert picture.format == "PNG" and picture.size == (640, 480)
    assert metadata(ctx)["metrics"]["roc_auc"] == metrics["roc_auc"]
    assert {w["kind"] for w in metadata(ctx)["writes"]} == {"picture", "report"}


def test_multiclass_uses_macro_averages_and_one_roc_per_class(tmp_path: Path) -> None:
    feats, model = prepared(tmp_path, load_iris(as_frame=True).frame, "random_forest")
    out, _ = evaluate(tmp_path, feats, model, metrics=["accuracy", "f1", "roc_auc"])
    assert set(out["metrics"]) == {"accuracy", "f1", "roc_auc"}
    assert out["metrics"]["f1"] > 0.8


def test_regression_metrics_and_residuals(tmp_path: Path) -> None:
    frame = load_diabetes(as_frame=True).frame
    feats, model = prepared(tmp_path, frame, "ridge", task_type="regression")
    out, _ = evaluate(tmp_path, feats, model, thresholds={"rmse": 80.0, "r2": 0.2})
    assert set(out["metrics"]) == {"rmse", "mae", "mse", "r2"}
    assert out["metrics"]["rmse"] == pytest.approx(out["metrics"]["mse"] ** 0.5)
    assert set(out["pictures"]) == {"residuals"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param(
            {"thresholds": {"accuracy": 0.999}},
            r"^model_evaluation: accuracy 0\.\d{4} is below the threshold 0\.999$",
            id="below",
        ),
        pytest.param(
            {"thresholds": {"log_loss": 0.0001}},
            r"log_loss 0\.\d{4} is above the threshold 0\.0001",
            id="error-above",
        ),
        pytest.param(
            {"thresholds": {"auc": 0.5}}, r"threshold for 'auc', which was not computed", id="name"
        ),
        pytest.param({"metrics": ["rmse"]}, r"unknown classification metric rmse", id="metric"),
        pytest.param({"split": "holdout"}, r"no holdout rows to score", id="empty-split"),
    ],
)
def test_evaluation_failures(tmp_path: Path, params: dict[str, Any], message: str) -> None:
    feats, model = prepared(tmp_path, load_breast_cancer(as_frame=True).frame, "knn")
    with pytest.raises(TaskFailed, match=message):
        evaluate(tmp_path, feats, model, **params)


def test_the_report_and_pictures_exist_even_when_the_gate_fails(tmp_path: Path) -> None:
    feats, model = prepared(tmp_path, load_breast_cancer(as_frame=True).frame, "knn")
    with pytest.raises(TaskFailed):
        evaluate(tmp_path, feats, model, thresholds={"accuracy": 0.999})
    folder = tmp_path / "artifacts" / "runs" / "r1" / "evaluate"
    assert sorted(p.name for p in folder.iterdir()) == [
        "confusion_matrix.png",
        "evaluation.json",
        "roc_curve.png",
    ]


def test_pictures_name_the_classes_as_the_data_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = DataIngestion().run(
        IngestionParams.model_validate({"source": "sklearn:breast_cancer"}),
        {},
        make_ctx(tmp_path, "ingest"),
    )
    feats, model = prepared(tmp_path, frame, "logistic_regression")
    assert feats["class_names"] == {"0": "malignant", "1": "benign"}
    drawn: dict[str, Any] = {}

    def confusion(matrix: Any, labels: list[str], title: str) -> bytes:
        drawn["confusion"] = labels
        return b"png"

    def roc(curves: Any, title: str) -> bytes:
        drawn["roc"] = ([c[0] for c in curves], title)
        return b"png"

    monkeypatch.setattr(plots, "confusion_matrix_png", confusion)
    monkeypatch.setattr(plots, "roc_png", roc)
    evaluate(tmp_path, feats, model)
    assert drawn == {
        "confusion": ["malignant", "benign"],
        "roc": (["benign"], "logistic_regression: ROC (positive class: benign)"),
    }
    # Without names in the data, the label values are the names.
    feats, model = prepared(tmp_path, load_iris(as_frame=True).frame, "logistic_regression")
    assert feats["class_names"] is None
    evaluate(tmp_path, feats, model)
    assert drawn["confusion"] == ["0", "1", "2"] and drawn["roc"][0] == ["0", "1", "2"]


def test_the_pictures_are_scikit_learn_displays_with_proper_axes() -> None:
    figure = plots.confusion_matrix_figure([[50, 3], [0, 89]], ["malignant", "benign"], "cm")
    [ax, _colorbar] = figure.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["malignant", "benign"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["malignant", "benign"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert ax.yaxis.label.get_rotation() == 90  # along the axis, not across the top

    perfect = [("benign", [0.0, 0.0, 1.0], [0.0, 1.0, 1.0], 1.0)]
    [ax] = plots.roc_figure(perfect, "roc").axes
    low, high = ax.get_ylim()
    assert low < 0 and high > 1 and ax.get_xlim()[0] < 0  # the curve is off the frame
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["benign (AUC = 1.00)", "Chance level (AUC = 0.5)"]

    rng = np.random.default_rng(0)
    y_true = rng.normal(150, 70, 200)
    [ax] = plots.residuals_figure(y_true, y_true + rng.normal(3, 55, 200), "residuals").axes
    ticks = list(ax.get_yticks())
    assert 0 in ticks
    assert all(t % 25 == 0 for t in ticks), ticks  # round steps
    assert ax.yaxis.label.get_rotation() == 90
    png = plots.residuals_png(y_true, y_true + 1, "r")
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG" and picture.size == (640, 480)


def test_selection_ranks_by_metric_and_keeps_upstream_order_on_ties(tmp_path: Path) -> None:
    frame = load_breast_cancer(as_frame=True).frame
    evaluations = {}
    for algorithm in ("logistic_regression", "knn", "decision_tree"):
        feats, model = prepared(tmp_path, frame, algorithm)
        evaluations[f"evaluate_{algorithm}"], _ = evaluate(
            tmp_path, feats, model, task=f"evaluate_{algorithm}", pictures=False
        )
    tie = dict(evaluations["evaluate_knn"])
    evaluations["evaluate_knn_copy"] = tie
    ctx = make_ctx(tmp_path, "select")
    best = ModelSelection().run(SelectionParams(metric="accuracy"), evaluations, ctx)
    ranking = best["selection"]["ranking"]
    values = [r["value"] for r in ranking]
    assert values == sorted(values, reverse=True)
    assert best["metrics"]["accuracy"] == values[0]
    knn = [r["task"] for r in ranking if r["task"].startswith("evaluate_knn")]
    assert knn == ["evaluate_knn", "evaluate_knn_copy"]
    lower = ModelSelection().run(SelectionParams(metric="log_loss"), evaluations, ctx)
    assert lower["metrics"]["log_loss"] == min(
        e["metrics"]["log_loss"] for e in evaluations.values()
    )
    assert metadata(ctx)["info"]["selected"] == lower["selection"]["selected"]


@pytest.mark.parametrize(
    ("params", "inputs", "message"),
    [
        pytest.param({}, {}, r"no upstream model_evaluation output", id="none"),
        pytest.param(
            {"metric": "rmse"},
            {"e": {"kind": "evaluation", "estimator": None, "metrics": {"accuracy": 1.0}}},
            r"metric 'rmse' is missing from e; they have: accuracy",
            id="metric",
        ),
        pytest.param(
            {"candidates": ["x"]},
            {"e": {"kind": "evaluation", "estimator": None, "metrics": {}}},
            r"candidates x are not upstream evaluations",
            id="candidates",
        ),
    ],
)
def test_selection_failures(
    tmp_path: Path, params: dict[str, Any], inputs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TaskFailed, match=message):
        ModelSelection().run(
            SelectionParams.model_validate(params), inputs, make_ctx(tmp_path, "select")
        )
