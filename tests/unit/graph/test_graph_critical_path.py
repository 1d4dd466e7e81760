"""upward_rank and critical_path on hand-picked graphs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from stageflow.graph import CriticalPath, critical_path, upward_rank

Graph = Mapping[str, Sequence[str]]
DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


@pytest.mark.parametrize(
    ("upstream", "durations", "default", "ranks", "path"),
    [
        pytest.param({}, {}, 1.0, {}, CriticalPath([], 0.0), id="empty"),
        pytest.param({"a": []}, {"a": 3}, 1.0, {"a": 3.0}, CriticalPath(["a"], 3.0), id="single"),
        pytest.param(
            {"a": [], "b": ["a"], "c": ["b"]},
            {},
            1.0,
            {"a": 3.0, "b": 2.0, "c": 1.0},
            CriticalPath(["a", "b", "c"], 3.0),
            id="chain-default",
        ),
        pytest.param(
            DIAMOND,
            {"b": 5, "c": 2},
            1.0,
            {"a": 7.0, "b": 6.0, "c": 3.0, "d": 1.0},
            CriticalPath(["a", "b", "d"], 7.0),
            id="diamond-heavy-left",
        ),
        pytest.param(
            DIAMOND,
            {"b": 2, "c": 5},
            1.0,
            {"a": 7.0, "b": 3.0, "c": 6.0, "d": 1.0},
            CriticalPath(["a", "c", "d"], 7.0),
            id="diamond-heavy-right",
        ),
        pytest.param(
            DIAMOND,
            {},
            1.0,
            {"a": 3.0, "b": 2.0, "c": 2.0, "d": 1.0},
            CriticalPath(["a", "b", "d"], 3.0),
            id="diamond-tie-earliest-defined",
        ),
        pytest.param(
            {"y": [], "x": [], "z": ["x", "y"]},
            {},
            1.0,
            {"y": 2.0, "x": 2.0, "z": 1.0},
            CriticalPath(["y", "z"], 2.0),
            id="source-tie-earliest-defined",
        ),
        pytest.param(
            {"a": [], "b": ["a"], "x": [], "y": ["x"], "z": ["y"]},
            {},
            1.0,
            {"a": 2.0, "b": 1.0, "x": 3.0, "y": 2.0, "z": 1.0},
            CriticalPath(["x", "y", "z"], 3.0),
            id="disconnected-longer-wins",
        ),
        pytest.param(
            {"a": [], "b": ["a"], "c": ["a", "b"]},
            {"a": 1, "b": 1, "c": 1},
            1.0,
            {"a": 3.0, "b": 2.0, "c": 1.0},
            CriticalPath(["a", "b", "c"], 3.0),
            id="skip-level-edge-loses",
        ),
        pytest.param(
            {"a": [], "b": ["a"]},
            {},
            0.0,
            {"a": 0.0, "b": 0.0},
            CriticalPath(["a", "b"], 0.0),
            id="zero-durations",
        ),
        pytest.param(
            {"a": [], "b": ["a"]},
            {"ghost": 100.0, "b": 0.5},
            2.0,
            {"a": 2.5, "b": 0.5},
            CriticalPath(["a", "b"], 2.5),
            id="default-and-unknown-duration",
        ),
        pytest.param(
            {"fan": [], "l1": ["fan"], "l2": ["fan"], "l3": ["fan"], "sink": ["l1", "l2", "l3"]},
            {"l3": 4.0},
            1.0,
            {"fan": 6.0, "l1": 2.0, "l2": 2.0, "l3": 5.0, "sink": 1.0},
            CriticalPath(["fan", "l3", "sink"], 6.0),
            id="fan-out-fan-in",
        ),
    ],
)
def test_upward_rank_and_critical_path(
    upstream: Graph,
    durations: Mapping[str, float],
    default: float,
    ranks: dict[str, float],
    path: CriticalPath,
) -> None:
    result = upward_rank(upstream, durations, default)
    assert result == ranks
    assert list(result) == list(upstream)
    assert critical_path(upstream, durations, default) == path


@pytest.mark.parametrize(
    ("durations", "default"),
    [
        pytest.param({"a": -1.0}, 1.0, id="negative"),
        pytest.param({"a": math.nan}, 1.0, id="nan"),
        pytest.param({"a": math.inf}, 1.0, id="infinite"),
        pytest.param({}, -0.5, id="negative-default"),
    ],
)
def test_bad_durations_raise(durations: Mapping[str, float], default: float) -> None:
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        upward_rank({"a": []}, durations, default)
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        critical_path({"a": []}, durations, default)
