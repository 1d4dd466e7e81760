"""The README's `train` step (`call: steps:train`), imported from beside `churn.yaml`.

`extract` is the upstream bash task's output: the path of the CSV it wrote.
The "model" is one rule, `churn when support_calls >= k`, with the `k` that
scores best; below `threshold` accuracy the task fails (and is retried, as the
pipeline's `defaults:` say). Standard library only.
"""

from __future__ import annotations

import csv
from typing import Any


def train(extract: str, threshold: float = 0.8) -> dict[str, Any]:
    with open(extract, newline="", encoding="utf-8") as f:
        rows = [(int(r["support_calls"]), int(r["churned"])) for r in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"{extract} holds no customers")

    def accuracy(k: int) -> float:
        return sum((calls >= k) == bool(churned) for calls, churned in rows) / len(rows)

    best = max(range(11), key=accuracy)
    score = accuracy(best)
    if score < threshold:
        raise ValueError(f"accuracy {score:.3f} is below the threshold {threshold}")
    print(f"rule: churn when support_calls >= {best}; accuracy {score:.3f} on {len(rows)} rows")
    return {"rule": f"support_calls >= {best}", "accuracy": round(score, 4), "rows": len(rows)}
