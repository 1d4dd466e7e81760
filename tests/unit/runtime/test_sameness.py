"""Whether two task outputs hold the same content (``runtime.sameness``), and
``runs diff``'s use of it on stored outputs (``runtime.lineage``)."""

from __future__ import annotations

import hashlib
import math
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from stageflow.runtime.lineage import _output_changes
from stageflow.runtime.sameness import same_content
from stageflow.runtime.store.base import OutputRef

RUN_A = "20260101-000000-aaaaaa"
RUN_B = "20260101-000001-bbbbbb"
IDS = (RUN_A, RUN_B)

X = np.random.default_rng(0).normal(size=(60, 3))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


def fitted(model: Any) -> Any:
    return model.fit(X, Y)


def forest(seed: int = 0) -> RandomForestClassifier:
    return fitted(RandomForestClassifier(n_estimators=5, max_depth=3, random_state=seed))


def pipeline(c: float = 1.0) -> Pipeline:
    return fitted(Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(C=c))]))


def round_trip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


class Plain:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


class Unpicklable:
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("cannot pickle")


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def cyclic() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(
            {"model_file": f"/h/artifacts/runs/{RUN_A}/train/model.joblib", "rows": 3},
            {"model_file": f"/h/artifacts/runs/{RUN_B}/train/model.joblib", "rows": 3},
            True,
            id="paths-of-own-run",
        ),
        pytest.param(
            {f"/runs/{RUN_A}/a.png": 1}, {f"/runs/{RUN_B}/a.png": 1}, True, id="run-id-in-key"
        ),
        pytest.param(
            f"/runs/{RUN_A}/x".encode(), f"/runs/{RUN_B}/x".encode(), True, id="bytes-with-run-id"
        ),
        pytest.param("/runs/other/x", "/runs/another/x", False, id="other-strings"),
        pytest.param({"rows": 3}, {"rows": 4}, False, id="other-number"),
        pytest.param({"rows": 3}, {"rows": 3, "cols": 1}, False, id="other-keys"),
        pytest.param([1, 2], (1, 2), False, id="list-is-not-tuple"),
        pytest.param(1, 1.0, False, id="int-is-not-float"),
        pytest.param(True, 1, False, id="bool-is-not-int"),
        pytest.param(0.1 + 0.2, 0.3, True, id="float-noise"),
        pytest.param(1.0, 1.0 + 1e-6, False, id="float-change"),
        pytest.param(1e-13, 0.0, True, id="float-abs-tol"),
        pytest.param(math.nan, math.nan, True, id="nan"),
        pytest.param(math.nan, 0.0, False, id="nan-vs-number"),
        pytest.param({1, 2}, {2, 1}, True, id="set"),
        pytest.param(np.float64(0.1 + 0.2), np.float64(0.3), True, id="numpy-float"),
        pytest.param(np.int64(3), np.int64(4), False, id="numpy-int"),
        pytest.param(np.arange(5.0) + 1e-15, np.arange(5.0), True, id="array-close"),
        pytest.param(np.arange(5.0), np.arange(5.0) * 1.001, False, id="array-change"),
        pytest.param(np.arange(5), np.arange(5.0), False, id="array-dtype"),
        pytest.param(np.zeros((2, 3)), np.zeros((3, 2)), False, id="array-shape"),
        pytest.param(
            np.array([f"/runs/{RUN_A}/x", "y"]),
            np.array([f"/runs/{RUN_B}/x", "y"]),
            True,
            id="string-array",
        ),
        pytest.param(
            pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}),
            pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}),
            True,
            id="dataframe",
        ),
        pytest.param(
            pd.DataFrame({"a": [1.0, 2.0]}), pd.DataFrame({"a": [1.0, 2.5]}), False, id="df-change"
        ),
        pytest.param(Plain(x=1, p=f"/{RUN_A}"), Plain(x=1, p=f"/{RUN_B}"), True, id="object"),
        pytest.param(Plain(x=1), Plain(x=2), False, id="object-change"),
        pytest.param(Plain(x=1), {"x": 1}, False, id="object-is-not-dict"),
        pytest.param(Unpicklable(1), Unpicklable(1), False, id="cannot-compare"),
        pytest.param(nested(50), nested(50), True, id="deep"),
        pytest.param(nested(500), nested(500), False, id="too-deep"),
        pytest.param(cyclic(), cyclic(), True, id="cycle"),
    ],
)
def test_same_content(a: Any, b: Any, expected: bool) -> None:
    assert same_content(a, b, IDS) is expected


