"""Orders of a DAG: topological order, parallel levels, the reverse mapping, its shape.

Input everywhere is ``upstream``: task id -> ids of the tasks it depends on. The
mapping's insertion order is the definition order; it breaks every tie, so answers
are deterministic. Upstream ids that are not keys are ignored (see ``_adjacency``).

* :func:`topological_order` is Kahn's algorithm that always takes the
  earliest-defined ready task. So if the definition order is already topological,
  it comes back unchanged, and otherwise tasks move only as far as their
  dependencies force them. Cost O(E + V log V) for the ready heap.
* :func:`levels` groups tasks by longest distance from a source: level 0 has no
  upstream, and a task sits one level after its deepest upstream. Tasks in a level
  do not depend on each other, so they can run in parallel. Each level lists its
  tasks in definition order. O(V + E).

Both raise :class:`~stageflow.graph.cycles.CycleError` on a cycle; nothing here
recurses, so a 100,000-task chain is fine.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stageflow.graph._adjacency import Adjacency, adjacency
from stageflow.graph.cycles import cycle_error

__all__ = ["Shape", "downstream", "levels", "shape", "topological_order"]


@dataclass(frozen=True, slots=True)
class Shape:
    """Size of a DAG: ``depth`` levels, the widest holding ``width`` tasks."""

    tasks: int
    edges: int
    depth: int
    width: int


def topological_order(upstream: Mapping[str, Sequence[str]]) -> list[str]:
    """Every task after its upstream; ties go to the earliest-defined task.

    Raises ``CycleError`` if the graph has a cycle.
    """
    adj = adjacency(upstream)
    pending = _in_degrees(adj)
    # Built in index order, so already a valid heap.
    ready = [i for i, n in enumerate(pending) if n == 0]
    order: list[int] = []
    down, down_at = adj.down, adj.down_at
    while ready:
        task = heapq.heappop(ready)
        order.append(task)
        for nxt in down[down_at[task] : down_at[task + 1]]:
            pending[nxt] -= 1
            if pending[nxt] == 0:
                heapq.heappush(ready, nxt)
    if len(order) < len(adj.ids):
        raise cycle_error(adj)
    ids = adj.ids
    return [ids[i] for i in order]


def levels(upstream: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tasks grouped by level (what can run in parallel), each in definition order.

    Raises ``CycleError`` if the graph has a cycle.
    """
    adj = adjacency(upstream)
    level = level_indices(adj)
    groups: list[list[str]] = [[] for _ in range(max(level, default=-1) + 1)]
    for task, n in zip(adj.ids, level, strict=True):
        groups[n].append(task)
    return groups


def downstream(upstream: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The reverse mapping: every task id -> the tasks that depend on it.

    Every task is a key (an empty list for a sink); lists are in definition order.
    Works on cyclic graphs too.
    """
    adj = adjacency(upstream)
    ids, down, at = adj.ids, adj.down, adj.down_at
    return {task: [ids[j] for j in down[at[i] : at[i + 1]]] for i, task in enumerate(ids)}


def shape(upstream: Mapping[str, Sequence[str]]) -> Shape:
    """Tasks, distinct known edges, number of levels and size of the largest level.

    Raises ``CycleError`` if the graph has a cycle (it has no levels then).
    """
    adj = adjacency(upstream)
    level = level_indices(adj)
    sizes = [0] * (max(level, default=-1) + 1)
    for n in level:
        sizes[n] += 1
    return Shape(tasks=len(adj.ids), edges=adj.edges, depth=len(sizes), width=max(sizes, default=0))


def level_indices(adj: Adjacency) -> list[int]:
    """The level of each task, by number; raises ``CycleError`` on a cycle."""
    return _layered(adj)[0]


def flow_indices(adj: Adjacency) -> list[int]:
    """Task numbers level by level: a topological order, cheaper than the stable
    one when the caller only needs upstream before downstream.

    Raises ``CycleError`` on a cycle.
    """
    return _layered(adj)[1]


def _layered(adj: Adjacency) -> tuple[list[int], list[int]]:
    """Kahn's algorithm a whole frontier at a time: (level of each task, visit order)."""
    pending = _in_degrees(adj)
    level = [0] * len(pending)
    order = [i for i, n in enumerate(pending) if n == 0]
    down, down_at = adj.down, adj.down_at
    start, depth = 0, 0
    # A task becomes ready while its deepest upstream's frontier is processed, so it
    # lands in the next frontier: its level is 1 + its deepest upstream's.
    while start < len(order):
        end = len(order)
        depth += 1
        for k in range(start, end):
            task = order[k]
            for child in down[down_at[task] : down_at[task + 1]]:
                pending[child] -= 1
                if pending[child] == 0:
                    level[child] = depth
                    order.append(child)
        start = end
    if len(order) < len(pending):
        raise cycle_error(adj)
    return level, order


def _in_degrees(adj: Adjacency) -> list[int]:
    return [end - start for start, end in itertools.pairwise(adj.up_at)]
