"""The ``model_training`` operator: fit a model by short name or class path.

``algorithm`` names a model for the ``model_type`` (classification,
regression or clustering; default: the features' task type):

==================  ===================================  =================================
name                classification                       regression
==================  ===================================  =================================
random_forest       RandomForestClassifier               RandomForestRegressor
gradient_boosting   GradientBoostingClassifier           GradientBoostingRegressor
logistic_regression LogisticRegression                   -
linear_regression   -                                    LinearRegression
ridge / lasso       -                                    Ridge / Lasso
svm                 SVC (with probabilities)             SVR
knn                 KNeighborsClassifier                 KNeighborsRegressor
neural_network      MLPClassifier                        MLPRegressor
decision_tree       DecisionTreeClassifier               DecisionTreeRegressor
naive_bayes         GaussianNB                           -
xgboost / lightgbm  XGBClassifier / LGBMClassifier       XGBRegressor / LGBMRegressor
==================  ===================================  =================================

Clustering: ``kmeans``, ``minibatch_kmeans``, ``gaussian_mixture``. Any
estimator class works by its path (``sklearn.svm.LinearSVC`` or
``package.module:Class``). ``hyperparameters`` go to the estimator;
``seed`` sets ``random_state`` when the estimator has one. A misspelt
hyperparameter is refused with a did-you-mean by ``stageflow validate``
(``hyperparameter_problems``: it imports the estimator's class, for a task
with ``hyperparameters``, ``search`` or a ``search_space`` to map over) and
again when the estimator is built.

The model is a scikit-learn ``Pipeline``: a fresh copy of the upstream
features' transformer, then the estimator, fit on the raw training rows, so it
scores raw rows exactly as it was trained.

``cross_validation: K`` adds K-fold scores (``cv_mean``, ``cv_std``).
``min_accuracy`` (seed 001) fails the task when the score on the test rows
(accuracy; R² for regression) is lower.

Hyperparameter search, two ways. ``search`` tries candidates (``grid`` or
``random`` with ``n_iter``) by cross-validation inside this one task and
keeps the best. To train each candidate as its own task run instead (run side
by side, each with its own retries, log and stored output), list them with the
``search_space`` operator and map this task over it (``map_over:``): a child
``train[k]`` merges candidate ``k``'s hyperparameters over ``hyperparameters``
(a misspelt one is refused by validation when the ``search_space`` task's
``space`` is written in the spec, else fails that child with a did-you-mean
naming the candidate),
and its output's ``candidate`` says which it trained. A ``model_evaluation``
mapped over the training and a ``model_selection`` over that evaluation pick
the best (``operators.ml.search`` has the whole example). A ``search`` may
not choose a hyperparameter the candidate sets.

Output: ``{"kind": "model", "name", "algorithm", "model_type", "estimator",
"target", "hyperparameters", "training_metrics", "classes", "input_example",
"feature_names_in", "candidate", "gpu_devices", "task_id"}`` (``candidate``: ``{"index",
"hyperparameters", "source"}`` for a mapped child, else ``None``); the model
is also saved as ``model.joblib``.

Example::

    - id: train_rf
      operator: model_training
      upstream: [features]
      resources: {cpu: 2}
      parameters:
        algorithm: random_forest
        hyperparameters: {n_estimators: 200, max_depth: 8}
        cross_validation: 5
        min_accuracy: 0.85
        seed: 42
"""

from __future__ import annotations

import functools
import io
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stageflow.errors import Problem
from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.operators.metadata import record
from stageflow.operators.ml._common import (
    MLOperator,
    ensure_columns,
    is_candidate,
    is_features,
    is_frame,
    need,
    pick,
    put_file,
)
from stageflow.spec.models import Pipeline, Task
from stageflow.spec.suggest import did_you_mean

__all__ = [
    "ALGORITHMS",
    "ModelTraining",
    "TrainingParams",
    "hyperparameter_problems",
    "resolve_algorithm",
]

ModelType = Literal["classification", "regression", "clustering"]

