"""What one ``/metrics`` scrape costs as a store's history grows (SQLite, or PostgreSQL
with ``--store``): the API's collector (``service/api/metrics.py``) reads runs, task
runs and attempts from the store at each scrape.

The store is filled through the store's own API (``create_run`` + ``commit``) with
ended runs of ``--tasks`` one-attempt tasks over 20 pipelines (ended a day ago), up to
each size of ``--sizes``; at each size the collector's text is built ``--repeat`` times
(as a scrape does, in this process: no HTTP) and the median and worst are printed, with
the bytes of text. The first scrape of an API process reads the whole history (the
task histograms' settled part, ``service/api/metrics.py``), later ones only what is
newer: at each size a new collector (a new API process) scrapes once (``first_ms``),
then ``--repeat`` times (``median_ms``, ``max_ms``: a long-running process's scrapes).
PostgreSQL: a schema of its own, dropped at the end.

Usage: python bench/metrics_scrape.py [--sizes 1000,10000,50000] [--tasks 10]
       [--repeat 5] [--store URL]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from _common import report, scratch_home
from stageflow.runtime.settings import load_settings
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import (
    AttemptRecord,
    Batch,
    PipelineRecord,
    RunRecord,
    RunUpdate,
    Store,
    TaskRunRecord,
)
from stageflow.service.api.metrics import ApiMetrics

PIPELINES = 20
RUNS_PER_COMMIT = 100


def fill(store: Store, first: int, last: int, tasks: int, rng: random.Random) -> None:
    """Runs ``first`` .. ``last - 1``: each created, then ended ``success`` with its
    tasks' rows (one attempt each), ``RUNS_PER_COMMIT`` runs per commit."""
    batch = Batch()
    now = time.time()
    for k in range(first, last):
        pipeline = f"pipeline-{k % PIPELINES:02d}"
        run_id = f"bench-{k:08d}"
        created = now - 86400 + k * 0.01
        store.create_run(
            RunRecord(run_id, pipeline, "v1", "queued", {}, created),
            [f"t{i}" for i in range(tasks)],
            pipeline=PipelineRecord(pipeline, "v1", "{}", created) if k < PIPELINES else None,
        )
        at = created + rng.uniform(0.001, 0.05)
        for i in range(tasks):
            took = rng.lognormvariate(-1.0, 1.5)
            batch.task_runs.append(TaskRunRecord(run_id, f"t{i}", "success", 1, at, at + took))
            batch.attempts.append(
                AttemptRecord(run_id, f"t{i}", 1, "success", at, at + took, queued_at=at - 0.001)
            )
            at += took
        batch.runs.append(RunUpdate(run_id, state="success", started_at=created, ended_at=at))
        if len(batch.runs) == RUNS_PER_COMMIT:
            store.commit(batch)
            batch = Batch()
    if batch:
        store.commit(batch)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--store", default=None, help="a database URL (default: SQLite)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    home = Path(scratch_home())
    settings = load_settings({"STAGEFLOW_HOME": str(home)})
    url, schema = settings.database_url, None
    if args.store:  # PostgreSQL: a schema of its own, dropped at the end
        import uuid

        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.store, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{args.store}{'&' if '?' in args.store else '?'}options=-csearch_path%3D{schema}"
    store = open_store(url, settings.home)
    rng = random.Random(7)
    made = 0
    try:
        for size in sizes:
            start = time.perf_counter()
            fill(store, made, size, args.tasks, rng)
            filled = time.perf_counter() - start
            made = size
            metrics = ApiMetrics(store, lease_seconds=15.0)
            start = time.perf_counter()
            text = metrics.text()
            first = time.perf_counter() - start
            took: list[float] = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                text = metrics.text()
                took.append(time.perf_counter() - start)
            report(
                f"M1 scrape, {size} runs",
                attempts=size * args.tasks,
                first_ms=first * 1e3,
                median_ms=statistics.median(took) * 1e3,
                max_ms=max(took) * 1e3,
                text_kib=len(text) / 1024,
                fill_s=filled,
            )
    finally:
        store.close()
        if schema is not None:
            import psycopg

            with psycopg.connect(args.store, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
