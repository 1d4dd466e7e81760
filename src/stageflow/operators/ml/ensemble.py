"""The ``ensemble`` operator: voting or stacking over upstream trained models.

The members are the upstream ``model_training`` (or ``ensemble``) tasks'
models, in ``upstream`` order (a task mapped with ``map_over:`` gives its list
of models, each named by its task run, ``train[3]``); the rows are the upstream
features' (the same
``feature_engineering`` task they trained on, listed under ``upstream`` as
``model_evaluation`` lists it). Each member is its whole scikit-learn
``Pipeline`` (features' transformer + estimator), so the ensemble scores raw
rows as every member does.

``method``:

* ``soft_voting``: the weighted mean of the members' ``predict_proba``
  (``VotingClassifier(voting="soft")``); for regression the weighted mean of
  their predictions (``VotingRegressor``);
* ``hard_voting``: the weighted majority of the members' predicted labels
  (classification only; a regression is averaged: use ``soft_voting``);
* ``stacking``: a ``final_estimator`` (a ``model_training`` short name:
  ``logistic_regression`` by default, ``ridge`` for regression; its
  arguments in ``final_hyperparameters``) learns from
  the members' predictions (``predict_proba`` where they have it,
  ``StackingClassifier``/``StackingRegressor``).

``refit: false`` (the default) keeps the members exactly as their tasks
trained them: each is wrapped in scikit-learn's ``FrozenEstimator`` (1.6+),
whose ``fit`` does nothing, so ``VotingClassifier.fit`` only learns the
labels (for a hard vote each member also predicts label indices, as the vote
counts them: ``_label_index.LabelIndex``). Stacking still needs predictions
on rows a member did not train on, so the final estimator is fit on
*out-of-fold* predictions: ``cv`` folds of the training split, each scored by
a fresh copy of the member fit on the other folds (``cross_val_predict``) —
what ``StackingClassifier(cv=K)`` itself does, except that the members kept
for prediction are the trained ones rather than refits on the whole split.
``refit: true`` clones every member and fits the ensemble on the training
split as scikit-learn does.

``stageflow validate`` refuses, before anything runs: fewer than two model
upstreams; an upstream that gives neither a model nor the features (a
``python`` or ``custom_script`` step may give either: what it gave is checked
when the ensemble runs); members
for both classification and regression; ``weights`` of another length than
the members (or with stacking); an unknown ``method`` or ``final_estimator``
(or one not for the members' type) or a ``final_hyperparameters`` name it
does not take; ``hard_voting`` of regression models; clustering models.

Output: a model record exactly like ``model_training``'s (``{"kind":
"model", "name", "algorithm": "ensemble", "model_type", "estimator",
"target", "hyperparameters", "training_metrics", "classes",
"input_example", "feature_names_in", ...}`` plus ``members``: the member
task ids), saved as ``model.joblib``, so ``model_evaluation``,
``model_registration`` and ``batch_inference`` take it unchanged. Recorded
metrics: ``train_accuracy``/``test_accuracy`` (``train_r2``/``test_r2``).

Example::

    - id: ensemble
      operator: ensemble
      upstream: [features, train_lr, train_rf, train_gb]
      parameters:
        method: soft_voting
        weights: [1, 2, 1]
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stageflow.errors import Problem
from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.operators.metadata import record
from stageflow.operators.ml._common import MLOperator, is_features, is_model, need, pick, put_file
from stageflow.operators.ml.training import (
    ALGORITHMS,
    TrainingParams,
    build_estimator,
    hyperparameter_problems,
)
from stageflow.spec.models import Pipeline, Task
from stageflow.spec.suggest import did_you_mean

__all__ = [
    "MODEL_OPERATORS",
    "Ensemble",
    "EnsembleParams",
    "build_ensemble",
    "ensemble_problems",
    "meta_features",
    "stack_method",
]

Method = Literal["soft_voting", "hard_voting", "stacking"]

#: Operators whose output is a trained model an ensemble can take as a member.
MODEL_OPERATORS = frozenset({"model_training", "ensemble"})
#: Operators whose output is the rows (``features``) an ensemble fits and scores on.
DATA_OPERATORS = frozenset({"feature_engineering"})
#: Python steps may give either (``operators.ml._common``: plain records): checked
#: when the ensemble runs, not by validation.
CODE_STEPS = frozenset({"python", "custom_script"})
_FINAL = sorted({*ALGORITHMS["classification"], *ALGORITHMS["regression"]})
_DEFAULT_FINAL = {"classification": "logistic_regression", "regression": "ridge"}


class EnsembleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        default="soft_voting", description="soft_voting, hard_voting or stacking"
    )
    weights: list[float] | None = Field(
        default=None, description="voting: one weight per member, in upstream order"
    )
    final_estimator: str | None = Field(
        default=None,
        description="stacking: a model_training short name "
        "(default logistic_regression; ridge for regression)",
    )
    final_hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="stacking: arguments of the final estimator"
    )
    refit: bool = Field(
        default=False, description="refit copies of the members instead of using them as trained"
    )
    cv: int = Field(default=5, ge=2, description="stacking: folds for out-of-fold predictions")
    seed: int | None = Field(default=None, description="random_state of folds and final estimator")
    name: str | None = Field(default=None, description="the model's name (default: the method)")
    data: str | None = Field(default=None, description="the upstream task with the features")

    @field_validator("final_estimator")
    @classmethod
    def _known_final(cls, name: str | None) -> str | None:
        if name is None or name in _FINAL:
            return name
        hint = did_you_mean(name, _FINAL)
        fix = f"did you mean '{hint}'?" if hint else f"use one of {', '.join(_FINAL)}"
        raise ValueError(f"unknown final_estimator '{name}'; {fix}")

    @field_validator("weights")
    @classmethod
    def _weights_positive(cls, weights: list[float] | None) -> list[float] | None:
        if weights is not None and (any(w < 0 for w in weights) or not any(weights)):
            raise ValueError("weights must be zero or more, and not all zero")
        return weights


class Ensemble(MLOperator):
    """Combine upstream trained models by voting or stacking into one model."""

    name = "ensemble"
    Params = EnsembleParams

    @classmethod
    def spec_problems(
        cls,
        params: BaseModel,
        task: Task,
        pipeline: Pipeline | None,
        run_params: Mapping[str, Any],
    ) -> list[Problem]:
        assert isinstance(params, EnsembleParams)
        return ensemble_problems(params, task, pipeline, run_params)

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, EnsembleParams)
        op = self.name
        need("sklearn", op)
        members = _members(inputs)
        _, features = pick(inputs, params.data, is_features, "features", op)
        model_type = _check_members(members, params, op)
        target = features["target"]
        if target is None:
            raise TaskFailed(f"{op}: the features have no target to fit the ensemble on")
        train, test = features["train"], features["test"]
        x_train, y_train = train.drop(columns=[target]), train[target]
        _check_rows(members, target, [str(c) for c in x_train.columns], op)
        estimator = build_ensemble(members, params, model_type, x_train, y_train, op)
        metrics = _score(estimator, model_type, x_train, y_train, "train")
        if len(test):
            metrics.update(
                _score(estimator, model_type, test.drop(columns=[target]), test[target], "test")
            )
        joblib = need("joblib", op)
        buf = io.BytesIO()
        joblib.dump(estimator, buf)
        uri = put_file(ctx, "model.joblib", buf.getvalue(), "model")
        names = [k for k, _ in members]
        hyper: dict[str, Any] = {"method": params.method, "refit": params.refit, "members": names}
        if params.method == "stacking":
            hyper.update(final_estimator=_final_name(params, model_type), cv=params.cv)
        elif params.weights is not None:
            hyper["weights"] = params.weights
        record(
            ctx,
            metrics=metrics,
            info={"algorithm": "ensemble", "hyperparameters": hyper, "model": uri},
        )
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"ensemble ({params.method}) of {', '.join(names)}: {shown}")
        classes = getattr(estimator, "classes_", None)
        return {
            "kind": "model",
            "name": params.name or params.method,
            "algorithm": "ensemble",
            "model_type": model_type,
            "estimator": estimator,
            "target": target,
            "feature_names_in": [str(c) for c in x_train.columns],
            "gpu_devices": None,
            "hyperparameters": hyper,
            "training_metrics": metrics,
            "classes": None if classes is None else [_plain(c) for c in classes],
            "input_example": x_train.head(5),
            "seed": params.seed,
            "candidate": None,
            "members": names,
            "task_id": ctx.task_id,
            "model_file": uri,
        }


OPERATOR = Ensemble


def build_ensemble(
    members: list[tuple[str, Mapping[str, Any]]],
    params: EnsembleParams,
    model_type: str,
    x: Any,
    y: Any,
    op: str = "ensemble",
) -> Any:
    """The fitted scikit-learn ensemble of ``members`` (``(task id, model record)``)
    on the training rows ``x``/``y`` (module docstring); ``TaskFailed`` when a member
    cannot take part (soft voting of a model without probabilities)."""
    import warnings

    from sklearn.base import clone
    from sklearn.ensemble import (
        StackingClassifier,
        StackingRegressor,
        VotingClassifier,
        VotingRegressor,
    )
    from sklearn.frozen import FrozenEstimator

    pipes = [(name, m["estimator"]) for name, m in members]
    classify = model_type == "classification"
    if params.method == "soft_voting" and classify:
        lacking = [n for n, p in pipes if not hasattr(p, "predict_proba")]
        if lacking:
            raise TaskFailed(
                f"{op}: soft_voting needs probabilities, which {', '.join(lacking)} "
                "cannot give; use method: hard_voting (or svm, which trains with probabilities)"
            )

    def member(name: str, pipe: Any) -> Any:
        if params.refit:
            return clone(pipe)
        if params.method == "hard_voting":
            from stageflow.operators.ml._label_index import LabelIndex

            return FrozenEstimator(LabelIndex(pipe))
        return FrozenEstimator(pipe)

    estimators = [(name, member(name, pipe)) for name, pipe in pipes]
    ensemble: Any
    if params.method == "stacking":
        final = _final_estimator(params, model_type, op)
        folds = _folds(params, model_type)
        if not params.refit:
            final = FrozenEstimator(_fit_on_out_of_fold(pipes, final, folds, classify, x, y, op))
        cls = StackingClassifier if classify else StackingRegressor
        ensemble = cls(estimators, final_estimator=final, cv=folds, n_jobs=1)
    elif classify:
        voting = "soft" if params.method == "soft_voting" else "hard"
        ensemble = VotingClassifier(estimators, voting=voting, weights=params.weights, n_jobs=1)
    else:
        ensemble = VotingRegressor(estimators, weights=params.weights, n_jobs=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            ensemble.fit(x, y)
    except (ValueError, TypeError) as exc:
        raise TaskFailed(f"{op}: fitting the ensemble failed: {_line(exc)}") from None
    return ensemble


def ensemble_problems(
    params: EnsembleParams,
    task: Task,
    pipeline: Pipeline | None,
    run_params: Mapping[str, Any],
) -> list[Problem]:
    """What is wrong with an ``ensemble`` task's upstream and parameters, found
    before running (module docstring). Without ``pipeline`` only the parameters
    are checked."""
    problems: list[Problem] = []

    def problem(message: str, field: str) -> None:
        problems.append(Problem(message, task=task.id, field=field))

    if params.method == "stacking" and params.weights is not None:
        problem("weights are for voting; stacking learns them: drop weights", "parameters.weights")
    if params.method != "stacking" and (params.final_estimator or params.final_hyperparameters):
        which = "final_estimator" if params.final_estimator else "final_hyperparameters"
        problem(f"{which} is for stacking; set method: stacking or drop it", f"parameters.{which}")
    if pipeline is None:
        return problems
    tasks = {t.id: t for t in pipeline.tasks}
    models: list[Task] = []
    code: list[str] = []  # python steps: what they give is known when they run
    for up in task.upstream:
        other = tasks.get(up)
        if other is None:
            continue  # reported by the spec's own checks
        if other.operator_name in MODEL_OPERATORS:
            models.append(other)
        elif other.operator_name in CODE_STEPS:
            code.append(up)
        elif other.operator_name not in DATA_OPERATORS and up != params.data:
            problem(
                f"upstream '{up}' ({other.operator_name}) gives no trained model; an ensemble "
                f"takes {' or '.join(sorted(MODEL_OPERATORS))} tasks and their features "
                "task: remove it from upstream",
                "upstream",
            )
    # A task mapped over a list (``map_over:``) gives one model per element.
    mapped = any(t.map_over is not None for t in models)
    if len(models) + len(code) < 2 and not mapped:
        got = ", ".join(t.id for t in models) or "none"
        problem(
            f"an ensemble needs at least 2 model upstreams (model_training tasks), "
            f"got {len(models)} ({got}); list them under upstream",
            "upstream",
        )
    has_data = any(tasks[u].operator_name in DATA_OPERATORS for u in task.upstream if u in tasks)
    if params.data is None and not has_data and not code:
        problem(
            "an ensemble needs the features its models trained on: add the "
            "feature_engineering task to upstream (or name the task giving them with data:)",
            "upstream",
        )
    counted = len(models) >= 2 and not mapped and not code
    if params.weights is not None and counted and len(params.weights) != len(models):
        problem(
            f"{len(params.weights)} weights for {len(models)} models "
            f"({', '.join(t.id for t in models)}); give one weight per model, in upstream order",
            "parameters.weights",
        )
    types = {t.id: _model_type(t, tasks, run_params) for t in models}
    known = {t for t in types.values() if t is not None}
    if len(known) > 1:
        shown = ", ".join(f"{k} ({v})" for k, v in types.items() if v is not None)
        problem(
            f"the models mix classification and regression: {shown}; ensemble models of one kind",
            "upstream",
        )
    elif known == {"clustering"}:
        problem(
            "clustering models cannot be ensembled (their cluster numbers do not match); "
            "ensemble classification or regression models",
            "upstream",
        )
    elif len(known) == 1:
        (model_type,) = known
        if model_type == "regression" and params.method == "hard_voting":
            problem(
                "hard_voting is for classification; regression models are averaged: "
                "use method: soft_voting",
                "parameters.method",
            )
        final = params.final_estimator
        if params.method == "stacking" and final and final not in ALGORITHMS[model_type]:
            problem(
                f"final_estimator '{final}' is not a {model_type} model; use one of "
                f"{', '.join(ALGORITHMS[model_type])}",
                "parameters.final_estimator",
            )
        elif params.method == "stacking" and params.final_hyperparameters:
            problems.extend(_final_problems(params, model_type, task, run_params))
    return problems


# -- helpers --------------------------------------------------------------------------


def _members(inputs: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The trained models among ``inputs``, by task id; a mapped task's list counts as
    its elements, each named by its own task run (``train[3]``)."""

    def trained(value: Any) -> bool:
        return is_model(value) and value.get("kind") == "model"

    out: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in inputs.items():
        if trained(value):
            out.append((key, value))
        elif isinstance(value, list) and value and all(trained(v) for v in value):
            out.extend((f"{key}[{k}]", v) for k, v in enumerate(value))
    return out


