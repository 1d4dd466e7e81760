"""The steps of the example ML pipeline (``ml_functions.yaml``), as plain functions.

stageflow wires them by parameter name: a parameter named like an upstream
task receives that task's output; the others come from the task's
``parameters:``, then from the run's ``params:``, then from their defaults
(see ``stageflow.operators.python``).

The graph::

    load -> validate -> features -+-> train_logistic_regression -> evaluate_logistic_regression -+
                                  +-> train_random_forest       -> evaluate_random_forest       -+-> select_best
                                  +-> train_gradient_boosting   -> evaluate_gradient_boosting   -+

pandas and scikit-learn are imported inside the functions, so loading the
pipeline (``stageflow validate``, ``stageflow graph``) stays fast. The datasets
ship with scikit-learn: nothing is downloaded.
"""  # noqa: E501

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stageflow.operators import TaskFailed

if TYPE_CHECKING:
    import pandas as pd

#: Datasets bundled with scikit-learn that ``load_dataset`` accepts.
DATASETS = ("breast_cancer", "wine", "iris")

#: Metrics computed by ``evaluate_model`` (and accepted by ``select_best``).
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def load_dataset(dataset: str) -> pd.DataFrame:
    """Load a dataset bundled with scikit-learn as a DataFrame with a ``target`` column.

    Raises ``TaskFailed`` for a dataset name it does not know.
    """
    from sklearn import datasets

    loaders = {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }
    if dataset not in loaders:
        raise TaskFailed(
            f"unknown dataset '{dataset}'; choose one of {', '.join(DATASETS)} "
            "(--param dataset=NAME)"
        )
    bunch = loaders[dataset](as_frame=True)
    frame: pd.DataFrame = bunch.frame
    print(f"loaded {dataset}: {len(frame)} rows, {frame.shape[1] - 1} features")
    return frame


def validate_data(load: pd.DataFrame, min_rows: int = 100, min_class_share: float = 0.05) -> Any:
    """Check the data before training on it; return it unchanged.

    Checks: a ``target`` column and at least one feature, no missing values,
    numeric features only, at least ``min_rows`` rows, at least two classes and
    every class at least ``min_class_share`` of the rows. Raises ``TaskFailed``
    listing every violation.
    """
    import pandas as pd

    problems: list[str] = []
    if "target" not in load.columns:
        problems.append("no 'target' column")
    features = [c for c in load.columns if c != "target"]
    if not features:
        problems.append("no feature columns")
    nulls = load.isna().sum()
    if int(nulls.sum()):
        shown = ", ".join(f"{c} ({n})" for c, n in nulls[nulls > 0].items())
        problems.append(f"missing values in {shown}")
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(load[c])]
    if non_numeric:
        problems.append(f"non-numeric features: {', '.join(non_numeric)}")
    if len(load) < min_rows:
        problems.append(f"{len(load)} rows, fewer than min_rows={min_rows}")
    shares = load["target"].value_counts(normalize=True) if "target" in load.columns else None
    if shares is not None:
        if len(shares) < 2:
            problems.append(f"only {len(shares)} class in 'target'; need at least 2")
        elif shares.min() < min_class_share:
            problems.append(
                f"class {shares.idxmin()} is {shares.min():.1%} of the rows, "
                f"under min_class_share={min_class_share:.0%}"
            )
    if problems:
        raise TaskFailed("data validation failed: " + "; ".join(problems))
    assert shares is not None
    balance = ", ".join(f"{k}: {v:.1%}" for k, v in shares.sort_index().items())
    print(f"validated {len(load)} rows x {len(features)} features; no nulls; classes {balance}")
    return load


