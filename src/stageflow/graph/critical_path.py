"""Critical path: the chain of tasks that bounds how fast a run can finish.

With unlimited workers a run takes as long as its longest path, summing task
durations. :func:`upward_rank` gives, for every task, the length of the longest
path from that task's start to the end of the DAG (its own duration included);
the scheduler can use it as a priority (the HEFT "upward rank"): tasks with more
work behind them go first. :func:`critical_path` walks the largest ranks from a
source to a sink.

Durations come from the caller (estimates, or history); a task without one counts
``default``. They must be finite and non-negative, else ``ValueError``: a negative
duration would let a longest path start mid-graph. Ties go to the
earliest-defined task. Both are O(V + E), iterative, and raise ``CycleError`` on a
cycle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stageflow.graph._adjacency import Adjacency, adjacency
from stageflow.graph.order import flow_indices

__all__ = ["CriticalPath", "critical_path", "upward_rank"]


@dataclass(frozen=True, slots=True)
class CriticalPath:
    """The longest path, in execution order, and its total duration."""

    tasks: list[str]
    length: float


def upward_rank(
    upstream: Mapping[str, Sequence[str]],
    durations: Mapping[str, float],
    default: float = 1.0,
) -> dict[str, float]:
    """Each task's own duration plus the longest path after it, in definition order.

    Raises ``ValueError`` for a negative or non-finite duration (or default) and
    ``CycleError`` on a cycle.
    """
    adj = adjacency(upstream)
    rank = _ranks(adj, durations, default)
    return dict(zip(adj.ids, rank, strict=True))


def critical_path(
    upstream: Mapping[str, Sequence[str]],
    durations: Mapping[str, float],
    default: float = 1.0,
) -> CriticalPath:
    """The longest-duration path from a source to a sink; ``([], 0.0)`` when empty.

    ``length`` equals the largest upward rank. Raises like :func:`upward_rank`.
    """
    adj = adjacency(upstream)
    rank = _ranks(adj, durations, default)
    best = -1
    up_at = adj.up_at
    for task in range(len(adj.ids)):
        # Strictly greater, so the earliest-defined source wins a tie.
        if up_at[task] == up_at[task + 1] and (best < 0 or rank[task] > rank[best]):
            best = task
    if best < 0:
        return CriticalPath(tasks=[], length=0.0)
    path = [best]
    task = best
    while children := adj.downstream_of(task):
        # Rows are in definition order: the first maximum wins a tie.
        nxt = children[0]
        for child in children:
            if rank[child] > rank[nxt]:
                nxt = child
        path.append(nxt)
        task = nxt
    ids = adj.ids
    return CriticalPath(tasks=[ids[i] for i in path], length=rank[best])


def _ranks(adj: Adjacency, durations: Mapping[str, float], default: float) -> list[float]:
    _check_duration("default", default)
    get = durations.get
    cost = [float(get(name, default)) for name in adj.ids]
    # One C-level scan; find the culprit only when there is one.
    if not all(map(math.isfinite, cost)) or min(cost, default=0.0) < 0:
        for name, value in zip(adj.ids, cost, strict=True):
            _check_duration(name, value)
    rank = [0.0] * len(cost)
    down, down_at = adj.down, adj.down_at
    for task in reversed(flow_indices(adj)):
        longest = 0.0
        for child in down[down_at[task] : down_at[task + 1]]:
            if rank[child] > longest:
                longest = rank[child]
        rank[task] = cost[task] + longest
    return rank


def _check_duration(task: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"task '{task}': duration {value!r} must be finite and >= 0")
