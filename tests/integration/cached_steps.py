"""Steps of test_cached_decisions: each appends its name to the ledger when it runs,
so a cache hit shows as a name missing from the ledger. ``ledger`` is a folder:
a file named in a cached task's parameters is in its cache key, and the ledger
file changes with every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers_tasks import append_line

from stageflow.operators import SkipDownstream, TaskContext
from stageflow.operators.metadata import record

LINES = "lines"


def measure(ledger: str, context: TaskContext) -> int:
    append_line(Path(ledger, LINES), "measure")
    record(context, metrics={"drifted_columns": 2.0, "error_rate": 0.25})
    return 7


def score(ledger: str) -> dict[str, Any]:
    append_line(Path(ledger, LINES), "score")
    return {"metrics": {"accuracy": 0.9}}  # in the output only: nothing recorded


def check(ledger: str) -> SkipDownstream:
    append_line(Path(ledger, LINES), "check")
    return SkipDownstream({"rows": 3}, "3 rows failed not_null(amount)")


def step(ledger: str, name: str) -> str:
    append_line(Path(ledger, LINES), name)
    return name


def use(ledger: str, drifted: Any, verdict: Any) -> dict[str, Any]:
    append_line(Path(ledger, LINES), "use")
    return {"drifted": drifted, "verdict": verdict}


def read_value(ledger: str, source: str, context: TaskContext) -> float:
    """The number in file ``source``, recorded as metric ``value`` too."""
    append_line(Path(ledger, LINES), "read")
    value = float(Path(source).read_text())
    record(context, metrics={"value": value})
    return value


def compare(ledger: str, read: Any, value: Any) -> dict[str, Any]:
    append_line(Path(ledger, LINES), "compare")
    return {"output": read, "metric": value}
