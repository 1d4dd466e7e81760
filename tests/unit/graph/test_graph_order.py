"""topological_order, levels, downstream and shape on hand-picked graphs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from stageflow.graph import Shape, downstream, levels, shape, topological_order

Graph = Mapping[str, Sequence[str]]

# (upstream, topological order, levels, downstream, shape)
CASES = [
    pytest.param({}, [], [], {}, Shape(0, 0, 0, 0), id="empty"),
    pytest.param({"a": []}, ["a"], [["a"]], {"a": []}, Shape(1, 0, 1, 1), id="single"),
    pytest.param(
        {"a": [], "b": ["a"], "c": ["b"]},
        ["a", "b", "c"],
        [["a"], ["b"], ["c"]],
        {"a": ["b"], "b": ["c"], "c": []},
        Shape(3, 2, 3, 1),
        id="chain",
    ),
    pytest.param(
        {"c": ["b"], "b": ["a"], "a": []},
        ["a", "b", "c"],
        [["a"], ["b"], ["c"]],
        {"c": [], "b": ["c"], "a": ["b"]},
        Shape(3, 2, 3, 1),
        id="chain-defined-backwards",
    ),
    pytest.param(
        {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]},
        ["a", "b", "c", "d"],
        [["a"], ["b", "c"], ["d"]],
        {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []},
        Shape(4, 4, 3, 2),
        id="diamond",
    ),
    pytest.param(
        {"root": [], "x": ["root"], "y": ["root"], "z": ["root"]},
        ["root", "x", "y", "z"],
        [["root"], ["x", "y", "z"]],
        {"root": ["x", "y", "z"], "x": [], "y": [], "z": []},
        Shape(4, 3, 2, 3),
        id="fan-out",
    ),
    pytest.param(
        {"x": [], "y": [], "z": [], "sink": ["z", "x", "y"]},
        ["x", "y", "z", "sink"],
        [["x", "y", "z"], ["sink"]],
        {"x": ["sink"], "y": ["sink"], "z": ["sink"], "sink": []},
        Shape(4, 3, 2, 3),
        id="fan-in",
    ),
    pytest.param(
        {"a": [], "b": ["a"], "x": [], "y": ["x"]},
        ["a", "b", "x", "y"],
        [["a", "x"], ["b", "y"]],
        {"a": ["b"], "b": [], "x": ["y"], "y": []},
        Shape(4, 2, 2, 2),
        id="disconnected",
    ),
    pytest.param(
        {"b": [], "a": []},
        ["b", "a"],
        [["b", "a"]],
        {"b": [], "a": []},
        Shape(2, 0, 1, 2),
        id="ties-by-definition-not-name",
    ),
    pytest.param(
        {"a": [], "c": [], "b": ["a"]},
        ["a", "c", "b"],
        [["a", "c"], ["b"]],
        {"a": ["b"], "c": [], "b": []},
        Shape(3, 1, 2, 2),
        id="topological-definition-kept",
    ),
    pytest.param(
        {"late": ["early"], "x": [], "early": []},
        ["x", "early", "late"],
        [["x", "early"], ["late"]],
        {"late": [], "x": [], "early": ["late"]},
        Shape(3, 1, 2, 2),
        id="moved-only-as-far-as-forced",
    ),
    pytest.param(
        {"a": [], "b": ["a"], "c": ["a", "b"]},
        ["a", "b", "c"],
        [["a"], ["b"], ["c"]],
        {"a": ["b", "c"], "b": ["c"], "c": []},
        Shape(3, 3, 3, 1),
        id="skip-level-edge",
    ),
    pytest.param(
        {"a": ["ghost"], "b": ["a", "phantom"]},
        ["a", "b"],
        [["a"], ["b"]],
        {"a": ["b"], "b": []},
        Shape(2, 1, 2, 1),
        id="unknown-upstream-ignored",
    ),
    pytest.param(
        {"a": [], "b": ["a", "a"]},
        ["a", "b"],
        [["a"], ["b"]],
        {"a": ["b"], "b": []},
        Shape(2, 1, 2, 1),
        id="repeated-upstream-counts-once",
    ),
    pytest.param(
        {"a": [], "bb": "a"},
        ["a", "bb"],
        [["a"], ["bb"]],
        {"a": ["bb"], "bb": []},
        Shape(2, 1, 2, 1),
        id="bare-string-is-one-id",
    ),
]


@pytest.mark.parametrize(("upstream", "order", "groups", "reverse", "size"), CASES)
def test_topological_order(
    upstream: Graph, order: list[str], groups: list[list[str]], reverse: object, size: Shape
) -> None:
    assert topological_order(upstream) == order


@pytest.mark.parametrize(("upstream", "order", "groups", "reverse", "size"), CASES)
def test_levels(
    upstream: Graph, order: list[str], groups: list[list[str]], reverse: object, size: Shape
) -> None:
    assert levels(upstream) == groups


@pytest.mark.parametrize(("upstream", "order", "groups", "reverse", "size"), CASES)
def test_downstream(
    upstream: Graph,
    order: list[str],
    groups: list[list[str]],
    reverse: dict[str, list[str]],
    size: Shape,
) -> None:
    result = downstream(upstream)
    assert result == reverse
    assert list(result) == list(upstream)  # every id, in definition order


@pytest.mark.parametrize(("upstream", "order", "groups", "reverse", "size"), CASES)
def test_shape(
    upstream: Graph, order: list[str], groups: list[list[str]], reverse: object, size: Shape
) -> None:
    assert shape(upstream) == size


def test_downstream_works_on_a_cycle() -> None:
    assert downstream({"a": ["b"], "b": ["a"]}) == {"a": ["b"], "b": ["a"]}


def test_shape_is_frozen() -> None:
    with pytest.raises(AttributeError):
        shape({"a": []}).tasks = 2  # type: ignore[misc]  # proving it is read-only
