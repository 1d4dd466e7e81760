"""A run's attempts on a timeline (``stageflow runs gantt``): SVG text or PNG bytes.

One bar per attempt: y the task (in the run's task order, then any other; a
mapped task's elements by index), x the seconds from the run's start, the colour
its final state (the DAG drawing's colours); the time it waited in the queue is a
lighter segment before it. At most 500 rows are drawn. The shapes are laid out
once and written by one small writer per format. Nothing here reads a store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from stageflow.runtime.result import index_order

if TYPE_CHECKING:
    from stageflow.runtime.store.base import AttemptRecord, RunRecord

__all__ = ["gantt"]

_ROW = 22.0
_BAR = 14.0
_MARGIN = 16.0
_CHAR = 7.2  # monospace advance at 12 px
_PLOT_WIDTH = 760.0
_MAX_ROWS = 500
_INK = "#212529"
_GRID = "#dee2e6"
_BORDER = "#343a40"


@dataclass(frozen=True, slots=True)
class _Shape:
    kind: Literal["rect", "text", "line"]
    x: float
    y: float
    w: float = 0.0  # rect: width; line: x2
    h: float = 0.0  # rect: height; line: y2
    fill: str = _INK
    text: str = ""
    anchor: Literal["start", "middle", "end"] = "start"
    tip: str = ""
    outline: bool = False


def gantt(
    run: RunRecord,
    task_ids: Sequence[str],
    attempts: Sequence[AttemptRecord],
    fmt: Literal["svg", "png"],
) -> str | bytes:
    """One bar per attempt: y the task (in ``task_ids`` order, then any other; a mapped
    task's elements by index), x the seconds from the run's start, the colour its
    final state (the DAG drawing's colours); the queued wait is a lighter segment
    before the bar. An attempt still running is drawn up to the latest time
    recorded. SVG is text; PNG needs Pillow (``MissingExtra`` without it)."""
    shapes, width, height = _gantt_shapes(run, task_ids, attempts)
    if fmt == "svg":
        return _gantt_svg(shapes, width, height, run)
    return _gantt_png(shapes, width, height)


def _gantt_shapes(
    run: RunRecord, task_ids: Sequence[str], attempts: Sequence[AttemptRecord]
) -> tuple[list[_Shape], float, float]:
    from stageflow.graph.drawing import STATE_COLOURS, UNKNOWN_STATE_COLOUR

    drawn = [a for a in attempts if a.started_at is not None or a.queued_at is not None]
    with_bars = {a.task_id for a in drawn}
    listed = [t for t in task_ids if t in with_bars]
    rows = index_order(dict.fromkeys([*listed, *(a.task_id for a in drawn)]))
    hidden = max(len(rows) - _MAX_ROWS, 0)
    rows = rows[:_MAX_ROWS]
    index = {t: i for i, t in enumerate(rows)}
    times = [t for a in drawn for t in (a.queued_at, a.started_at, a.ended_at) if t is not None] + [
        t for t in (run.started_at, run.ended_at) if t is not None
    ]
    zero = run.started_at if run.started_at is not None else min(times, default=0.0)
    zero = min([zero, *times])
    end = max(times, default=zero)
    span = max(end - zero, 1e-3)
    step = _tick_step(span)
    scale = _PLOT_WIDTH / span
    label_w = max([len(t) for t in rows] + [4]) * _CHAR + 12
    left = _MARGIN + label_w
    top = _MARGIN + 30.0
    plot_h = max(len(rows), 1) * _ROW
    shapes: list[_Shape] = []
    title = f"run {run.run_id} of pipeline '{run.pipeline}': {run.state}"
    shapes.append(_Shape("text", _MARGIN, _MARGIN + 14, text=title))
    for k in range(math.floor(span / step + 1e-9) + 1):
        tick = round(k * step, 9)
        x = left + tick * scale
        shapes.append(_Shape("line", x, top, x, top + plot_h, fill=_GRID))
        shapes.append(_Shape("text", x, top + plot_h + 16, text=f"{tick:g}s", anchor="middle"))
    for i, tid in enumerate(rows):
        y = top + i * _ROW + _ROW / 2
        shapes.append(_Shape("text", left - 8, y + 4, text=tid, anchor="end"))
    states: list[str] = []
    for a in drawn:
        if a.task_id not in index:
            continue
        colour = STATE_COLOURS.get(a.state, UNKNOWN_STATE_COLOUR)
        if a.state not in states:
            states.append(a.state)
        y = top + index[a.task_id] * _ROW + (_ROW - _BAR) / 2
        start = a.started_at if a.started_at is not None else (a.ended_at or end)
        stop = a.ended_at if a.ended_at is not None else end
        tip = f"{a.task_id} attempt {a.attempt}: {a.state}"
        if a.queued_at is not None and start > a.queued_at:
            shapes.append(
                _Shape(
                    "rect",
                    left + (a.queued_at - zero) * scale,
                    y,
                    (start - a.queued_at) * scale,
                    _BAR,
                    fill=_lighter(colour),
                    tip=f"{tip}, queued {start - a.queued_at:.2f}s",
                )
            )
        if a.started_at is not None:
            shapes.append(
                _Shape(
                    "rect",
                    left + (start - zero) * scale,
                    y,
                    max((stop - start) * scale, 1.0),
                    _BAR,
                    fill=colour,
                    tip=f"{tip}, ran {max(stop - start, 0.0):.2f}s",
                    outline=True,
                )
            )
    legend_y = top + plot_h + 40
    x = left
    ordered = [s for s in STATE_COLOURS if s in states] + [
        s for s in states if s not in STATE_COLOURS
    ]
    for state in ordered:
        colour = STATE_COLOURS.get(state, UNKNOWN_STATE_COLOUR)
        shapes.append(_Shape("rect", x, legend_y - 10, 12, 12, fill=colour, outline=True))
        shapes.append(_Shape("text", x + 18, legend_y, text=state))
        x += 18 + len(state) * _CHAR + 16
    shapes.append(_Shape("rect", x, legend_y - 10, 12, 12, fill=_lighter("#adb5bd")))
    shapes.append(_Shape("text", x + 18, legend_y, text="lighter: waiting in the queue"))
    note = "seconds from the run's start"
    if hidden:
        note += f"; {hidden} more tasks not drawn"
    shapes.append(_Shape("text", left, legend_y + 22, text=note))
    width = left + _PLOT_WIDTH + _MARGIN + 24
    width = max(width, _MARGIN * 2 + len(title) * _CHAR, x + 200)
    return shapes, width, legend_y + 22 + _MARGIN


def _tick_step(span: float) -> float:
    """A 1, 2 or 5 x 10^k step giving at most 10 ticks over ``span``."""
    raw = span / 10
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return float(factor * power)
    return float(10 * power)


def _lighter(colour: str) -> str:
    """``colour`` mixed 60% with white: the queued segment's shade."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (255 - c) * 0.6):02x}" for c in (r, g, b))


def _gantt_svg(shapes: Sequence[_Shape], width: float, height: float, run: RunRecord) -> str:
    from html import escape

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="ui-monospace, Menlo, Consolas, '
        '\'DejaVu Sans Mono\', monospace" font-size="12">',
        f"<title>{escape(f'run {run.run_id}')}</title>",
        f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
    ]
    for s in shapes:
        if s.kind == "line":
            out.append(
                f'<line x1="{s.x:.1f}" y1="{s.y:.1f}" x2="{s.w:.1f}" y2="{s.h:.1f}" '
                f'stroke="{s.fill}"/>'
            )
        elif s.kind == "rect":
            stroke = f' stroke="{_BORDER}" stroke-width="0.8"' if s.outline else ""
            tip = f"<title>{escape(s.tip)}</title>" if s.tip else ""
            out.append(
                f'<rect x="{s.x:.1f}" y="{s.y:.1f}" width="{s.w:.1f}" height="{s.h:.1f}" '
                f'fill="{s.fill}"{stroke}>{tip}</rect>'
            )
        else:
            out.append(
                f'<text x="{s.x:.1f}" y="{s.y:.1f}" text-anchor="{s.anchor}" '
                f'fill="{s.fill}">{escape(s.text)}</text>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _gantt_png(shapes: Sequence[_Shape], width: float, height: float) -> bytes:
    import io

    from stageflow.errors import MissingExtra

    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:
        raise MissingExtra("drawing PNG needs Pillow: pip install 'stageflow[draw]'") from exc
    image = Image.new("RGB", (math.ceil(width), math.ceil(height)), "#ffffff")
    pen = ImageDraw.Draw(image)
    font: Any
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow before 10.1: only the fixed-size bitmap font
        font = ImageFont.load_default()
    for s in shapes:
        if s.kind == "line":
            pen.line((s.x, s.y, s.w, s.h), fill=s.fill)
        elif s.kind == "rect":
            pen.rectangle(
                (s.x, s.y, s.x + max(s.w, 1.0), s.y + s.h),
                fill=s.fill,
                outline=_BORDER if s.outline else None,
            )
        else:
            length = font.getlength(s.text)
            x = s.x - (length if s.anchor == "end" else length / 2 if s.anchor == "middle" else 0)
            pen.text((x, s.y - 11), s.text, fill=s.fill, font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
