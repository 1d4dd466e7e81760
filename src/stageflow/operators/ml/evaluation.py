"""The ``model_evaluation`` operator: metrics, gates, pictures, champion/challenger.

The model (from an upstream ``model_training``) scores the features' ``test``
rows (or ``holdout``/``train``, by ``split``). Metrics by task type:

* classification: accuracy, precision, recall, f1 (binary for two classes,
  else ``average``), roc_auc (one-vs-rest for several classes), log_loss;
* regression: rmse, mae, mse, r2;
* clustering: silhouette, clusters.

``thresholds`` fail the task when missed (seed 002's ``accuracy: 0.85``): a
minimum for scores, a maximum for errors (rmse, mae, mse, log_loss). Pictures
are PNG artifacts drawn by scikit-learn's displays on matplotlib
(``operators.ml.plots``): the confusion matrix and ROC curves, classes by
name (the features' ``class_names``, else the label values), or the residuals.

``champion: {model_name, alias}`` scores the model currently registered under
that MLflow alias on the same rows and reports who wins on ``metric``; having
no champion yet is not an error (the challenger wins). A champion that cannot
score these rows (trained on other columns) is reported ``incomparable`` with
no winner. The comparison travels downstream, so
``model_registration``/``model_deployment`` can gate on it (an incomparable
champion keeps its place there unless ``allow_schema_change: true``).

Output: the model record plus ``{"kind": "evaluation", "metrics",
"evaluated_on", "pictures", "champion"}``; ``evaluation.json`` holds the same.

Example::

    - id: evaluate_rf
      operator: model_evaluation
      upstream: [features, train_rf]
      parameters:
        thresholds: {accuracy: 0.85}
        champion: {model_name: fraud-detector, alias: production}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.operators.metadata import record
from stageflow.operators.ml import _mlflow, plots
from stageflow.operators.ml._common import MLOperator, is_features, is_model, need, pick, put_file
from stageflow.operators.ml.training import default_metric

__all__ = [
    "LOWER_IS_BETTER",
    "ChampionSpec",
    "EvaluationParams",
    "ModelEvaluation",
    "better",
    "compute_metrics",
]

LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse", "log_loss"})
METRICS = {
    "classification": ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"),
    "regression": ("rmse", "mae", "mse", "r2"),
    "clustering": ("silhouette", "clusters"),
}


class ChampionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(description="registered model name in MLflow")
    alias: str = Field(default="production", description="the alias the champion holds")
    tracking_uri: str | None = Field(default=None, description="default: the configured store")


class EvaluationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: list[str] | None = Field(default=None, description="default: all for the task type")
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="metric -> minimum (maximum for errors); missed fails"
    )
    metric: str | None = Field(
        default=None, description="the metric champion/challenger compares (default accuracy/r2)"
    )
    champion: ChampionSpec | None = Field(default=None, description="compare with this model")
    pictures: bool = Field(default=True, description="write PNG pictures")
    split: Literal["test", "holdout", "train"] = Field(default="test", description="rows to score")
    average: Literal["binary", "macro", "micro", "weighted"] | None = Field(
        default=None, description="averaging for precision/recall/f1 (default binary or macro)"
    )
    input: str | None = Field(default=None, description="the upstream task with the model")
    data: str | None = Field(default=None, description="the upstream task with the features")


class ModelEvaluation(MLOperator):
    """Score a model on held-out rows; gate, draw and compare it with the champion."""

    name = "model_evaluation"
    Params = EvaluationParams

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, EvaluationParams)
        op = self.name
        need("sklearn", op)
        _, model = pick(inputs, params.input, is_model, "a trained model", op)
        _, features = pick(inputs, params.data, is_features, "features", op)
        model_type = model.get("model_type") or features.get("task_type") or "classification"
        frame = features[params.split]
        if len(frame) == 0:
            raise TaskFailed(f"{op}: the features have no {params.split} rows to score")
        target = features["target"]
        if model_type != "clustering" and target is None:
            raise TaskFailed(f"{op}: the features have no target to score {model_type} against")
        x = frame.drop(columns=[target]) if target else frame
        y = frame[target] if target else None
        estimator = model["estimator"]
        wanted = params.metrics or list(METRICS[model_type])
        unknown = [m for m in wanted if m not in METRICS[model_type]]
        if unknown:
            raise TaskFailed(
                f"{op}: unknown {model_type} metric {', '.join(unknown)}; "
                f"use {', '.join(METRICS[model_type])}"
            )
        metrics, curves = compute_metrics(estimator, model_type, x, y, wanted, params.average)
        label = str(model.get("name") or model.get("algorithm") or "model")
        pictures: dict[str, str] = {}
        if params.pictures:
            names = features.get("class_names") or {}
            pictures = _pictures(ctx, curves, label, names)
        primary = params.metric or default_metric(model_type)
        comparison = None
        if params.champion is not None:
            comparison = _compare(params.champion, primary, metrics, model_type, x, y, ctx)
        report = {
            "model": label,
            "model_type": model_type,
            "evaluated_on": params.split,
            "rows": len(frame),
            "metrics": metrics,
            "thresholds": params.thresholds,
            "champion": comparison,
            "pictures": pictures,
        }
        put_file(ctx, "evaluation.json", json.dumps(report, indent=2).encode(), "report")
        extra = {}
        if comparison and comparison.get("champion_value") is not None:
            extra[f"champion_{primary}"] = comparison["champion_value"]
        record(ctx, metrics={**metrics, **extra}, info={"pictures": pictures})
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"{label} on {len(frame)} {params.split} rows: {shown}")
        if comparison is not None:
            print(f"champion/challenger on {primary}: {comparison['summary']}")
        _check_thresholds(params.thresholds, metrics, op)
        return {
            **model,
            "kind": "evaluation",
            "metrics": metrics,
            "evaluated_on": params.split,
            "primary_metric": primary,
            "pictures": pictures,
            "champion": comparison,
            "model_task": model.get("task_id"),
            "task_id": ctx.task_id,
        }


OPERATOR = ModelEvaluation


def better(metric: str, a: float, b: float) -> bool:
    """Whether score ``a`` beats ``b`` on ``metric`` (strictly)."""
    return a < b if metric in LOWER_IS_BETTER else a > b


def compute_metrics(
    estimator: Any,
    model_type: str,
    x: Any,
    y: Any,
    wanted: list[str],
    average: str | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The ``wanted`` metrics of ``estimator`` on ``x``/``y`` and data for pictures."""
    import numpy as np
    from sklearn import metrics as m

    out: dict[str, float] = {}
    curves: dict[str, Any] = {}
    if model_type == "clustering":
        labels = estimator.predict(x)
        transformed = (
            estimator.named_steps["features"].transform(x)
            if hasattr(estimator, "named_steps")
            else x
        )
        if "clusters" in wanted:
            out["clusters"] = float(len(set(labels)))
        if "silhouette" in wanted and len(set(labels)) > 1:
            out["silhouette"] = float(
                m.silhouette_score(
                    transformed, labels, sample_size=min(2000, len(labels)), random_state=0
                )
            )
        return out, curves
    predicted = estimator.predict(x)
    if model_type == "regression":
        errors = np.asarray(y, dtype=float) - np.asarray(predicted, dtype=float)
        mse = float(np.mean(errors**2))
        values = {
            "rmse": mse**0.5,
            "mae": float(np.mean(np.abs(errors))),
            "mse": mse,
            "r2": float(m.r2_score(y, predicted)),
        }
        curves["prediction_error"] = (
            list(map(float, np.asarray(y, dtype=float))),
            list(map(float, predicted)),
        )
        return {k: v for k, v in values.items() if k in wanted}, curves
    classes = list(getattr(estimator, "classes_", sorted(set(y))))
    binary = len(classes) == 2
    avg = average or ("binary" if binary else "macro")
    pos = classes[1] if binary else None
    kwargs: dict[str, Any] = {"average": avg, "zero_division": 0}
    if avg == "binary":
        kwargs["pos_label"] = pos
    proba = estimator.predict_proba(x) if hasattr(estimator, "predict_proba") else None
    for name in wanted:
        if name == "accuracy":
            out[name] = float(m.accuracy_score(y, predicted))
        elif name == "precision":
            out[name] = float(m.precision_score(y, predicted, **kwargs))
        elif name == "recall":
            out[name] = float(m.recall_score(y, predicted, **kwargs))
        elif name == "f1":
            out[name] = float(m.f1_score(y, predicted, **kwargs))
        elif name == "roc_auc" and proba is not None and len(set(y)) > 1:
            if binary:
                out[name] = float(m.roc_auc_score(y == pos, proba[:, 1]))
            elif len(set(y)) == len(classes):
                out[name] = float(m.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
        elif name == "log_loss" and proba is not None:
            out[name] = float(m.log_loss(y, proba, labels=classes))
    curves["confusion"] = (m.confusion_matrix(y, predicted, labels=classes).tolist(), classes)
    if proba is not None:
        roc = []
        targets = (
            [(classes[1], 1)] if binary else list(zip(classes, range(len(classes)), strict=True))
        )
        for cls, column in targets:
            truth = np.asarray(y) == cls
            if truth.all() or not truth.any():
                continue
            fpr, tpr, _ = m.roc_curve(truth, proba[:, column])
            roc.append((str(cls), fpr.tolist(), tpr.tolist(), float(m.auc(fpr, tpr))))
        curves["roc"] = roc
    return out, curves


def _pictures(
    ctx: TaskContext, curves: dict[str, Any], label: str, names: Mapping[str, str]
) -> dict[str, str]:
    """Draw and store the pictures ``curves`` has data for; classes shown by their
    ``names`` (label -> name; a label without one is shown as itself)."""

    def name(cls: Any) -> str:
        return names.get(str(cls), str(cls))

    out: dict[str, str] = {}
    if "confusion" in curves:
        matrix, classes = curves["confusion"]
        data = plots.confusion_matrix_png(
            matrix, [name(c) for c in classes], f"{label}: confusion matrix"
        )
        out["confusion_matrix"] = put_file(ctx, "confusion_matrix.png", data, "picture")
    if curves.get("roc"):
        roc = [(name(cls), fpr, tpr, area) for cls, fpr, tpr, area in curves["roc"]]
        title = f"{label}: ROC" + (f" (positive class: {roc[0][0]})" if len(roc) == 1 else "")
        data = plots.roc_png(roc, title)
        out["roc_curve"] = put_file(ctx, "roc_curve.png", data, "picture")
    if "prediction_error" in curves:
        y_true, y_pred = curves["prediction_error"]
        data = plots.residuals_png(y_true, y_pred, f"{label}: residuals")
        out["residuals"] = put_file(ctx, "residuals.png", data, "picture")
    return out


def _compare(
    spec: ChampionSpec,
    metric: str,
    metrics: dict[str, float],
    model_type: str,
    x: Any,
    y: Any,
    ctx: TaskContext,
) -> dict[str, Any]:
    uri = _mlflow.tracking_uri(spec.tracking_uri, ctx.home)
    c = _mlflow.client(uri)
    base = {"model_name": spec.model_name, "alias": spec.alias, "metric": metric}
    challenger = metrics.get(metric)
    if challenger is None:
        raise TaskFailed(
            f"model_evaluation: champion comparison metric '{metric}' was not computed; "
            f"computed: {', '.join(metrics)}"
        )
    mv = _mlflow.champion(c, spec.model_name, spec.alias)
    if mv is None:
        return {
            **base,
            "version": None,
            "challenger_value": challenger,
            "champion_value": None,
            "winner": "challenger",
            "summary": f"no model under {spec.model_name}@{spec.alias} yet: the challenger wins",
        }
    model = _mlflow.load_version(c, spec.model_name, mv.version)
    try:
        theirs, _ = compute_metrics(model, model_type, x, y, [metric])
    except Exception as exc:  # e.g. the champion was trained on other columns
        return {
            **base,
            "version": str(mv.version),
            "challenger_value": challenger,
            "champion_value": None,
            "incomparable": True,
            "winner": None,
            "summary": (
                f"champion {spec.model_name} v{mv.version} cannot score these rows "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}): not compared; "
                "a gate on it keeps the champion unless `allow_schema_change: true`"
            ),
        }
    value = theirs.get(metric)
    wins = value is None or better(metric, challenger, value)
    return {
        **base,
        "version": str(mv.version),
        "challenger_value": challenger,
        "champion_value": value,
        "champion_metrics": theirs,
        "winner": "challenger" if wins else "champion",
        "summary": (
            f"challenger {challenger:.4f} vs champion {spec.model_name} v{mv.version} "
            f"{value if value is None else round(value, 4)}: "
            f"{'the challenger wins' if wins else 'the champion keeps its place'}"
        ),
    }


def _check_thresholds(
    thresholds: Mapping[str, float], metrics: Mapping[str, float], op: str
) -> None:
    # Not retried: another attempt scores the same model on the same rows.
    missed = []
    for name, limit in thresholds.items():
        if name not in metrics:
            raise TaskFailed(
                f"{op}: threshold for '{name}', which was not computed; "
                f"computed: {', '.join(metrics)}",
                retryable=False,
            )
        value = metrics[name]
        if name in LOWER_IS_BETTER and value > limit:
            missed.append(f"{name} {value:.4f} is above the threshold {limit:g}")
        elif name not in LOWER_IS_BETTER and value < limit:
            missed.append(f"{name} {value:.4f} is below the threshold {limit:g}")
    if missed:
        raise TaskFailed(f"{op}: " + "; ".join(missed), retryable=False)
