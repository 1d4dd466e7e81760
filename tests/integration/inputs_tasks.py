"""Task functions for ``test_inputs_mapping.py``: ordinary functions whose parameter
names are not task ids, reused across many tasks through ``inputs=``. Module level,
so the ``process`` executor and a resumed run (which reloads the stored spec,
``call: inputs_tasks:inc``) import them by reference."""

from __future__ import annotations

from pathlib import Path


def zero() -> int:
    return 0


def inc(x: int) -> int:
    return x + 1


def one() -> int:
    return 1


def ten() -> int:
    return 10


def sub(a: int, b: int) -> int:
    return a - b


def flaky_inc(x: int, marker: str) -> int:
    """Fails while ``marker`` does not exist (a cause fixed before the resume)."""
    if not Path(marker).exists():
        raise RuntimeError(f"not yet: {marker} is missing")
    return x + 1


def counted_inc(x: int, log: str) -> int:
    """``inc`` that appends a line to ``log`` each time it really runs."""
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"{x}\n")
    return x + 1
