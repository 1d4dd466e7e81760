"""Indexed adjacency: the one representation every algorithm in ``graph`` works on.

Callers hand us ``upstream: Mapping[str, Sequence[str]]`` (task id -> the ids it
depends on). Algorithms want integers, so each task is numbered by its position in
the mapping (definition order). That number is what every tie-break compares, which
is what makes every answer in this package deterministic.

Policy for odd input, decided once here rather than in every algorithm:

* an upstream id that is not a key is ignored (validation reports it elsewhere);
* a repeated upstream id counts once;
* a bare string given as the upstream sequence counts as one id, not as its
  characters (``{"b": "a"}`` means ``b`` depends on ``a``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Adjacency", "adjacency"]


@dataclass(frozen=True, slots=True)
class Adjacency:
    """Tasks numbered by definition order, with their edges in both directions.

    ``up[i]`` keeps the order the caller gave; ``down[i]`` is in definition order
    of the downstream tasks. ``edges`` counts distinct known edges.
    """

    ids: list[str]
    up: list[list[int]]
    down: list[list[int]]
    edges: int


def adjacency(upstream: Mapping[str, Sequence[str]], *, with_down: bool = True) -> Adjacency:
    """Number the tasks and index their edges; O(V + E).

    ``with_down=False`` leaves ``down`` empty (no list per task), for callers that only walk
    upstream (building it is a third of the cost).
    """
    ids = list(upstream)
    index = {task: i for i, task in enumerate(ids)}.get
    up: list[list[int]] = []
    down: list[list[int]] = [[] for _ in ids] if with_down else []
    # last[j] == i once edge j -> i is recorded: drops repeats without a set per task.
    last = [-1] * len(ids)
    edges = 0
    # One plain loop: this is the hot path for 100,000-task graphs.
    for i, raw in enumerate(upstream.values()):
        deps: Sequence[str] = (raw,) if isinstance(raw, str) else raw
        known: list[int] = []
        for dep in deps:
            j = index(dep)
            if j is None or last[j] == i:
                continue
            last[j] = i
            known.append(j)
            if with_down:
                down[j].append(i)
        edges += len(known)
        up.append(known)
    return Adjacency(ids=ids, up=up, down=down, edges=edges)
