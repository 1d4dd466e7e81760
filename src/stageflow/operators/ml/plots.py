"""Evaluation pictures as PNG bytes, drawn with Pillow (the ``draw`` extra).

Three pictures, plain and legible at 640x480: a confusion matrix (counts and
row shares, shaded by share), ROC curves (one per class for more than two
classes, with the area under each) and residuals against predictions. Pillow
is already stageflow's drawing library (``graph.drawing``), so pictures need
no plotting stack.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

from stageflow.operators.ml._common import need

__all__ = ["confusion_matrix_png", "residuals_png", "roc_png"]

WIDTH, HEIGHT = 640, 480
_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
_INK = (33, 33, 33)
_GRID = (225, 225, 225)


def confusion_matrix_png(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str
) -> bytes:
    """Rows are true classes, columns predicted; each cell shows its count and row share."""
    image, draw, font, small = _canvas()
    n = len(labels)
    size = 340 if n <= 12 else 400
    cell = size / max(n, 1)
    left, top = (WIDTH - size) / 2 + 30, 60
    draw.text((WIDTH / 2, 24), title, fill=_INK, font=font, anchor="mm")
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            shade = int(255 - 190 * share)
            colour = (shade, shade + int(40 * share) if shade < 215 else shade, 255)
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell, y0 + cell], fill=colour, outline=(215, 215, 215))
            ink = (255, 255, 255) if share > 0.55 else _INK
            draw.text(
                (x0 + cell / 2, y0 + cell / 2 - 7), str(count), fill=ink, font=font, anchor="mm"
            )
            draw.text(
                (x0 + cell / 2, y0 + cell / 2 + 10),
                f"{share:.0%}",
                fill=ink,
                font=small,
                anchor="mm",
            )
    for k, label in enumerate(labels):
        text = _clip(str(label), 14)
        draw.text((left - 8, top + (k + 0.5) * cell), text, fill=_INK, font=small, anchor="rm")
        draw.text(
            (left + (k + 0.5) * cell, top + size + 14), text, fill=_INK, font=small, anchor="mm"
        )
    draw.text((left + size / 2, top + size + 40), "predicted", fill=_INK, font=font, anchor="mm")
    draw.text((left - 70, top - 18), "true", fill=_INK, font=font, anchor="mm")
    return _png(image)


def roc_png(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float], float]], title: str
) -> bytes:
    """ROC curves: (label, false positive rates, true positive rates, area) each."""
    image, draw, font, small = _canvas()
    to_px = _axes(
        draw,
        font,
        small,
        (0.0, 1.0),
        (0.0, 1.0),
        "false positive rate",
        "true positive rate",
        title,
    )
    draw.line([to_px(0, 0), to_px(1, 1)], fill=(170, 170, 170), width=1)
    for k, (label, fpr, tpr, area) in enumerate(curves[:10]):
        colour = _PALETTE[k % len(_PALETTE)]
        points = [to_px(x, y) for x, y in zip(fpr, tpr, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        y = 330 - 18 * k
        draw.line([(400, y), (420, y)], fill=colour, width=3)
        draw.text(
            (426, y), f"{_clip(label, 18)} (AUC {area:.3f})", fill=_INK, font=small, anchor="lm"
        )
    return _png(image)


def residuals_png(predicted: Sequence[float], residuals: Sequence[float], title: str) -> bytes:
    """Residuals (true - predicted) against predictions, with the zero line."""
    image, draw, font, small = _canvas()
    xs, ys = list(map(float, predicted)), list(map(float, residuals))
    if not xs:
        return _png(image)
    span = max(abs(min(ys)), abs(max(ys)), 1e-9) * 1.1
    xlo, xhi = min(xs), max(xs)
    if xhi - xlo < 1e-12:
        xlo, xhi = xlo - 1, xhi + 1
    to_px = _axes(draw, font, small, (xlo, xhi), (-span, span), "predicted", "residual", title)
    draw.line([to_px(xlo, 0), to_px(xhi, 0)], fill=(214, 39, 40), width=1)
    step = max(1, len(xs) // 3000)
    for x, y in list(zip(xs, ys, strict=True))[::step]:
        px, py = to_px(x, y)
        draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=_PALETTE[0])
    return _png(image)


# -- helpers --------------------------------------------------------------------------


def _canvas() -> tuple[Any, Any, Any, Any]:
    pil = need("PIL.Image", "evaluation pictures")
    draw_mod = need("PIL.ImageDraw", "evaluation pictures")
    fonts = need("PIL.ImageFont", "evaluation pictures")
    image = pil.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    try:
        font, small = fonts.load_default(size=15), fonts.load_default(size=12)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = small = fonts.load_default()
    return image, draw_mod.Draw(image), font, small


def _axes(
    draw: Any,
    font: Any,
    small: Any,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    xlabel: str,
    ylabel: str,
    title: str,
) -> Callable[[float, float], tuple[float, float]]:
    left, top, right, bottom = 80, 50, WIDTH - 30, HEIGHT - 70

    def to_px(x: float, y: float) -> tuple[float, float]:
        fx = (x - xlim[0]) / (xlim[1] - xlim[0])
        fy = (y - ylim[0]) / (ylim[1] - ylim[0])
        return left + fx * (right - left), bottom - fy * (bottom - top)

    draw.text((WIDTH / 2, 24), title, fill=_INK, font=font, anchor="mm")
    for k in range(6):
        fx = xlim[0] + (xlim[1] - xlim[0]) * k / 5
        fy = ylim[0] + (ylim[1] - ylim[0]) * k / 5
        px, _ = to_px(fx, ylim[0])
        _, py = to_px(xlim[0], fy)
        draw.line([(px, top), (px, bottom)], fill=_GRID)
        draw.line([(left, py), (right, py)], fill=_GRID)
        draw.text((px, bottom + 12), f"{fx:.3g}", fill=_INK, font=small, anchor="mm")
        draw.text((left - 8, py), f"{fy:.3g}", fill=_INK, font=small, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline=_INK)
    draw.text(((left + right) / 2, bottom + 40), xlabel, fill=_INK, font=font, anchor="mm")
    draw.text((left, top - 14), ylabel, fill=_INK, font=small, anchor="lm")
    return to_px


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
