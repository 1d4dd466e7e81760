"""Dynamic fan-out: a task mapped over 10,000 elements (10,000 task runs).

Prints wall time, microseconds per element and peak memory of the whole run
(store on, SQLite, thread executor, 4 workers), in a fresh process.

Usage: python bench/fanout.py [N]   (default 10,000)
"""

from __future__ import annotations

import sys
import time
from typing import Any

from _common import peak_rss_mib, report, scratch_home
from stageflow import Pipeline, Task


def elements(n: int) -> list[int]:
    return list(range(n))


def square(elements: int) -> int:
    return elements * elements


def total(square: list[int]) -> int:
    return sum(square)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    tasks: list[Any] = [
        Task("elements", elements, parameters={"n": n}),
        Task("square", square).map("elements"),
        Task("total", total),
    ]
    pipeline = Pipeline("fanout", tasks=tasks)
    start = time.perf_counter()
    result = pipeline.run(home=scratch_home(), max_parallel=4)
    took = time.perf_counter() - start
    assert result.state == "success" and result.output("total") == sum(k * k for k in range(n))
    report(
        f"fan-out map_over {n}",
        run_s=took,
        us_per_element=took / n * 1e6,
        peak_rss_mib=peak_rss_mib(),
    )


if __name__ == "__main__":
    main()