def engineer_features(validate: pd.DataFrame, test_size: float, seed: int) -> dict[str, Any]:
    """Split stratified and deterministically, then standardise with a scaler fit on train only.

    Returns ``X_train``, ``X_test``, ``y_train``, ``y_test`` (numpy arrays),
    ``feature_names`` and the fitted ``scaler``.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x = validate.drop(columns=["target"])
    y = validate["target"].to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        x.to_numpy(), y, test_size=test_size, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(x_train)  # fit on train only: no test leakage
    print(f"split {len(y_train)} train / {len(y_test)} test rows (seed {seed})")
    return {
        "X_train": scaler.transform(x_train),
        "X_test": scaler.transform(x_test),
        "y_train": y_train,
        "y_test": y_test,
        "feature_names": [str(c) for c in x.columns],
        "scaler": scaler,
    }


def train_logistic_regression(features: dict[str, Any], c: float = 1.0, seed: int = 0) -> Any:
    """Fit an L2-regularised logistic regression (inverse strength ``c``)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    return model.fit(features["X_train"], features["y_train"])


def train_random_forest(
    features: dict[str, Any], n_estimators: int = 100, max_depth: int | None = None, seed: int = 0
) -> Any:
    """Fit a random forest (single-threaded: the pipeline runs models side by side)."""
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(
        n_estimators=n_estimators, max_depth=max_depth, random_state=seed, n_jobs=1
    )
    return model.fit(features["X_train"], features["y_train"])


def train_gradient_boosting(
    features: dict[str, Any],
    n_estimators: int = 100,
    learning_rate: float = 0.1,
    max_depth: int = 3,
    seed: int = 0,
) -> Any:
    """Fit gradient-boosted trees."""
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        max_depth=max_depth,
        random_state=seed,
    )
    return model.fit(features["X_train"], features["y_train"])


def evaluate_model(*trained: Any, features: dict[str, Any], model_name: str) -> dict[str, Any]:
    """Score one fitted model on the held-out test set.

    The model arrives through ``*trained`` (the one upstream task not bound by
    name), so three evaluation tasks share this function. Multi-class datasets
    use macro averages and one-vs-rest ROC AUC. Returns the model's name and
    its ``METRICS``.
    """
    from sklearn import metrics

    if len(trained) != 1:
        raise TaskFailed(f"evaluate_model needs exactly one trained model, got {len(trained)}")
    model = trained[0]
    x_test, y_test = features["X_test"], features["y_test"]
    predicted = model.predict(x_test)
    proba = model.predict_proba(x_test)
    binary = proba.shape[1] == 2
    average = "binary" if binary else "macro"
    scores = {
        "accuracy": metrics.accuracy_score(y_test, predicted),
        "precision": metrics.precision_score(y_test, predicted, average=average, zero_division=0),
        "recall": metrics.recall_score(y_test, predicted, average=average, zero_division=0),
        "f1": metrics.f1_score(y_test, predicted, average=average, zero_division=0),
        "roc_auc": (
            metrics.roc_auc_score(y_test, proba[:, 1])
            if binary
            else metrics.roc_auc_score(y_test, proba, multi_class="ovr")
        ),
    }
    result = {"model": model_name, **{k: round(float(v), 4) for k, v in scores.items()}}
    print(", ".join(f"{k}={v}" for k, v in result.items()))
    return result


def select_best(*evaluations: dict[str, Any], metric: str = "f1") -> dict[str, Any]:
    """Rank the evaluated models by ``metric`` (higher is better) and pick the best.

    Returns ``{"best_model": name, "metrics": {...}, "ranking": [names, best first]}``.
    Raises ``TaskFailed`` for an unknown metric or no evaluations.
    """
    if metric not in METRICS:
        raise TaskFailed(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    if not evaluations:
        raise TaskFailed("select_best got no evaluations; list the evaluate tasks as upstream")
    # Ties go to the model listed first in `upstream`: sorted() is stable.
    ranked = sorted(evaluations, key=lambda e: -e[metric])
    best = ranked[0]
    return {
        "best_model": best["model"],
        "metric": metric,
        "metrics": {k: v for k, v in best.items() if k != "model"},
        "ranking": [e["model"] for e in ranked],
    }
