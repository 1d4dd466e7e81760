"""The store's queue: runs per second through workers, and claim latency.

Q1: N submitted 3-task runs (python no-ops), then W workers in this process
(``runtime.worker.Worker``, one thread per run, concurrency 4 each) run them all:
runs/s and per-run time. Q2: one idle worker (polling every 5 ms); runs are
submitted one at a time, and the claim latency is the time from the submit's
return to its first task's start (as the store records it): p50/p99.

SQLite by default; ``--store URL`` (e.g. postgresql://postgres@127.0.0.1:5432/test,
a fresh schema is made) for PostgreSQL.

Usage: python bench/queue_throughput.py [--runs N] [--workers W] [--store URL]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

from _common import percentile, report, scratch_home

STEPS = """\
def one():
    return 1


def add(*values):
    return sum(values) + 1
"""

SPEC = """\
name: q
tasks:
  - {id: a, call: q_steps:one}
  - {id: b, call: q_steps:add, upstream: [a]}
  - {id: c, call: q_steps:add, upstream: [b]}
"""


def _settings(home: str, store: str | None):  # type: ignore[no-untyped-def]
    from stageflow.runtime.settings import load_settings

    settings = replace(load_settings(), home=Path(home))
    if store:
        import uuid

        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(store, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in store else "?"
        settings = replace(settings, database_url=f"{store}{sep}options=-csearch_path%3D{schema}")
    return settings


def _pipeline(home: str):  # type: ignore[no-untyped-def]
    from stageflow.runtime.loading import load_pipeline

    Path(home, "q_steps.py").write_text(STEPS)
    spec = Path(home, "q.yaml")
    spec.write_text(SPEC)
    return load_pipeline(str(spec))


def throughput(runs: int, workers: int, store: str | None) -> None:
    from stageflow.runtime.runner import Runner
    from stageflow.runtime.store import open_store
    from stageflow.runtime.worker import Worker

    home = scratch_home()
    settings = _settings(home, store)
    pipeline = _pipeline(home)
    db = open_store(settings.database_url, settings.home)
    submitter = Runner(pipeline, store=db, settings=settings)
    for _ in range(runs):
        submitter.prepare({}, hold=False)
    pool = [
        Worker(settings, name=f"w{i}", concurrency=4, poll_seconds=0.005) for i in range(workers)
    ]
    start = time.perf_counter()
    threads = [threading.Thread(target=w.serve, kwargs={"idle_exit": 0.2}) for w in pool]
    for t in threads:
        t.start()
    while True:
        states = {r.state for r in db.list_runs(limit=runs)}
        if states <= {"success", "failed", "cancelled"}:
            break
        time.sleep(0.005)
    took = time.perf_counter() - start
    for w in pool:
        w.drain()
    for t in threads:
        t.join()
    db.close()
    report(
        f"Q1 {runs} runs x 3 tasks, {workers} worker(s), {'postgres' if store else 'sqlite'}",
        runs_per_s=runs / took,
        ms_per_run=took / runs * 1000,
        total_s=took,
    )


def claim_latency(samples: int, store: str | None) -> None:
    from stageflow.runtime.runner import Runner
    from stageflow.runtime.store import open_store
    from stageflow.runtime.worker import Worker

    home = scratch_home()
    settings = _settings(home, store)
    pipeline = _pipeline(home)
    db = open_store(settings.database_url, settings.home)
    submitter = Runner(pipeline, store=db, settings=settings)
    worker = Worker(settings, concurrency=4, poll_seconds=0.005)
    thread = threading.Thread(target=worker.serve)
    thread.start()
    latencies = []
    for _ in range(samples):
        submitted = time.time()
        run_id = submitter.prepare({}, hold=False).run.run_id
        while True:
            attempts = db.attempts(run_id, "a")
            if attempts and attempts[0].started_at is not None:
                latencies.append(attempts[0].started_at - submitted)
                break
            time.sleep(0.002)
        while db.get_run(run_id).state not in ("success", "failed"):
            time.sleep(0.002)
    worker.drain()
    thread.join()
    db.close()
    report(
        f"Q2 claim latency, idle worker, {'postgres' if store else 'sqlite'}",
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        samples=samples,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=0, help="0: 1 then 2")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--store", default=None)
    args = parser.parse_args()
    os.environ.setdefault("STAGEFLOW_LOG_LEVEL", "ERROR")
    for workers in [args.workers] if args.workers else [1, 2]:
        throughput(args.runs, workers, args.store)
    claim_latency(args.samples, args.store)


if __name__ == "__main__":
    main()
