"""stageflow's Python SDK in one screen: three tasks wired by parameter name.

Run it either way:
    stageflow run examples/sdk_quickstart.py:pipeline
    python examples/sdk_quickstart.py
"""

from typing import Any

from stageflow import Pipeline, task


@task
def split(seed: int) -> dict[str, Any]:
    """Load iris (bundled with scikit-learn) and split it, stratified."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    return {"x_train": x_train, "x_test": x_test, "y_train": y_train, "y_test": y_test}


@task(retries=1, timeout=60)
def train(split: dict[str, Any], max_depth: int) -> Any:
    """Fit a small decision tree (`split` is the upstream task's output)."""
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=max_depth, random_state=0).fit(
        split["x_train"], split["y_train"]
    )


@task
def evaluate(split: dict[str, Any], train: Any) -> dict[str, float]:
    """Accuracy of the trained model on the held-out split."""
    return {"accuracy": round(float(train.score(split["x_test"], split["y_test"])), 4)}


pipeline = Pipeline(
    "quickstart", tasks=[split, train, evaluate], params={"seed": 0, "max_depth": 3}
)

if __name__ == "__main__":
    result = pipeline.run()
    print(f"{result.state}: {result.output('evaluate')}")