def _check_members(
    members: list[tuple[str, Mapping[str, Any]]], params: EnsembleParams, op: str
) -> str:
    """The members' common model type; ``TaskFailed`` where they cannot be combined."""
    if len(members) < 2:
        got = ", ".join(k for k, _ in members) or "none"
        raise TaskFailed(f"{op}: needs at least 2 trained models from upstream tasks; got {got}")
    types = {k: str(m.get("model_type") or "classification") for k, m in members}
    if len(set(types.values())) > 1:
        shown = ", ".join(f"{k} ({t})" for k, t in types.items())
        raise TaskFailed(f"{op}: the models mix kinds: {shown}; ensemble models of one kind")
    model_type = next(iter(types.values()))
    if model_type not in ("classification", "regression"):
        raise TaskFailed(f"{op}: {model_type} models cannot be ensembled")
    if model_type == "regression" and params.method == "hard_voting":
        raise TaskFailed(f"{op}: hard_voting is for classification; use method: soft_voting")
    if params.weights is not None and len(params.weights) != len(members):
        raise TaskFailed(
            f"{op}: {len(params.weights)} weights for {len(members)} models; "
            "give one weight per model, in upstream order"
        )
    targets = {str(m.get("target")) for _, m in members}
    if len(targets) > 1:
        raise TaskFailed(
            f"{op}: the models predict different targets ({', '.join(sorted(targets))})"
        )
    return model_type


