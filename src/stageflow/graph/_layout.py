"""Layered (Sugiyama-style) layout, flowing left to right, for ``draw``'s SVG and PNG.

Steps, each simple and deterministic:

1. Layers: a task's column is its level (``order.levels``), so every edge points right.
2. Long edges: an edge spanning several columns gets a dummy node in each column it
   crosses, so it is routed between boxes instead of through them. If that would
   take more than ``_DUMMIES_PER_TASK`` dummies per task (a pathological fan), long
   edges are drawn straight instead, to keep the layout small and fast.
3. Order within columns: start from definition order, then barycenter sweeps
   (left to right by upstream positions, right to left by downstream positions),
   keeping the ordering with the fewest crossings between adjacent columns.
4. Coordinates: columns are as wide as their widest label; rows are stacked and each
   column is centred vertically. Edges leave a box's right side and enter the next
   box's left side, spread along the side in the order of their other ends.

The caller supplies ``measure`` (label -> width in pixels), so SVG can assume a
monospace font and PNG can ask Pillow. Output is plain data; rendering is in ``draw``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from stageflow.graph._adjacency import adjacency
from stageflow.graph.order import level_indices

__all__ = ["Box", "Layout", "Route", "layout"]

_PAD_X = 12.0  # label to box side
_MIN_BOX_WIDTH = 48.0
_COLUMN_GAP = 56.0
_ROW_GAP = 14.0
_DUMMY_SLOT = 10.0  # vertical room a routed edge takes in a column
_PORT_STEP = 6.0  # spacing of edge ends along a box side
_SWEEPS = 8
_DUMMIES_PER_TASK = 8


@dataclass(frozen=True, slots=True)
class Box:
    """A task's box; ``x``, ``y`` is the top-left corner."""

    task: str
    label: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Route:
    """An edge as points from the upstream box to the downstream one.

    Consecutive points are joined by a curve with horizontal tangents at both ends
    (a straight line when they share ``y``); the last point touches the target box.
    """

    source: str
    target: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Layout:
    """Boxes and routes, in a ``width`` x ``height`` area with its origin at 0, 0."""

    boxes: list[Box]
    routes: list[Route]
    width: float
    height: float


def layout(
    upstream: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    measure: Callable[[str], float],
    box_height: float,
) -> Layout:
    """Lay out the DAG; raises ``CycleError`` on a cycle."""
    adj = adjacency(upstream)
    level = level_indices(adj)
    tasks = len(adj.ids)
    depth = max(level, default=-1) + 1

    # Nodes 0..tasks-1 are tasks; later numbers are dummies on long edges.
    layer = list(level)
    ups: list[list[int]] = [[] for _ in range(tasks)]
    downs: list[list[int]] = [[] for _ in range(tasks)]
    upstream_lists = adj.upstream_lists()
    spans = sum(level[v] - level[u] - 1 for v, deps in enumerate(upstream_lists) for u in deps)
    use_dummies = spans <= _DUMMIES_PER_TASK * tasks + 200
    chains: list[list[int]] = []
    for v, deps in enumerate(upstream_lists):
        for u in deps:
            chain = [u]
            if use_dummies:
                for column in range(level[u] + 1, level[v]):
                    dummy = len(layer)
                    layer.append(column)
                    ups.append([chain[-1]])
                    downs.append([])
                    downs[chain[-1]].append(dummy)
                    chain.append(dummy)
            downs[chain[-1]].append(v)
            ups[v].append(chain[-1])
            chain.append(v)
            chains.append(chain)

    rows = _order_rows(layer, ups, downs, depth)

    label_of = [labels.get(task, task) for task in adj.ids]
    widths = [max(_MIN_BOX_WIDTH, measure(text) + 2 * _PAD_X) for text in label_of]
    column_width = [0.0] * depth
    for task in range(tasks):
        column_width[level[task]] = max(column_width[level[task]], widths[task])
    column_x = [0.0] * depth
    for column in range(1, depth):
        column_x[column] = column_x[column - 1] + column_width[column - 1] + _COLUMN_GAP

    y = [0.0] * len(layer)
    row_height = []
    for row in rows:
        cursor = 0.0
        for node in row:
            slot = box_height + _ROW_GAP if node < tasks else _DUMMY_SLOT
            y[node] = cursor + slot / 2
            cursor += slot
        row_height.append(cursor)
    height = max(row_height, default=0.0)
    for row, used in zip(rows, row_height, strict=True):
        for node in row:
            y[node] += (height - used) / 2

    boxes = [
        Box(
            task=adj.ids[task],
            label=label_of[task],
            x=column_x[level[task]] + (column_width[level[task]] - widths[task]) / 2,
            y=y[task] - box_height / 2,
            width=widths[task],
            height=box_height,
        )
        for task in range(tasks)
    ]
    out_y = _ports(chains, 0, 1, tasks, y, box_height)
    in_y = _ports(chains, -1, -2, tasks, y, box_height)
    routes = []
    for number, chain in enumerate(chains):
        source, target = boxes[chain[0]], boxes[chain[-1]]
        points = [(source.x + source.width, out_y[number])]
        for dummy in chain[1:-1]:
            column = layer[dummy]
            points.append((column_x[column], y[dummy]))
            points.append((column_x[column] + column_width[column], y[dummy]))
        points.append((target.x, in_y[number]))
        routes.append(Route(source=source.task, target=target.task, points=tuple(points)))
    width = column_x[-1] + column_width[-1] if depth else 0.0
    return Layout(boxes=boxes, routes=routes, width=width, height=height)


