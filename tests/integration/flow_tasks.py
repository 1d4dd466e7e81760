"""Module-level task functions for the control-flow tests (importable by workers)."""

from __future__ import annotations

from typing import Any


def evaluate(score: float) -> dict[str, Any]:
    return {"accuracy": score, "model": "rf"}


def deploy(evaluate: dict[str, Any]) -> str:
    return f"deployed {evaluate['model']}"


def report(*results: Any) -> list[Any]:
    return list(results)


def quality_check(drift: float) -> str:
    """Seed 004's Quality_Check -> {Retrain | Skip}: returns the branch to follow."""
    return "retrain" if drift > 0.2 else "skip_retrain"


def retrain() -> str:
    return "retrained"


def skip_retrain() -> str:
    return "kept the current model"


def validate(rows: int) -> int:
    if rows < 10:
        raise ValueError(f"only {rows} rows")
    return rows


def train(validate: int) -> str:
    return f"trained on {validate} rows"


def cleanup() -> str:
    return "cleaned"


def scores() -> Any:
    """An output with no single truth value: ``bool()`` of it raises."""
    import numpy as np

    return np.array([0.9, 0.7])
