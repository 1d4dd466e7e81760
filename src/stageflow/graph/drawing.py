"""Drawing a pipeline's DAG as text, Graphviz DOT, Mermaid, SVG or PNG.

``draw`` returns the drawing (``bytes`` for PNG, ``str`` otherwise); it writes no
file. ``labels`` maps task id -> displayed label (default: the id); ``states`` maps
task id -> a task state from DESIGN.md, shown as a fill colour (see
``STATE_COLOURS``; an unknown state is grey) and, in SVG and PNG, a legend. A task
missing from ``states`` is drawn white, with no state.

* ``text``: level by level (what can run in parallel), each task with its state
  and ``<- upstream``.
* ``dot`` and ``mermaid``: source for Graphviz / Mermaid, flowing left to right;
  ids and labels are quoted and escaped, Mermaid ids are rewritten to safe names.
* ``svg`` and ``png``: the layered layout of ``_layout`` (left to right, boxes sized
  to their labels, arrows from upstream to downstream). SVG assumes a monospace
  font for box widths; PNG measures with Pillow's default font, imported only
  here (``MissingExtra`` when Pillow is absent).

A cyclic graph cannot be drawn: every format raises ``CycleError``.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from html import escape
from typing import Literal, overload

from stageflow.errors import MissingExtra, UsageError
from stageflow.graph._adjacency import adjacency
from stageflow.graph._layout import Layout, layout
from stageflow.graph.order import level_indices

__all__ = ["FORMATS", "STATE_COLOURS", "UNKNOWN_STATE_COLOUR", "DrawFormat", "draw"]

DrawFormat = Literal["text", "dot", "mermaid", "svg", "png"]
FORMATS: tuple[DrawFormat, ...] = ("text", "dot", "mermaid", "svg", "png")

# Fill colour per task state (DESIGN.md's states, in its order).
STATE_COLOURS: Mapping[str, str] = {
    "pending": "#f1f3f5",
    "queued": "#d0ebff",
    "running": "#74c0fc",
    "up_for_retry": "#ffe066",
    "success": "#8ce99a",
    "failed": "#ff8787",
    "skipped": "#eebefa",
    "upstream_failed": "#ffc078",
    "cancelled": "#e6dcc8",
}
# A state DESIGN.md does not know.
UNKNOWN_STATE_COLOUR = "#bdbdbd"
_NO_STATE_COLOUR = "#ffffff"
_BORDER = "#343a40"
_INK = "#212529"
_EDGE = "#6c757d"

_MARGIN = 16
_FONT_SIZE = 12
_TITLE_SIZE = 15
_SVG_CHAR_WIDTH = 0.6 * _FONT_SIZE  # monospace advance, about 0.6 em
_SVG_BOX_HEIGHT = 28.0
_BAND = 30  # height of the title band and of the legend band
_SWATCH = 6  # legend swatch radius
_LEGEND_GAP = 7 * _SWATCH  # swatch, space, then room before the next entry
_ARROW = 9  # arrowhead length
_CURVE_STEPS = 16  # line segments per curve in PNG


@overload
def draw(
    upstream: Mapping[str, Sequence[str]],
    fmt: Literal["png"],
    *,
    labels: Mapping[str, str] | None = None,
    states: Mapping[str, str] | None = None,
    title: str | None = None,
) -> bytes: ...
@overload
def draw(
    upstream: Mapping[str, Sequence[str]],
    fmt: Literal["text", "dot", "mermaid", "svg"],
    *,
    labels: Mapping[str, str] | None = None,
    states: Mapping[str, str] | None = None,
    title: str | None = None,
) -> str: ...
@overload
def draw(
    upstream: Mapping[str, Sequence[str]],
    fmt: DrawFormat,
    *,
    labels: Mapping[str, str] | None = None,
    states: Mapping[str, str] | None = None,
    title: str | None = None,
) -> str | bytes: ...
def draw(
    upstream: Mapping[str, Sequence[str]],
    fmt: DrawFormat,
    *,
    labels: Mapping[str, str] | None = None,
    states: Mapping[str, str] | None = None,
    title: str | None = None,
) -> str | bytes:
    """Draw the DAG in ``fmt`` (one of ``FORMATS``).

    Raises ``UsageError`` for an unknown format, ``CycleError`` for a cyclic graph
    and ``MissingExtra`` for PNG without Pillow.
    """
    labels = labels or {}
    states = states or {}
    if fmt == "text":
        return _text(upstream, labels, states, title)
    if fmt == "dot":
        return _dot(upstream, labels, states, title)
    if fmt == "mermaid":
        return _mermaid(upstream, labels, states, title)
    if fmt == "svg":
        return _svg(upstream, labels, states, title)
    if fmt == "png":
        return _png(upstream, labels, states, title)
    raise UsageError(
        f"unknown drawing format {fmt!r}; use one of: {', '.join(FORMATS)}", field="format"
    )


def _text(
    upstream: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    states: Mapping[str, str],
    title: str | None,
) -> str:
    adj = adjacency(upstream)
    level = level_indices(adj)
    names = [_one_line(labels.get(task, task)) for task in adj.ids]
    groups: list[list[int]] = [[] for _ in range(max(level, default=-1) + 1)]
    for task, n in enumerate(level):
        groups[n].append(task)
    lines = [_one_line(title)] if title else []
    if not groups:
        lines.append("(no tasks)")
    for n, group in enumerate(groups):
        lines.append(f"level {n}: {', '.join(names[t] for t in group)}")
        for task in group:
            line = f"  {names[task]}"
            state = states.get(adj.ids[task])
            if state is not None:
                line += f" [{state}]"
            if deps := adj.upstream_of(task):
                line += f" <- {', '.join(names[u] for u in deps)}"
            lines.append(line)
    return "\n".join(lines) + "\n"


def _dot(
    upstream: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    states: Mapping[str, str],
    title: str | None,
) -> str:
    adj = adjacency(upstream)
    level_indices(adj)  # a cycle raises here, as for every other format
    lines = [f"digraph {_dot_quote(title)} {{" if title else "digraph {"]
    lines.append("  graph [rankdir=LR];")
    if title:
        lines.append(f"  graph [label={_dot_quote(title)}, labelloc=t];")
    lines.append(
        '  node [shape=box, style="rounded,filled", fontname="monospace", '
        f'fillcolor="{_NO_STATE_COLOUR}", color="{_BORDER}"];'
    )
    lines.append(f'  edge [color="{_EDGE}"];')
    for task in adj.ids:
        label = labels.get(task, task)
        attrs = []
        state = states.get(task)
        if state is not None:
            label = f"{label}\n[{state}]"
            attrs.append(f'fillcolor="{_fill(state)}"')
        lines.append(f"  {_dot_quote(task)} [{', '.join([f'label={_dot_quote(label)}', *attrs])}];")
    ids = adj.ids
    for v, deps in enumerate(adj.upstream_lists()):
        for u in deps:
            lines.append(f"  {_dot_quote(ids[u])} -> {_dot_quote(ids[v])};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid(
    upstream: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    states: Mapping[str, str],
    title: str | None,
) -> str:
    adj = adjacency(upstream)
    level_indices(adj)
    lines = ["---", f"title: {json.dumps(_one_line(title))}", "---"] if title else []
    lines.append("flowchart LR")
    names = _mermaid_ids(adj.ids)
    classes: dict[str, list[str]] = {}
    for task, name in zip(adj.ids, names, strict=True):
        label = labels.get(task, task)
        state = states.get(task)
        if state is not None:
            label = f"{label} [{state}]"
            state_class = state if state in STATE_COLOURS else "unknown"
            classes.setdefault(state_class, []).append(name)
        lines.append(f'  {name}["{_mermaid_text(label)}"]')
    for v, deps in enumerate(adj.upstream_lists()):
        for u in deps:
            lines.append(f"  {names[u]} --> {names[v]}")
    for state_class, members in classes.items():
        colour = STATE_COLOURS.get(state_class, UNKNOWN_STATE_COLOUR)
        lines.append(f"  classDef state_{state_class} fill:{colour},stroke:{_BORDER},color:{_INK}")
        lines.append(f"  class {','.join(members)} state_{state_class}")
    return "\n".join(lines) + "\n"


def _svg(
    upstream: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    states: Mapping[str, str],
    title: str | None,
) -> str:
    plain = {task: _one_line(text) for task, text in labels.items()}
    graph = layout(upstream, plain, _svg_width, _SVG_BOX_HEIGHT)
    legend = _legend(graph, states)
    title = _one_line(title) if title else None
    title_width = _svg_width(title) * _TITLE_SIZE / _FONT_SIZE if title else 0.0
    legend_width = sum(_svg_width(state) + _LEGEND_GAP for state, _ in legend)
    top = _MARGIN + (_BAND if title else 0)
    width = max(graph.width, title_width, legend_width) + 2 * _MARGIN
    height = top + graph.height + (_BAND if legend else 0) + _MARGIN

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="ui-monospace, Menlo, Consolas, '
        f'\'DejaVu Sans Mono\', monospace" font-size="{_FONT_SIZE}" '
        f'style="background-color: #ffffff">',
    ]
    if title:
        out.append(f"<title>{_xml(title)}</title>")
    out.append(
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        f'markerWidth="{_ARROW}" markerHeight="{_ARROW}" markerUnits="userSpaceOnUse" '
        f'orient="auto"><polygon points="0,1 10,5 0,9" fill="{_EDGE}"/></marker></defs>'
    )
    if title:
        out.append(
            f'<text class="title" x="{_MARGIN}" y="{_MARGIN + _TITLE_SIZE}" '
            f'font-size="{_TITLE_SIZE}" font-weight="bold" fill="{_INK}">{_xml(title)}</text>'
        )
    out.append(f'<g transform="translate({_MARGIN},{top})">')
    out.append(f'<g class="edges" fill="none" stroke="{_EDGE}" stroke-width="1.2">')
    for route in graph.routes:
        out.append(
            f'<path class="edge" data-source="{_xml(route.source)}" '
            f'data-target="{_xml(route.target)}" d="{_svg_path(route.points)}" '
            'marker-end="url(#arrow)"/>'
        )
    out.append("</g>")
    out.append('<g class="tasks">')
    for box in graph.boxes:
        state = states.get(box.task)
        tip = box.task if state is None else f"{box.task} [{state}]"
        out.append(
            f'<g class="task" data-task="{_xml(box.task)}"><title>{_xml(tip)}</title>'
            f'<rect class="task" x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
            f'height="{box.height:.1f}" rx="6" ry="6" fill="{_fill(state)}" '
            f'stroke="{_BORDER}"/>'
            f'<text x="{box.x + box.width / 2:.1f}" y="{box.y + box.height / 2 + 4:.1f}" '
            f'text-anchor="middle" fill="{_INK}">{_xml(box.label)}</text></g>'
        )
    out.append("</g></g>")
    if legend:
        out.append(f'<g class="legend" transform="translate({_MARGIN},{top + graph.height})">')
        x = 0.0
        for state, colour in legend:
            out.append(
                f'<circle cx="{x + _SWATCH:.1f}" cy="{_BAND / 2}" r="{_SWATCH}" '
                f'fill="{colour}" stroke="{_BORDER}"/>'
                f'<text x="{x + 3 * _SWATCH:.1f}" y="{_BAND / 2 + 4}" fill="{_INK}">'
                f"{_xml(state)}</text>"
            )
            x += _svg_width(state) + _LEGEND_GAP
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _png(
    upstream: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    states: Mapping[str, str],
    title: str | None,
) -> bytes:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:
        raise MissingExtra("drawing PNG needs Pillow: pip install 'stageflow[draw]'") from exc

    try:
        font = ImageFont.load_default(size=_FONT_SIZE + 1)
        title_font = ImageFont.load_default(size=_TITLE_SIZE + 1)
    except TypeError:
        # Pillow before 10.1 has only the fixed-size bitmap font.
        font = title_font = ImageFont.load_default()
    _, top_edge, _, bottom = font.getbbox("Ag")
    box_height = float(max(28, bottom - top_edge + 14))
    plain = {task: _one_line(text) for task, text in labels.items()}
    graph = layout(upstream, plain, font.getlength, box_height)
    legend = _legend(graph, states)
    title = _one_line(title) if title else None
    title_width = title_font.getlength(title) if title else 0.0
    legend_width = sum(font.getlength(state) + _LEGEND_GAP for state, _ in legend)
    top = _MARGIN + (_BAND if title else 0)
    width = round(max(graph.width, title_width, legend_width) + 2 * _MARGIN)
    height = round(top + graph.height + (_BAND if legend else 0) + _MARGIN)

    image = Image.new("RGB", (width, height), "#ffffff")
    pen = ImageDraw.Draw(image)

    def write(
        x: float,
        y: float,
        text: str,
        face: ImageFont.FreeTypeFont | ImageFont.ImageFont = font,
        centre: bool = True,
    ) -> None:
        # Place by the ink's bounding box: the bitmap fallback font has no anchors.
        x0, _, x1, _ = pen.textbbox((0, 0), text, font=face)
        _, top_ink, _, bottom_ink = pen.textbbox((0, 0), "Ag", font=face)
        dx = (x0 + x1) / 2 if centre else x0
        pen.text((x - dx, y - (top_ink + bottom_ink) / 2), text, fill=_INK, font=face)

    if title:
        write(_MARGIN, _MARGIN + _BAND / 2 - 4, title, face=title_font, centre=False)
    for route in graph.routes:
        points = [(x + _MARGIN, y + top) for x, y in _curve_points(route.points)]
        pen.line(points, fill=_EDGE, width=1)
        tip_x, tip_y = points[-1]
        pen.polygon(
            [(tip_x, tip_y), (tip_x - _ARROW, tip_y - 4), (tip_x - _ARROW, tip_y + 4)],
            fill=_EDGE,
        )
    for box in graph.boxes:
        x0, y0 = box.x + _MARGIN, box.y + top
        pen.rounded_rectangle(
            (x0, y0, x0 + box.width, y0 + box.height),
            radius=6,
            fill=_fill(states.get(box.task)),
            outline=_BORDER,
        )
        write(x0 + box.width / 2, y0 + box.height / 2, box.label)
    if legend:
        x, y = float(_MARGIN), top + graph.height + _BAND / 2
        for state, colour in legend:
            pen.ellipse(
                (x, y - _SWATCH, x + 2 * _SWATCH, y + _SWATCH), fill=colour, outline=_BORDER
            )
            write(x + 3 * _SWATCH, y, state, centre=False)
            x += font.getlength(state) + _LEGEND_GAP
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _fill(state: str | None) -> str:
    if state is None:
        return _NO_STATE_COLOUR
    return STATE_COLOURS.get(state, UNKNOWN_STATE_COLOUR)


def _legend(graph: Layout, states: Mapping[str, str]) -> list[tuple[str, str]]:
    """(state, colour) for the states drawn: DESIGN.md's order, then others as met."""
    present = dict.fromkeys(
        state for state in (states.get(box.task) for box in graph.boxes) if state is not None
    )
    known = [state for state in STATE_COLOURS if state in present]
    other = [state for state in present if state not in STATE_COLOURS]
    return [(state, _fill(state)) for state in [*known, *other]]


