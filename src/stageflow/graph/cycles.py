"""Finding a dependency cycle, and the error that reports one.

A cycle is reported as a closed path in flow order: each task is upstream of the
next, and the first task is repeated at the end. If ``train`` depends on
``evaluate`` and ``evaluate`` depends on ``train``, the cycle is
``["train", "evaluate", "train"]``; a self-loop is ``["a", "a"]``. This is the
convention of :class:`graphlib.CycleError`.

Which cycle, when there are several: a depth-first search that starts from tasks in
definition order and follows each task's upstream ids in the order given; the first
back edge it meets closes the cycle. The cycle is then rotated to start at its
earliest-defined task, so the same input always gives the same answer.

The search is iterative (an explicit stack), so a 100,000-task chain does not hit
the recursion limit; it is O(V + E).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stageflow.graph._adjacency import Adjacency, adjacency

__all__ = ["CycleError", "find_cycle", "format_cycle"]

_WHITE, _GREY, _BLACK = 0, 1, 2


class CycleError(ValueError):
    """The graph is not a DAG; ``cycle`` is one cycle, closed, in flow order.

    A ``ValueError`` like :class:`graphlib.CycleError`; spec validation turns it
    into a ``StageflowError`` naming the pipeline.
    """

    def __init__(self, cycle: list[str]) -> None:
        super().__init__(f"cycle: {format_cycle(cycle)}")
        self.cycle = list(cycle)


def find_cycle(upstream: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as a closed path in flow order, or ``None`` for a DAG."""
    adj = adjacency(upstream, with_down=False)
    found = cycle_indices(adj)
    return None if found is None else [adj.ids[i] for i in found]


def format_cycle(cycle: Sequence[str]) -> str:
    """``"train -> evaluate -> train"`` for ``["train", "evaluate", "train"]``."""
    return " -> ".join(cycle)


def cycle_error(adj: Adjacency) -> CycleError:
    """The ``CycleError`` for a graph already known to be cyclic."""
    found = cycle_indices(adj)
    if found is None:
        # Callers only get here after Kahn's algorithm left tasks unvisited.
        raise AssertionError("cycle_error called on a DAG")
    return CycleError([adj.ids[i] for i in found])


def cycle_indices(adj: Adjacency) -> list[int] | None:
    """Task numbers of one cycle (closed, flow order, earliest-defined first)."""
    up, up_at = adj.up, adj.up_at
    n = len(adj.ids)
    colour = [_WHITE] * n
    # Where each grey task sits on ``path``, to slice the cycle out in O(length).
    depth = [0] * n
    for root in range(n):
        if colour[root] != _WHITE:
            continue
        # ``path`` is the chain of "depends on" from ``root``; ``cursor`` is, for
        # the task at the same height, the position in ``up`` of its next upstream.
        path = [root]
        cursor = [up_at[root]]
        colour[root] = _GREY
        while path:
            task = path[-1]
            k = cursor[-1]
            if k == up_at[task + 1]:
                colour[task] = _BLACK
                path.pop()
                cursor.pop()
                continue
            cursor[-1] = k + 1
            dep = up[k]
            if colour[dep] == _GREY:
                # path[depth[dep]:] runs dep -> ... -> task along "depends on",
                # and task depends on dep: reversed, that is the flow order.
                ring = path[depth[dep] :][::-1]
                start = ring.index(min(ring))
                ring = ring[start:] + ring[:start]
                return [*ring, ring[0]]
            if colour[dep] == _WHITE:
                colour[dep] = _GREY
                depth[dep] = len(path)
                path.append(dep)
                cursor.append(up_at[dep])
    return None
