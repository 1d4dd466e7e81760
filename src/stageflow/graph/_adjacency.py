"""Indexed adjacency: the one representation every algorithm in ``graph`` works on.

Callers hand us ``upstream: Mapping[str, Sequence[str]]`` (task id -> the ids it
depends on). Algorithms want integers, so each task is numbered by its position in
the mapping (definition order). That number is what every tie-break compares, which
is what makes every answer in this package deterministic.

Edges are stored flat (compressed rows): task ``i``'s upstream numbers are
``up[up_at[i]:up_at[i + 1]]``, and likewise for ``down``. A list per task would be
simpler, but 200,000 long-lived lists make the cyclic garbage collector run full
passes over them while they are built; flat lists of ints are never tracked, which
roughly halves the time on a 100,000-task graph.

Policy for odd input, decided once here rather than in every algorithm:

* an upstream id that is not a key is ignored (validation reports it elsewhere);
* a repeated upstream id counts once;
* a bare string given as the upstream sequence counts as one id, not as its
  characters (``{"b": "a"}`` means ``b`` depends on ``a``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Adjacency", "adjacency"]


@dataclass(frozen=True, slots=True)
class Adjacency:
    """Tasks numbered by definition order, with their edges in both directions.

    Each task's upstream keeps the order the caller gave; its downstream is in
    definition order. ``edges`` counts distinct known edges. ``down`` and
    ``down_at`` are empty when built with ``with_down=False``.
    """

    ids: list[str]
    up: list[int]
    up_at: list[int]
    down: list[int]
    down_at: list[int]

    @property
    def edges(self) -> int:
        return len(self.up)

    def upstream_of(self, task: int) -> list[int]:
        return self.up[self.up_at[task] : self.up_at[task + 1]]

    def downstream_of(self, task: int) -> list[int]:
        return self.down[self.down_at[task] : self.down_at[task + 1]]

    def upstream_lists(self) -> list[list[int]]:
        """One list per task, for code that is not on a hot path."""
        up, at = self.up, self.up_at
        return [up[at[i] : at[i + 1]] for i in range(len(self.ids))]


def adjacency(upstream: Mapping[str, Sequence[str]], *, with_down: bool = True) -> Adjacency:
    """Number the tasks and index their edges; O(V + E).

    ``with_down=False`` skips the downstream index, for callers that only walk
    upstream.
    """
    ids = list(upstream)
    n = len(ids)
    index = {task: i for i, task in enumerate(ids)}.get
    missing = itertools.repeat(-1)
    up: list[int] = []
    up_at = [0]
    # The hot path for 100,000-task graphs: C-level map/extend, and the filtering
    # and de-duplication only for the rare task that needs them.
    for raw in upstream.values():
        deps: Sequence[str] = (raw,) if isinstance(raw, str) else raw
        known = list(map(index, deps, missing))
        if -1 in known:
            known = [j for j in known if j >= 0]
        if len(known) > 1 and len(set(known)) < len(known):
            known = list(dict.fromkeys(known))
        up.extend(known)
        up_at.append(len(up))
    if not with_down:
        return Adjacency(ids=ids, up=up, up_at=up_at, down=[], down_at=[])

    out_degree = [0] * n
    for j in up:
        out_degree[j] += 1
    down_at = [0] * (n + 1)
    total = 0
    for j, degree in enumerate(out_degree):
        total += degree
        down_at[j + 1] = total
    down = [0] * total
    free = down_at[:-1]  # next free slot in each task's downstream row
    # Filling in task order leaves every row in definition order.
    for i in range(n):
        for j in up[up_at[i] : up_at[i + 1]]:
            down[free[j]] = i
            free[j] += 1
    return Adjacency(ids=ids, up=up, up_at=up_at, down=down, down_at=down_at)