ALGORITHMS: dict[str, dict[str, str]] = {
    "classification": {
        "random_forest": "sklearn.ensemble:RandomForestClassifier",
        "gradient_boosting": "sklearn.ensemble:GradientBoostingClassifier",
        "logistic_regression": "sklearn.linear_model:LogisticRegression",
        "svm": "sklearn.svm:SVC",
        "knn": "sklearn.neighbors:KNeighborsClassifier",
        "neural_network": "sklearn.neural_network:MLPClassifier",
        "decision_tree": "sklearn.tree:DecisionTreeClassifier",
        "naive_bayes": "sklearn.naive_bayes:GaussianNB",
        "xgboost": "xgboost:XGBClassifier",
        "lightgbm": "lightgbm:LGBMClassifier",
    },
    "regression": {
        "random_forest": "sklearn.ensemble:RandomForestRegressor",
        "gradient_boosting": "sklearn.ensemble:GradientBoostingRegressor",
        "linear_regression": "sklearn.linear_model:LinearRegression",
        "ridge": "sklearn.linear_model:Ridge",
        "lasso": "sklearn.linear_model:Lasso",
        "svm": "sklearn.svm:SVR",
        "knn": "sklearn.neighbors:KNeighborsRegressor",
        "neural_network": "sklearn.neural_network:MLPRegressor",
        "decision_tree": "sklearn.tree:DecisionTreeRegressor",
        "xgboost": "xgboost:XGBRegressor",
        "lightgbm": "lightgbm:LGBMRegressor",
    },
    "clustering": {
        "kmeans": "sklearn.cluster:KMeans",
        "minibatch_kmeans": "sklearn.cluster:MiniBatchKMeans",
        "gaussian_mixture": "sklearn.mixture:GaussianMixture",
    },
}
# Defaults that make the short names work out of the box (overridable).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"max_iter": 1000},
    "neural_network": {"max_iter": 500},
    "random_forest": {"n_jobs": 1},  # the pipeline runs models side by side
    "kmeans": {"n_init": 10},
}
_EXTRAS = {"xgboost": "pip install xgboost", "lightgbm": "pip install lightgbm"}
_KNOWN = sorted({name for names in ALGORITHMS.values() for name in names})


class Search(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["grid", "random"] = Field(default="grid", description="grid or random")
    space: dict[str, list[Any]] = Field(description="hyperparameter -> candidate values")
    n_iter: int = Field(default=10, ge=1, description="candidates tried by random search")
    cv: int = Field(default=3, ge=2, description="folds per candidate")
    metric: str | None = Field(default=None, description="scikit-learn scoring name")


class TrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: str = Field(description=f"short name ({', '.join(_KNOWN)}) or a class path")
    model_type: ModelType | None = Field(
        default=None, description="default: the upstream features' task type"
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="arguments of the estimator"
    )
    cross_validation: int | None = Field(default=None, ge=2, description="K-fold scores")
    search: Search | None = Field(default=None, description="hyperparameter search")
    min_accuracy: float | None = Field(
        default=None, description="fail when the test score (accuracy; R² for regression) is lower"
    )
    seed: int | None = Field(default=None, description="random_state of the estimator")
    target: str | None = Field(
        default=None, description="label column when the input is a plain DataFrame"
    )
    name: str | None = Field(default=None, description="the model's name (default: algorithm)")
    input: str | None = Field(default=None, description="the upstream task with the features")

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, algo: str) -> str:
        if "." in algo or ":" in algo or algo in _KNOWN:
            return algo
        hint = did_you_mean(algo, _KNOWN)
        fix = f"did you mean '{hint}'?" if hint else f"use one of {', '.join(_KNOWN)}"
        raise ValueError(f"unknown algorithm '{algo}'; {fix} (or a class path)")

    @model_validator(mode="after")
    def _algorithm_fits_type(self) -> TrainingParams:
        algo = self.algorithm
        if "." in algo or ":" in algo:
            return self
        types = [t for t, names in ALGORITHMS.items() if algo in names]
        if self.model_type is not None and self.model_type not in types:
            raise ValueError(
                f"algorithm '{algo}' is for {' or '.join(types)}, not {self.model_type}"
            )
        return self