def _check_rows(
    members: list[tuple[str, Mapping[str, Any]]], target: str, columns: list[str], op: str
) -> None:
    """``TaskFailed`` naming a member that did not train on these features' columns
    and target (it could not score the rows)."""
    for name, model in members:
        if model.get("target") not in (None, target):
            raise TaskFailed(
                f"{op}: model '{name}' predicts '{model['target']}', the features' target is "
                f"'{target}'; list the features task its models trained on"
            )
        trained_on = model.get("feature_names_in")
        if trained_on is not None and list(trained_on) != columns:
            raise TaskFailed(
                f"{op}: model '{name}' trained on other columns than the features' "
                f"({len(trained_on)} vs {len(columns)}); list the features task its "
                "models trained on"
            )


def _final_problems(
    params: EnsembleParams, model_type: str, task: Task, run_params: Mapping[str, Any]
) -> list[Problem]:
    """``final_hyperparameters`` the final estimator does not take (``model_training``'s
    check, its fields renamed to this task's)."""
    training = TrainingParams.model_validate(
        {
            "algorithm": _final_name(params, model_type),
            "model_type": model_type,
            "hyperparameters": params.final_hyperparameters,
        }
    )
    found = hyperparameter_problems(training, task, None, run_params)
    prefix = "parameters.hyperparameters."
    return [
        replace(p, field=f"parameters.final_hyperparameters.{p.field.removeprefix(prefix)}")
        if p.field is not None and p.field.startswith(prefix)
        else p
        for p in found
    ]


