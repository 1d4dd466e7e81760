"""Evaluation pictures as PNG bytes, drawn by scikit-learn's display classes on matplotlib.

Three pictures at 640x480, from the ``ml`` extra:

* the confusion matrix (``ConfusionMatrixDisplay``): true classes down the
  y axis, predicted ones along the x axis, each by its name, counts in the
  cells;
* ROC curves (``RocCurveDisplay``): the positive class's for two classes, one
  per class (one-vs-rest) for more, each with its AUC, the chance line, and a
  small margin around the unit square so a perfect curve is not hidden under
  the frame;
* residuals against predictions (``PredictionErrorDisplay``), with the zero line.

Policy: matplotlib is imported on first use, and a figure is drawn on its own
Agg canvas (``Figure`` + ``FigureCanvasAgg``) rather than through ``pyplot``,
so no global backend is switched in the caller's process. State: one lock,
held while a picture is drawn: matplotlib is not thread-safe, and evaluations
run side by side in one process.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from typing import Any

from stageflow.operators.ml._common import need

__all__ = [
    "confusion_matrix_figure",
    "confusion_matrix_png",
    "residuals_figure",
    "residuals_png",
    "roc_figure",
    "roc_png",
]

WIDTH, HEIGHT, DPI = 640, 480, 100
_WHAT = "evaluation pictures"
_LOCK = threading.Lock()


def confusion_matrix_png(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str
) -> bytes:
    """The confusion matrix (rows: true classes, columns: predicted) as PNG bytes."""
    with _LOCK:
        return _png(confusion_matrix_figure(matrix, labels, title))


def roc_png(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float], float]], title: str
) -> bytes:
    """ROC curves, ``(label, false positive rates, true positive rates, AUC)`` each
    (at most ten are drawn), as PNG bytes."""
    with _LOCK:
        return _png(roc_figure(curves, title))


def residuals_png(y_true: Sequence[float], y_pred: Sequence[float], title: str) -> bytes:
    """Residuals (true - predicted) against predictions as PNG bytes."""
    with _LOCK:
        return _png(residuals_figure(y_true, y_pred, title))


def confusion_matrix_figure(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str
) -> Any:
    """The confusion matrix ``Figure``: classes by name on both axes."""
    np = need("numpy", _WHAT)
    metrics = need("sklearn.metrics", _WHAT)
    figure, ax = _figure()
    names = [_clip(str(label), 18) for label in labels]
    display = metrics.ConfusionMatrixDisplay(
        confusion_matrix=np.asarray(matrix), display_labels=names
    )
    display.plot(
        ax=ax,
        cmap="Blues",
        values_format="d",
        include_values=len(names) <= 20,
        xticks_rotation=30 if max((len(n) for n in names), default=0) > 6 else "horizontal",
        colorbar=True,
    )
    ax.set_title(title)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    figure.tight_layout()
    return figure


def roc_figure(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float], float]], title: str
) -> Any:
    """The ROC ``Figure``: one curve per entry, the chance line, axes just past [0, 1]."""
    np = need("numpy", _WHAT)
    metrics = need("sklearn.metrics", _WHAT)
    figure, ax = _figure()
    shown = list(curves)[:10]
    for k, (label, fpr, tpr, area) in enumerate(shown):
        display = metrics.RocCurveDisplay(
            fpr=np.asarray(fpr, dtype=float), tpr=np.asarray(tpr, dtype=float), roc_auc=area
        )
        display.plot(ax=ax, name=_clip(str(label), 24), plot_chance_level=k == len(shown) - 1)
        display.line_.set_linewidth(2)
    # A perfect curve runs along x = 0 and y = 1: keep it off the frame.
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(title)
    figure.tight_layout()
    return figure


def residuals_figure(y_true: Sequence[float], y_pred: Sequence[float], title: str) -> Any:
    """The residuals ``Figure`` (true - predicted against predicted; 1,000 points at most)."""
    np = need("numpy", _WHAT)
    metrics = need("sklearn.metrics", _WHAT)
    figure, ax = _figure()
    if len(y_true):
        metrics.PredictionErrorDisplay.from_predictions(
            np.asarray(y_true, dtype=float),
            np.asarray(y_pred, dtype=float),
            kind="residual_vs_predicted",
            subsample=1000,
            random_state=0,
            ax=ax,
            scatter_kwargs={"alpha": 0.6, "s": 14},
        )
    ax.set_xlabel("predicted value")
    ax.set_ylabel("residual (true - predicted)")
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_title(title)
    figure.tight_layout()
    return figure


# -- helpers --------------------------------------------------------------------------


def _figure() -> tuple[Any, Any]:
    """A new 640x480 ``Figure`` on its own Agg canvas, and its axes."""
    figure_mod = need("matplotlib.figure", _WHAT)
    agg = need("matplotlib.backends.backend_agg", _WHAT)
    figure = figure_mod.Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    agg.FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure: Any) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
