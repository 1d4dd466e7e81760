"""100,000-task graphs: nothing recurses, answers stay right. No timings asserted
(bench/ prints those)."""

from __future__ import annotations

import random

import pytest

from stageflow.graph import (
    CycleError,
    critical_path,
    downstream,
    find_cycle,
    levels,
    shape,
    topological_order,
    upward_rank,
)

N = 100_000


def chain(n: int) -> dict[str, list[str]]:
    return {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(n)}


def test_long_chain_does_not_recurse() -> None:
    upstream = chain(N)
    assert find_cycle(upstream) is None
    order = topological_order(upstream)
    assert order == list(upstream)
    assert len(levels(upstream)) == N
    assert shape(upstream).depth == N
    path = critical_path(upstream, {})
    assert path.length == N
    assert path.tasks[0] == "t0"
    assert path.tasks[-1] == f"t{N - 1}"
    assert upward_rank(upstream, {})["t0"] == N


def test_long_chain_closed_into_a_cycle() -> None:
    upstream = chain(N)
    upstream["t0"] = [f"t{N - 1}"]
    cycle = find_cycle(upstream)
    assert cycle is not None
    assert len(cycle) == N + 1
    assert cycle[:2] == ["t0", "t1"]
    assert cycle[-2:] == [f"t{N - 1}", "t0"]
    with pytest.raises(CycleError):
        topological_order(upstream)


def test_wide_fan_out_and_in() -> None:
    middle = [f"m{i}" for i in range(N)]
    upstream: dict[str, list[str]] = {"root": [], **{m: ["root"] for m in middle}}
    upstream["sink"] = middle
    assert shape(upstream).width == N
    assert len(downstream(upstream)["root"]) == N
    assert critical_path(upstream, {"m7": 5.0}).tasks == ["root", "m7", "sink"]
    assert find_cycle(upstream) is None


def test_random_layered_graph() -> None:
    rng = random.Random(7)
    width = N // 100
    names = [f"l{i // width}_{i % width}" for i in range(N)]
    upstream: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        # Three upstream tasks from the previous three layers (repeats are allowed).
        first = max(0, i - i % width - 3 * width)
        layer_start = i - i % width
        upstream[name] = (
            [names[rng.randrange(first, layer_start)] for _ in range(3)] if layer_start else []
        )
    shuffled = dict(rng.sample(list(upstream.items()), len(upstream)))

    position = {task: i for i, task in enumerate(topological_order(shuffled))}
    assert all(position[u] < position[v] for v, deps in shuffled.items() for u in deps)
    assert len(levels(shuffled)) <= 100
    assert critical_path(shuffled, {}).length == len(levels(shuffled))
    assert find_cycle(shuffled) is None