def _final_name(params: EnsembleParams, model_type: str) -> str:
    return params.final_estimator or _DEFAULT_FINAL[model_type]


def _final_estimator(params: EnsembleParams, model_type: str, op: str) -> Any:
    training = TrainingParams.model_validate(
        {
            "algorithm": _final_name(params, model_type),
            "hyperparameters": params.final_hyperparameters,
            "seed": params.seed,
        }
    )
    return build_estimator(training, model_type, op)


def _folds(params: EnsembleParams, model_type: str) -> Any:
    from sklearn.model_selection import KFold, StratifiedKFold

    seed = params.seed if params.seed is not None else 0
    if model_type == "classification":
        return StratifiedKFold(params.cv, shuffle=True, random_state=seed)
    return KFold(params.cv, shuffle=True, random_state=seed)


def stack_method(model: Any, classify: bool) -> str:
    """What a stacking ensemble asks a member for (scikit-learn's ``"auto"``)."""
    if classify:
        for method in ("predict_proba", "decision_function"):
            if hasattr(model, method):
                return method
    return "predict"


def meta_features(predictions: list[Any], methods: list[str], n_classes: int) -> Any:
    """The final estimator's input from the members' predictions, laid out as
    ``StackingClassifier`` lays it out: one column per member's prediction, its
    ``predict_proba`` columns but the first when there are two classes."""
    import numpy as np

    blocks = []
    for pred, method in zip(predictions, methods, strict=True):
        pred = np.asarray(pred)
        if pred.ndim == 1:
            blocks.append(pred.reshape(-1, 1))
        elif method == "predict_proba" and n_classes == 2:
            blocks.append(pred[:, 1:])
        else:
            blocks.append(pred)
    return np.hstack(blocks)


