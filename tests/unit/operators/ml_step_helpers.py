"""A user function for feature_engineering's ``call`` step (tests)."""

from __future__ import annotations

from typing import Any


def add_ratio(frame: Any, factor: float = 1.0) -> Any:
    return frame.assign(ratio=frame["amount"] / (frame["age"].fillna(40) * factor))
