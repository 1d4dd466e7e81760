"""find_cycle, CycleError and every function that must refuse a cycle."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pytest

from stageflow.graph import (
    CycleError,
    critical_path,
    draw,
    find_cycle,
    format_cycle,
    levels,
    shape,
    topological_order,
    upward_rank,
)

Graph = Mapping[str, Sequence[str]]


@pytest.mark.parametrize(
    ("upstream", "cycle"),
    [
        pytest.param({}, None, id="empty"),
        pytest.param({"a": []}, None, id="single"),
        pytest.param({"a": [], "b": ["a"], "c": ["b"]}, None, id="chain"),
        pytest.param({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}, None, id="diamond"),
        pytest.param({"a": ["ghost"], "b": ["a"]}, None, id="unknown-upstream"),
        pytest.param({"a": ["a"]}, ["a", "a"], id="self-loop"),
        pytest.param(
            {"train": ["evaluate"], "evaluate": ["train"]},
            ["train", "evaluate", "train"],
            id="two",
        ),
        pytest.param({"a": ["c"], "b": ["a"], "c": ["b"]}, ["a", "b", "c", "a"], id="three"),
        pytest.param(
            {"c": ["b"], "a": ["c"], "b": ["a"]},
            ["c", "a", "b", "c"],
            id="three-starts-at-earliest-defined",
        ),
        pytest.param(
            {
                "ingest": [],
                "clean": ["ingest"],
                "train": ["clean", "evaluate"],
                "evaluate": ["train"],
            },
            ["train", "evaluate", "train"],
            id="behind-acyclic-prefix",
        ),
        pytest.param(
            {
                "deploy": ["train"],
                "ingest": [],
                "train": ["ingest", "evaluate"],
                "evaluate": ["train"],
            },
            ["train", "evaluate", "train"],
            id="reached-from-a-downstream-task",
        ),
        pytest.param(
            {"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]},
            ["a", "b", "a"],
            id="first-of-two-cycles",
        ),
        pytest.param({"a": ["ghost", "a"]}, ["a", "a"], id="self-loop-after-unknown"),
        pytest.param(
            {"x": [], "a": ["x", "c"], "b": ["a"], "c": ["b", "x"]},
            ["a", "b", "c", "a"],
            id="cycle-with-shared-source",
        ),
    ],
)
def test_find_cycle(upstream: Graph, cycle: list[str] | None) -> None:
    assert find_cycle(upstream) == cycle


def test_cycle_error_carries_the_cycle() -> None:
    error = CycleError(["train", "evaluate", "train"])
    assert isinstance(error, ValueError)
    assert error.cycle == ["train", "evaluate", "train"]
    assert str(error) == "cycle: train -> evaluate -> train"


@pytest.mark.parametrize(
    ("cycle", "text"),
    [
        pytest.param(["a", "a"], "a -> a", id="self-loop"),
        pytest.param(["train", "evaluate", "train"], "train -> evaluate -> train", id="two"),
        pytest.param([], "", id="empty"),
    ],
)
def test_format_cycle(cycle: list[str], text: str) -> None:
    assert format_cycle(cycle) == text


CYCLIC = {"ingest": [], "train": ["ingest", "evaluate"], "evaluate": ["train"], "x": ["train"]}


@pytest.mark.parametrize(
    "refuse",
    [
        pytest.param(topological_order, id="topological_order"),
        pytest.param(levels, id="levels"),
        pytest.param(shape, id="shape"),
        pytest.param(lambda g: upward_rank(g, {}), id="upward_rank"),
        pytest.param(lambda g: critical_path(g, {}), id="critical_path"),
        *(
            pytest.param(lambda g, f=fmt: draw(g, f), id=f"draw-{fmt}")
            for fmt in ("text", "dot", "mermaid", "svg", "png")
        ),
    ],
)
def test_cycle_refused_with_the_found_cycle(refuse: Callable[[Graph], object]) -> None:
    with pytest.raises(CycleError) as caught:
        refuse(CYCLIC)
    assert caught.value.cycle == ["train", "evaluate", "train"] == find_cycle(CYCLIC)
    assert str(caught.value) == "cycle: train -> evaluate -> train"
