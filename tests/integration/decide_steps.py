"""Steps of test_metric_inputs: a branch task that decides on a check's metrics."""

from __future__ import annotations

from typing import Any


def decide(drifted: float | None, verdict: dict[str, Any]) -> str:
    assert isinstance(verdict, dict) and "passed" in verdict, verdict
    return "retrain" if drifted else "skip"


def say() -> int:
    return 1