class ModelTraining(MLOperator):
    """Fit a model (features' transformer + estimator) and measure it."""

    name = "model_training"
    Params = TrainingParams

    @classmethod
    def spec_problems(
        cls,
        params: BaseModel,
        task: Task,
        pipeline: Pipeline | None,
        run_params: Mapping[str, Any],
    ) -> list[Problem]:
        assert isinstance(params, TrainingParams)
        return hyperparameter_problems(params, task, pipeline, run_params)

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, TrainingParams)
        op = self.name
        need("sklearn", op)
        from sklearn.base import clone
        from sklearn.pipeline import Pipeline

        candidate = _candidate(inputs, op)
        origin: dict[str, str] = {}
        if candidate is not None:
            params = _with_candidate(params, candidate, op)
            where = f" (from candidate {candidate['index']} of '{candidate['source']}')"
            origin = dict.fromkeys(candidate["hyperparameters"], where)
        features = _features(inputs, params, op)
        target = features["target"]
        model_type = params.model_type or features.get("task_type") or "classification"
        train, test = features["train"], features["test"]
        x_train = train.drop(columns=[target]) if target else train
        y_train = train[target] if target else None
        _check_numeric(features["transformer"], x_train, op)
        estimator = build_estimator(params, model_type, op, origin=origin)
        pipeline = Pipeline([("features", clone(features["transformer"])), ("model", estimator)])
        metrics: dict[str, float] = {}
        best_params: dict[str, Any] = {}
        if params.search is not None:
            pipeline, best_params, found = _search(
                pipeline, params, model_type, x_train, y_train, op
            )
            metrics.update(found)
        else:
            _fit(pipeline, x_train, y_train, op)
        if params.cross_validation:
            metrics.update(_cross_validate(pipeline, params, model_type, x_train, y_train, op))
        metrics.update(_scores(pipeline, model_type, x_train, y_train, "train"))
        if target is not None and len(test):
            x_test, y_test = test.drop(columns=[target]), test[target]
            metrics.update(_scores(pipeline, model_type, x_test, y_test, "test"))
        if params.min_accuracy is not None:
            _gate(metrics, params.min_accuracy, model_type, op)
        joblib = need("joblib", op)
        buf = io.BytesIO()
        joblib.dump(pipeline, buf)
        uri = put_file(ctx, "model.joblib", buf.getvalue(), "model")
        model = pipeline.named_steps["model"]
        given = {**params.hyperparameters, **best_params}
        hyper = {k: v for k, v in model.get_params(deep=False).items() if k in given}
        info: dict[str, Any] = {
            "algorithm": params.algorithm,
            "hyperparameters": hyper,
            "model": uri,
        }
        label = f"{params.name or params.algorithm} ({type(model).__name__})"
        devices = ctx.extra_env.get("CUDA_VISIBLE_DEVICES")
        if devices is not None:  # the GPUs this attempt was given (resources: {gpu: N})
            info["cuda_visible_devices"] = devices
            label += f" on GPU {devices}"
        if candidate is not None:
            info["candidate"] = candidate["index"]
            chosen = ", ".join(f"{k}={v!r}" for k, v in candidate["hyperparameters"].items())
            label += f" candidate {candidate['index']} [{chosen}]"
        record(ctx, metrics=metrics, info=info)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"trained {label}: {shown}")
        classes = getattr(model, "classes_", None)
        return {
            "kind": "model",
            "name": params.name or params.algorithm,
            "algorithm": params.algorithm,
            "model_type": model_type,
            "estimator": pipeline,
            "target": target,
            "feature_names_in": [str(c) for c in x_train.columns],
            "gpu_devices": devices,
            "hyperparameters": hyper,
            "training_metrics": metrics,
            "classes": None if classes is None else [_plain(c) for c in classes],
            "input_example": x_train.head(5),
            "seed": params.seed,
            "candidate": candidate,
            "task_id": ctx.task_id,
            "model_file": uri,
        }


OPERATOR = ModelTraining


def resolve_algorithm(algorithm: str, model_type: str, op: str = "model_training") -> Any:
    """The estimator class for a short name or class path; ``TaskFailed`` if it cannot load."""
    import importlib

    ref = algorithm
    if "." not in algorithm and ":" not in algorithm:
        names = ALGORITHMS.get(model_type, {})
        if algorithm not in names:
            fits = [t for t, n in ALGORITHMS.items() if algorithm in n]
            raise TaskFailed(
                f"{op}: algorithm '{algorithm}' is not a {model_type} algorithm"
                + (f" (it is for {' or '.join(fits)}); set model_type" if fits else "")
            )
        ref = names[algorithm]
    module_name, _, attr = ref.partition(":") if ":" in ref else ref.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except ImportError:
        fix = _EXTRAS.get(algorithm, f"pip install {module_name.split('.')[0]}")
        raise TaskFailed(
            f"{op}: algorithm '{algorithm}' needs {module_name.split('.')[0]}, "
            f"which is not installed: {fix}"
        ) from None
    except AttributeError:
        raise TaskFailed(f"{op}: module {module_name} has no class {attr}") from None
    if not isinstance(cls, type) or not hasattr(cls, "fit"):
        raise TaskFailed(f"{op}: {ref} is not an estimator class (it has no fit method)")
    return cls