def _fit_on_out_of_fold(
    pipes: list[tuple[str, Any]], final: Any, folds: Any, classify: bool, x: Any, y: Any, op: str
) -> Any:
    """``final`` fit on the members' out-of-fold predictions of ``x`` (fresh copies
    fit on the other folds), against the label-encoded ``y`` as ``StackingClassifier``
    fits it."""
    import warnings

    import numpy as np
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_predict

    methods = [stack_method(p, classify) for _, p in pipes]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            predictions = [
                cross_val_predict(clone(p), x, y, cv=folds, method=m, n_jobs=1)
                for (_, p), m in zip(pipes, methods, strict=True)
            ]
            if classify:
                classes, target = np.unique(np.asarray(y), return_inverse=True)
                meta = meta_features(predictions, methods, len(classes))
            else:
                target = np.asarray(y)
                meta = meta_features(predictions, methods, 0)
            return final.fit(meta, target)
    except (ValueError, TypeError) as exc:
        raise TaskFailed(
            f"{op}: out-of-fold predictions for stacking failed: {_line(exc)}"
        ) from None


def _score(estimator: Any, model_type: str, x: Any, y: Any, split: str) -> dict[str, float]:
    name = "accuracy" if model_type == "classification" else "r2"
    return {f"{split}_{name}": float(estimator.score(x, y))}


def _model_type(task: Task, tasks: Mapping[str, Task], run_params: Mapping[str, Any]) -> str | None:
    """The model type a model-producing task will train, when its spec says: its
    ``model_type``, an algorithm for one type only, or its features' ``task_type``."""
    from stageflow.spec.params import substitute

    def param(t: Task, key: str) -> Any:
        try:
            return substitute({"v": t.parameters.get(key)}, run_params)["v"]
        except KeyError:
            return None  # an undeclared run parameter: reported on that task

    if task.operator_name != "model_training":
        return None
    given = param(task, "model_type")
    if isinstance(given, str):
        return given
    algo = param(task, "algorithm")
    fits = [t for t, names in ALGORITHMS.items() if algo in names]
    if len(fits) == 1:
        return fits[0]
    for up in task.upstream:
        other = tasks.get(up)
        if other is not None and other.operator_name == "feature_engineering":
            kind = param(other, "task_type")
            if isinstance(kind, str):
                return kind
    return None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
