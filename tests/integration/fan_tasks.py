"""Module-level task functions for the fan-out tests (importable by workers)."""

from __future__ import annotations

import os
from typing import Any


def grid() -> list[dict[str, Any]]:
    return [{"depth": d} for d in (1, 2, 3, 4, 5)]


def train(grid: dict[str, Any]) -> dict[str, Any]:
    if grid["depth"] == int(os.environ.get("FAN_FAIL_DEPTH", "0")):
        raise RuntimeError(f"depth {grid['depth']} diverged")
    return {"depth": grid["depth"], "score": 0.5 + grid["depth"] / 10, "pid": os.getpid()}


def best(train: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "best": max(train, key=lambda r: r["score"]),
        "n": len(train),
        "order": [r["depth"] for r in train],
    }


def numbers(n: int) -> list[int]:
    return list(range(n))


def square(numbers: int) -> int:
    return numbers * numbers


def total(square: list[int]) -> int:
    return sum(square)