@pytest.mark.parametrize(
    ("make_a", "make_b", "expected"),
    [
        pytest.param(pipeline, pipeline, True, id="pipeline-refit"),
        pytest.param(pipeline, lambda: pipeline(c=0.5), False, id="pipeline-other-C"),
        pytest.param(forest, forest, True, id="forest-cython-trees"),
        pytest.param(forest, lambda: forest(seed=1), False, id="forest-other-seed"),
        pytest.param(
            lambda: fitted(GradientBoostingClassifier(n_estimators=5, random_state=0)),
            lambda: fitted(GradientBoostingClassifier(n_estimators=5, random_state=0)),
            True,
            id="boosting-object-array-of-trees",
        ),
    ],
)
def test_same_content_of_estimators(make_a: Any, make_b: Any, expected: bool) -> None:
    a = {"estimator": round_trip(make_a()), "model_file": f"/runs/{RUN_A}/train/model.joblib"}
    b = {"estimator": round_trip(make_b()), "model_file": f"/runs/{RUN_B}/train/model.joblib"}
    assert same_content(a, b, IDS) is expected


def test_functions_compare_by_code() -> None:
    def make(k: int) -> Any:
        return lambda x: x + k

    assert same_content(make(1), make(1)) is True
    assert same_content(make(1), make(2)) is False


def test_the_work_is_bounded() -> None:
    big = list(range(1000))
    assert same_content(big, list(big)) is True
    assert same_content(big, list(big), max_items=100) is False
    assert same_content(nested(20), nested(20), max_depth=10) is False


def inline(run_id: str, value: Any) -> OutputRef:
    data = pickle.dumps(value)
    sha = hashlib.sha256(data).hexdigest()
    return OutputRef(run_id, "train", "inline", "pickle", len(data), sha, data=data)


def test_runs_diff_compares_outputs_whose_pickles_differ_in_length() -> None:
    # One pickle shares a string the other holds twice: other bytes, other length,
    # the same value (as two processes pickling equal models).
    shared = "liblinear" * 3
    a = inline(RUN_A, {"solver": [shared, shared], "path": f"/runs/{RUN_A}/m"})
    b = inline(RUN_B, {"solver": [shared, "".join(shared)], "path": f"/runs/{RUN_B}/m"})
    assert a.size != b.size
    assert _output_changes({"train": a}, {"train": b}, RUN_A, RUN_B) == {}
    c = inline(RUN_B, {"solver": [shared, "lbfgs"], "path": f"/runs/{RUN_B}/m"})
    assert _output_changes({"train": a}, {"train": c}, RUN_A, RUN_B) == {
        "train": {"a": a.sha256, "b": c.sha256}
    }


def test_runs_diff_says_changed_when_an_output_cannot_be_loaded() -> None:
    a = inline(RUN_A, {"x": 1})
    broken = OutputRef(RUN_B, "train", "inline", "pickle", 3, "0" * 64, data=b"not")
    assert set(_output_changes({"train": a}, {"train": broken}, RUN_A, RUN_B)) == {"train"}
    gone = OutputRef(RUN_B, "train", "file", "pickle", 3, "1" * 64, uri="/no/such/file")
    assert set(_output_changes({"train": a}, {"train": gone}, RUN_A, RUN_B)) == {"train"}