def _order_rows(
    layer: list[int], ups: list[list[int]], downs: list[list[int]], depth: int
) -> list[list[int]]:
    rows: list[list[int]] = [[] for _ in range(depth)]
    for node, column in enumerate(layer):
        rows[column].append(node)
    pos = [0.0] * len(layer)
    for row in rows:
        _number(row, pos)
    best = [list(row) for row in rows]
    fewest = _crossings(rows, downs, layer, pos)
    for sweep in range(_SWEEPS):
        if fewest == 0:
            break
        if sweep % 2 == 0:
            for column in range(1, depth):
                _reorder(rows[column], ups, pos)
        else:
            for column in range(depth - 2, -1, -1):
                _reorder(rows[column], downs, pos)
        crossings = _crossings(rows, downs, layer, pos)
        if crossings < fewest:
            fewest = crossings
            best = [list(row) for row in rows]
    return best


def _reorder(row: list[int], neighbours: list[list[int]], pos: list[float]) -> None:
    key: dict[int, float] = {}
    for node in row:
        near = neighbours[node]
        # A node with no neighbours on that side keeps its place.
        key[node] = sum(pos[n] for n in near) / len(near) if near else pos[node]
    row.sort(key=key.__getitem__)
    _number(row, pos)


def _number(row: list[int], pos: list[float]) -> None:
    for index, node in enumerate(row):
        pos[node] = float(index)


def _crossings(
    rows: list[list[int]], downs: list[list[int]], layer: list[int], pos: list[float]
) -> int:
    """Edge crossings between adjacent columns (inversions, counted with a Fenwick tree)."""
    total = 0
    for column in range(len(rows) - 1):
        pairs = sorted(
            (int(pos[a]), int(pos[b]))
            for a in rows[column]
            for b in downs[a]
            if layer[b] == column + 1
        )
        tree = [0] * (len(rows[column + 1]) + 1)
        for inserted, (_, b) in enumerate(pairs):
            # Edges already inserted start no lower; those ending below ``b`` cross.
            i, at_most = b + 1, 0
            while i > 0:
                at_most += tree[i]
                i -= i & -i
            total += inserted - at_most
            i = b + 1
            while i < len(tree):
                tree[i] += 1
                i += i & -i
    return total


def _ports(
    chains: list[list[int]], end: int, near: int, tasks: int, y: list[float], box_height: float
) -> list[float]:
    """The y where each chain meets the box at ``chain[end]``, spread by ``chain[near]``'s y."""
    at: list[list[int]] = [[] for _ in range(tasks)]
    for number, chain in enumerate(chains):
        at[chain[end]].append(number)
    port = [0.0] * len(chains)
    for task, numbers in enumerate(at):
        if not numbers:
            continue
        numbers.sort(key=lambda number: y[chains[number][near]])
        step = min(_PORT_STEP, 0.6 * box_height / max(len(numbers) - 1, 1))
        middle = (len(numbers) - 1) / 2
        for k, number in enumerate(numbers):
            port[number] = y[task] + (k - middle) * step
    return port