def build_estimator(
    params: TrainingParams, model_type: str, op: str, *, origin: Mapping[str, str] | None = None
) -> Any:
    """A fresh estimator with defaults, hyperparameters and the seed applied.

    ``origin`` maps a hyperparameter to where it came from (a search candidate),
    said in the message when the estimator has no such hyperparameter.
    """
    cls = resolve_algorithm(params.algorithm, model_type, op)
    defaults = dict(_DEFAULTS.get(params.algorithm, {}))
    if params.algorithm == "svm" and model_type == "classification":
        defaults["probability"] = True
    try:
        estimator = cls()
    except TypeError as exc:
        raise TaskFailed(f"{op}: cannot create {cls.__name__}(): {exc}") from None
    known = estimator.get_params(deep=False)
    values = {k: v for k, v in defaults.items() if k in known}
    for key in params.hyperparameters:
        if key not in known:
            where = (origin or {}).get(key, "")
            raise TaskFailed(
                f"{op}: {cls.__name__} has no hyperparameter '{key}'{where}; {_fix(key, known)}"
            )
    values.update(params.hyperparameters)
    if params.seed is not None and "random_state" in known:
        values.setdefault("random_state", params.seed)
    try:
        return estimator.set_params(**values)
    except (TypeError, ValueError) as exc:
        raise TaskFailed(f"{op}: bad hyperparameters for {cls.__name__}: {exc}") from None


def hyperparameter_problems(
    params: TrainingParams,
    task: Task,
    pipeline: Pipeline | None,
    run_params: Mapping[str, Any],
) -> list[Problem]:
    """Hyperparameter names the estimator does not take, found before running: in
    ``hyperparameters``, ``search.space`` and, when the task maps over a
    ``search_space`` task written out in ``pipeline``, that task's ``space``.

    The estimator's class is imported (scikit-learn, or the class path's module);
    when it cannot be, nothing is reported here: the run says what to install.
    """
    source = _search_space_task(task, pipeline)
    if not params.hyperparameters and params.search is None and source is None:
        return []  # nothing to check: no estimator class to import
    classes = _estimator_classes(params, task, pipeline, run_params)
    if not classes:
        return []
    known = set().union(*(names for _, names in classes))
    names = [name for name, _ in classes]

    def unknown(key: str) -> str:
        if len(names) == 1:
            return f"{names[0]} has no hyperparameter '{key}'; {_fix(key, known)}"
        return f"neither {' nor '.join(names)} has a hyperparameter '{key}'; {_fix(key, known)}"

    problems = []
    for key in params.hyperparameters:
        if key not in known:
            problems.append(
                Problem(
                    unknown(key),
                    task=task.id,
                    field=f"parameters.hyperparameters.{key}",
                )
            )
    for key in params.search.space if params.search is not None else ():
        if key not in known:
            problems.append(
                Problem(
                    f"search.space: {unknown(key)}",
                    task=task.id,
                    field=f"parameters.search.space.{key}",
                )
            )
    if source is not None:
        from stageflow.operators.ml.search import SearchSpaceParams
        from stageflow.spec.params import substitute

        try:
            space = SearchSpaceParams.model_validate(
                substitute(dict(source.parameters), run_params)
            ).space
        except (ValidationError, KeyError):
            space = {}  # reported on that task
        for key in space:
            if key not in known:
                problems.append(
                    Problem(
                        f"task '{task.id}' trains these candidates: {unknown(key)}",
                        task=source.id,
                        field=f"parameters.space.{key}",
                    )
                )
    return problems


def default_metric(model_type: str) -> str:
    return {"classification": "accuracy", "regression": "r2"}.get(model_type, "silhouette")


# -- helpers --------------------------------------------------------------------------


def _features(inputs: Mapping[str, Any], params: TrainingParams, op: str) -> dict[str, Any]:
    def usable(value: Any) -> bool:
        return is_features(value) or is_frame(value)

    _, value = pick(inputs, params.input, usable, "features (or a DataFrame)", op)
    if is_features(value):
        return dict(value)
    from sklearn.preprocessing import FunctionTransformer

    target = params.target or ("target" if "target" in value.columns else None)
    if target is not None:
        ensure_columns(value, [target], op, "target column")
    identity = FunctionTransformer(validate=False, feature_names_out="one-to-one")
    return {
        "target": target,
        "task_type": params.model_type,
        "train": value,
        "test": value.iloc[0:0],
        "transformer": identity,
    }


