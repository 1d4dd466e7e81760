"""Pure algorithms on a pipeline's DAG: order, levels, cycles, critical path, drawing.

Every function takes ``upstream: Mapping[str, Sequence[str]]`` (task id -> ids of
the tasks it depends on); the mapping's insertion order is the definition order and
breaks every tie, so results are deterministic. Upstream ids that are not keys are
ignored (spec validation reports them). Nothing here does I/O, starts threads,
reads a clock or logs; ``draw`` returns its drawing instead of writing it, and
imports Pillow only for PNG.
"""

from typing import TYPE_CHECKING

from stageflow.graph.critical_path import CriticalPath, critical_path, upward_rank
from stageflow.graph.cycles import CycleError, find_cycle, format_cycle
from stageflow.graph.order import Shape, downstream, levels, shape, topological_order

if TYPE_CHECKING:
    from stageflow.graph.drawing import (
        FORMATS,
        STATE_COLOURS,
        UNKNOWN_STATE_COLOUR,
        DrawFormat,
        draw,
    )

__all__ = [
    "FORMATS",
    "STATE_COLOURS",
    "UNKNOWN_STATE_COLOUR",
    "CriticalPath",
    "CycleError",
    "DrawFormat",
    "Shape",
    "critical_path",
    "downstream",
    "draw",
    "find_cycle",
    "format_cycle",
    "levels",
    "shape",
    "topological_order",
    "upward_rank",
]

_LAZY_DRAW = {"FORMATS", "STATE_COLOURS", "UNKNOWN_STATE_COLOUR", "DrawFormat", "draw"}


def __getattr__(name: str) -> object:
    # Drawing (layout code) is imported on first use: `stageflow run` never draws.
    if name in _LAZY_DRAW:
        import importlib

        return getattr(importlib.import_module("stageflow.graph.drawing"), name)
    raise AttributeError(f"module 'stageflow.graph' has no attribute {name!r}")
