"""Steps of examples/control_flow.yaml: plain functions wired by parameter name.

Heavy imports stay inside the functions so `stageflow` itself starts fast.
"""

from __future__ import annotations

from typing import Any


def load(dataset: str) -> dict[str, Any]:
    """A dataset bundled with scikit-learn, split once (seeded)."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loader = {
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
    }[dataset]
    x, y = loader(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=0, stratify=y
    )
    return {"x_train": x_train, "x_test": x_test, "y_train": y_train, "y_test": y_test}


def grid(max_depths: list[int]) -> list[dict[str, Any]]:
    """One hyperparameter set per element: the mapped task trains each."""
    return [{"max_depth": d, "n_estimators": 50} for d in max_depths]


def train(grid: dict[str, Any], load: dict[str, Any]) -> dict[str, Any]:
    """Fit one random forest for one hyperparameter set; score it on the test rows."""
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(random_state=0, n_jobs=1, **grid)
    model.fit(load["x_train"], load["y_train"])
    return {"params": grid, "accuracy": float(model.score(load["x_test"], load["y_test"]))}


def pick_best(train: list[dict[str, Any]]) -> dict[str, Any]:
    """The best of the mapped task's outputs (a list, in element order)."""
    best = max(train, key=lambda r: r["accuracy"])
    return {"accuracy": best["accuracy"], "params": best["params"], "tried": len(train)}


def quality_check(pick_best: dict[str, Any], target: float) -> str:
    """A branch: the id of the downstream task to follow."""
    return "publish" if pick_best["accuracy"] >= target else "investigate"


def publish(pick_best: dict[str, Any]) -> str:
    return f"published a model with accuracy {pick_best['accuracy']:.3f}"


def investigate(pick_best: dict[str, Any]) -> str:
    return f"accuracy {pick_best['accuracy']:.3f} is below target: opened an investigation"


def notify(*outcomes: Any) -> str:
    """Runs after whichever branch ran (none_failed_min_one_success)."""
    return "; ".join(str(o) for o in outcomes if o is not None)
