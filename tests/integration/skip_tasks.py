"""Steps of test_skip_resume: each appends its name to the ledger when it runs."""

from __future__ import annotations

import time
from pathlib import Path

from helpers_tasks import append_line

from stageflow.operators import SkipDownstream


def check(ledger: str) -> SkipDownstream:
    append_line(ledger, "check")
    return SkipDownstream({"rows": 3}, "3 rows failed not_null(amount)")


def pick(ledger: str) -> str:
    append_line(ledger, "pick")
    return "left"


def step(ledger: str, name: str) -> int:
    append_line(ledger, name)
    return 1


def blocker(ledger: str, release: str) -> int:
    """Waits until the file ``release`` exists (the test kills the run meanwhile)."""
    append_line(ledger, "blocker")
    while not Path(release).exists():
        time.sleep(0.05)
    return 1