def _svg_width(text: str) -> float:
    # East Asian wide characters take two monospace cells.
    cells = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return cells * _SVG_CHAR_WIDTH


def _svg_path(points: Sequence[tuple[float, float]]) -> str:
    (x, y), *rest = points
    parts = [f"M{x:.1f},{y:.1f}"]
    for nx, ny in rest:
        if ny == y:
            parts.append(f"L{nx:.1f},{ny:.1f}")
        else:
            mid = (x + nx) / 2
            parts.append(f"C{mid:.1f},{y:.1f} {mid:.1f},{ny:.1f} {nx:.1f},{ny:.1f}")
        x, y = nx, ny
    return " ".join(parts)


def _curve_points(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The SVG path's curves, flattened into line segments for Pillow."""
    out = [points[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if y0 == y1:
            out.append((x1, y1))
            continue
        mid = (x0 + x1) / 2
        for step in range(1, _CURVE_STEPS + 1):
            t = step / _CURVE_STEPS
            s = 1 - t
            # Cubic Bezier with control points (mid, y0) and (mid, y1).
            bx = s**3 * x0 + 3 * s * t * mid + t**3 * x1
            by = (s**3 + 3 * s * s * t) * y0 + (3 * s * t * t + t**3) * y1
            out.append((bx, by))
    return out


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    """Escaped for XML text and attributes; characters XML forbids become U+FFFD."""
    return escape(_XML_INVALID.sub("\ufffd", text), quote=True)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").splitlines())


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def _mermaid_ids(ids: Sequence[str]) -> list[str]:
    """Safe, unique Mermaid node ids: ``t_`` + the id with non-word characters as ``_``.

    The prefix keeps clear of keywords (``end``) and of ids that Mermaid would read
    as edge syntax (``o``/``x`` after ``--``).
    """
    used: set[str] = set()
    names = []
    for task in ids:
        base = "t_" + re.sub(r"\W", "_", task, flags=re.ASCII)
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        names.append(name)
    return names


def _mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: entity codes for the characters it parses."""
    text = _one_line(text).replace("#", "#35;")
    for char, code in (('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("&", "#amp;")):
        text = text.replace(char, code)
    return text
