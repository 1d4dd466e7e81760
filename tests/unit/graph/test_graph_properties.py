"""Properties of the graph algorithms on random DAGs (hypothesis)."""

from __future__ import annotations

import functools
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stageflow.graph import (
    CycleError,
    critical_path,
    downstream,
    draw,
    find_cycle,
    levels,
    shape,
    topological_order,
    upward_rank,
)

Graph = dict[str, list[str]]
SVG = "{http://www.w3.org/2000/svg}"


@st.composite
def dags(draw_: st.DrawFn, max_tasks: int = 12) -> Graph:
    """A random DAG whose definition order is a random permutation (not topological)."""
    n = draw_(st.integers(0, max_tasks))
    names = [f"t{i}" for i in range(n)]
    ups: Graph = {}
    for i, name in enumerate(names):
        ups[name] = (
            draw_(st.lists(st.sampled_from(names[:i]), unique=True, max_size=4)) if i else []
        )
    order = draw_(st.permutations(names))
    return {name: ups[name] for name in order}


def edges(upstream: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    return [(u, v) for v, deps in upstream.items() for u in deps]


def reachable(upstream: Graph, start: str) -> list[str]:
    """``start`` and every task downstream of it, in definition order."""
    down = downstream(upstream)
    seen = {start}
    stack = [start]
    while stack:
        for nxt in down[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return [task for task in upstream if task in seen]


@given(dags())
def test_every_edge_goes_forward_in_topological_order(upstream: Graph) -> None:
    order = topological_order(upstream)
    assert sorted(order) == sorted(upstream)
    position = {task: i for i, task in enumerate(order)}
    assert all(position[u] < position[v] for u, v in edges(upstream))


@given(dags())
def test_topological_order_takes_the_earliest_defined_ready_task(upstream: Graph) -> None:
    expected: list[str] = []
    done: set[str] = set()
    while len(expected) < len(upstream):
        task = next(t for t in upstream if t not in done and set(upstream[t]) <= done)
        expected.append(task)
        done.add(task)
    assert topological_order(upstream) == expected


@given(dags())
def test_topological_order_keeps_a_topological_definition_order(upstream: Graph) -> None:
    ordered = {task: upstream[task] for task in topological_order(upstream)}
    assert topological_order(ordered) == list(ordered)


@given(dags())
def test_levels_are_consistent(upstream: Graph) -> None:
    groups = levels(upstream)
    level = {task: n for n, group in enumerate(groups) for task in group}
    assert sorted(level) == sorted(upstream)
    assert sum(map(len, groups)) == len(upstream)
    assert all(groups)
    for task, deps in upstream.items():
        assert level[task] == (1 + max(level[u] for u in deps) if deps else 0)
    definition = list(upstream)
    for group in groups:
        assert group == sorted(group, key=definition.index)


@given(dags())
def test_downstream_inverts_upstream(upstream: Graph) -> None:
    down = downstream(upstream)
    assert list(down) == list(upstream)
    assert sorted((u, v) for u, vs in down.items() for v in vs) == sorted(edges(upstream))


@given(dags())
def test_shape_matches_levels(upstream: Graph) -> None:
    groups = levels(upstream)
    result = shape(upstream)
    assert result.tasks == len(upstream)
    assert result.edges == len(edges(upstream))
    assert result.depth == len(groups)
    assert result.width == max(map(len, groups), default=0)


@given(dags(), st.data())
def test_critical_path_is_the_longest_path(upstream: Graph, data: st.DataObject) -> None:
    durations = {task: data.draw(st.integers(0, 10)) for task in upstream}
    ranks = upward_rank(upstream, durations)
    path = critical_path(upstream, durations)
    down = downstream(upstream)

    @functools.cache
    def longest_from(task: str) -> int:
        return durations[task] + max((longest_from(d) for d in down[task]), default=0)

    assert ranks == {task: longest_from(task) for task in upstream}
    assert path.length == max(ranks.values(), default=0.0)
    assert path.length == sum(durations[task] for task in path.tasks)
    if upstream:
        assert not upstream[path.tasks[0]]
        assert not down[path.tasks[-1]]
    assert all(u in upstream[v] for u, v in itertools.pairwise(path.tasks))


@given(dags())
def test_find_cycle_is_none_on_a_dag(upstream: Graph) -> None:
    assert find_cycle(upstream) is None


@given(dags(), st.data())
def test_a_back_edge_makes_a_real_cycle(upstream: Graph, data: st.DataObject) -> None:
    if not upstream:
        return
    head = data.draw(st.sampled_from(list(upstream)))
    tail = data.draw(st.sampled_from(reachable(upstream, head)))
    cyclic = {task: list(deps) for task, deps in upstream.items()}
    cyclic[head].append(tail)  # tail is downstream of (or is) head: closes a cycle

    cycle = find_cycle(cyclic)
    assert cycle is not None
    assert len(cycle) >= 2
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1
    assert all(u in cyclic[v] for u, v in itertools.pairwise(cycle))
    definition = list(cyclic)
    assert cycle[0] == min(cycle, key=definition.index)
    with pytest.raises(CycleError) as caught:
        topological_order(cyclic)
    assert caught.value.cycle == cycle


@settings(max_examples=30, deadline=None)
@given(dags(max_tasks=20))
def test_svg_draws_every_task_and_edge(upstream: Graph) -> None:
    root = ET.fromstring(draw(upstream, "svg"))
    assert len(root.findall(f".//{SVG}rect")) == len(upstream)
    assert len(root.findall(f".//{SVG}path")) == len(edges(upstream))
    dot = draw(upstream, "dot")
    assert all(f'"{u}" -> "{v}";' in dot for u, v in edges(upstream))