def _candidate(inputs: Mapping[str, Any], op: str) -> dict[str, Any] | None:
    """The search candidate among the inputs (a mapped child's element), if any:
    ``{"index", "hyperparameters", "source"}``."""
    found = [(k, v) for k, v in inputs.items() if is_candidate(v)]
    if not found:
        for key, value in inputs.items():
            if isinstance(value, list) and value and all(is_candidate(v) for v in value):
                raise TaskFailed(
                    f"{op}: input '{key}' is a list of {len(value)} search candidates; "
                    f"add `map_over: {key}` to this task to train one model per candidate"
                )
        return None
    if len(found) > 1:
        names = ", ".join(k for k, _ in found)
        raise TaskFailed(
            f"{op}: several upstream tasks give a search candidate ({names}); "
            "map over one search_space task"
        )
    source, value = found[0]
    return {
        "index": value.get("index"),
        "hyperparameters": dict(value["hyperparameters"]),
        "source": source,
    }


def _with_candidate(
    params: TrainingParams, candidate: Mapping[str, Any], op: str
) -> TrainingParams:
    """``params`` with the candidate's hyperparameters over its own."""
    chosen: dict[str, Any] = candidate["hyperparameters"]
    if params.search is not None:
        both = [k for k in params.search.space if k in chosen]
        if both:
            raise TaskFailed(
                f"{op}: search.space and candidate {candidate['index']} of "
                f"'{candidate['source']}' both choose {', '.join(both)}; "
                "search each hyperparameter in one place"
            )
    merged = {**params.hyperparameters, **chosen}
    return params.model_copy(update={"hyperparameters": merged})


def _check_numeric(transformer: Any, x: Any, op: str) -> None:
    from pandas.api import types

    try:
        sample = transformer.transform(x.head(20))
    except Exception:  # the identity transformer is not fitted: the raw columns are the features
        sample = x.head(20)
    if not is_frame(sample):
        return
    text = [str(c) for c in sample.columns if not types.is_numeric_dtype(sample[c])]
    if text:
        raise TaskFailed(
            f"{op}: columns {', '.join(text[:5])} are not numeric; encode them in "
            "feature_engineering (one_hot or ordinal) or drop them"
        )


def _fit(pipeline: Any, x: Any, y: Any, op: str) -> None:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            pipeline.fit(x, y)
    except (ValueError, TypeError) as exc:
        raise TaskFailed(f"{op}: fitting failed: {_line(exc)}") from None


def _scoring(model_type: str, metric: str | None) -> str | None:
    if metric is not None:
        return metric
    return {"classification": "accuracy", "regression": "r2"}.get(model_type)


def _search(
    pipeline: Any, params: TrainingParams, model_type: str, x: Any, y: Any, op: str
) -> tuple[Any, dict[str, Any], dict[str, float]]:
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    search = params.search
    assert search is not None
    model = pipeline.named_steps["model"]
    known = model.get_params(deep=False)
    for key in search.space:
        if key not in known:
            hint = did_you_mean(key, list(known))
            raise TaskFailed(
                f"{op}: search.space: {type(model).__name__} has no hyperparameter '{key}'"
                + (f"; did you mean '{hint}'?" if hint else "")
            )
    grid = {f"model__{k}": v for k, v in search.space.items()}
    scoring = _scoring(model_type, search.metric)
    if search.method == "grid":
        cv: Any = GridSearchCV(pipeline, grid, cv=search.cv, scoring=scoring, n_jobs=1)
    else:
        cv = RandomizedSearchCV(
            pipeline,
            grid,
            n_iter=search.n_iter,
            cv=search.cv,
            scoring=scoring,
            n_jobs=1,
            random_state=params.seed,
        )
    _fit(cv, x, y, op)
    best = {k.removeprefix("model__"): v for k, v in cv.best_params_.items()}
    candidates = len(cv.cv_results_["params"])
    print(f"search ({search.method}): {candidates} candidates; best {best} ({cv.best_score_:.4f})")
    return (
        cv.best_estimator_,
        best,
        {"search_best_score": float(cv.best_score_), "search_candidates": float(candidates)},
    )


def _cross_validate(
    pipeline: Any, params: TrainingParams, model_type: str, x: Any, y: Any, op: str
) -> dict[str, float]:
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    k = params.cross_validation or 5
    seed = params.seed if params.seed is not None else 0
    if model_type == "classification":
        folds: Any = StratifiedKFold(k, shuffle=True, random_state=seed)
    else:
        folds = KFold(k, shuffle=True, random_state=seed)
    scoring = _scoring(model_type, None)
    try:
        scores = cross_val_score(clone(pipeline), x, y, cv=folds, scoring=scoring, n_jobs=1)
    except ValueError as exc:
        raise TaskFailed(f"{op}: cross-validation failed: {_line(exc)}") from None
    return {"cv_mean": float(scores.mean()), "cv_std": float(scores.std())}


def _scores(pipeline: Any, model_type: str, x: Any, y: Any, split: str) -> dict[str, float]:
    if model_type == "clustering":
        from sklearn.metrics import silhouette_score

        labels = pipeline.predict(x)
        transformed = pipeline.named_steps["features"].transform(x)
        if len(set(labels)) < 2 or len(labels) < 3:
            return {}
        sample = min(len(labels), 2000)
        score = silhouette_score(transformed, labels, sample_size=sample, random_state=0)
        return {f"{split}_silhouette": float(score)}
    name = "accuracy" if model_type == "classification" else "r2"
    return {f"{split}_{name}": float(pipeline.score(x, y))}


def _gate(metrics: Mapping[str, float], minimum: float, model_type: str, op: str) -> None:
    name = "accuracy" if model_type == "classification" else "r2"
    key = f"test_{name}" if f"test_{name}" in metrics else f"train_{name}"
    if key not in metrics:
        raise TaskFailed(f"{op}: min_accuracy needs a {name} score, which {model_type} lacks")
    value = metrics[key]
    if value < minimum:
        label = key.replace("_", " ").replace("r2", "R²")
        raise TaskFailed(f"{op}: {label} {value:.4f} is below min_accuracy {minimum:g}")


def _fix(key: str, known: Collection[str]) -> str:
    hint = did_you_mean(key, list(known))
    return f"did you mean '{hint}'?" if hint else f"it takes: {', '.join(sorted(known))}"


def _estimator_classes(
    params: TrainingParams, task: Task, pipeline: Pipeline | None, run_params: Mapping[str, Any]
) -> list[tuple[str, frozenset[str]]]:
    """``(class name, hyperparameter names)`` of each estimator the task may build:
    one for a ``model_type`` (given, or set on the upstream features), else one per
    type the short name is for; empty when a class cannot be imported or created."""
    try:
        import sklearn  # noqa: F401 - the ml extra; without it the run names the extra
    except ImportError:
        return []
    algo = params.algorithm
    if "." in algo or ":" in algo:
        types = ["classification"]  # a class path is the same class whatever the type
    else:
        given = params.model_type or _upstream_task_type(task, pipeline, run_params)
        types = [t for t, names in ALGORITHMS.items() if algo in names]
        if given in types:
            types = [given]
    out = []
    for model_type in types:
        try:
            cls = resolve_algorithm(algo, model_type)
        except TaskFailed:
            return []
        names = _hyperparameter_names(cls)
        if names is None:
            return []
        out.append((cls.__name__, names))
    return out


@functools.cache
def _hyperparameter_names(cls: type) -> frozenset[str] | None:
    try:
        return frozenset(cls().get_params(deep=False))
    except Exception:  # an estimator that needs arguments: checked when it is built
        return None


def _upstream_task_type(
    task: Task, pipeline: Pipeline | None, run_params: Mapping[str, Any]
) -> str | None:
    """The ``task_type`` an upstream ``feature_engineering`` task states, if one does."""
    from stageflow.spec.params import substitute

    if pipeline is None:
        return None
    for upstream in pipeline.tasks:
        if upstream.id in task.upstream and upstream.operator_name == "feature_engineering":
            try:
                value = substitute({"v": upstream.parameters.get("task_type")}, run_params)["v"]
            except KeyError:
                continue  # an undeclared run parameter: reported on that task
            if isinstance(value, str):
                return value
    return None


def _search_space_task(task: Task, pipeline: Pipeline | None) -> Task | None:
    """The ``search_space`` task this one maps over, if it is one."""
    if pipeline is None or task.map_over is None:
        return None
    for other in pipeline.tasks:
        if other.id == task.map_over:
            return other if other.operator_name == "search_space" else None
    return None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
