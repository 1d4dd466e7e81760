"""The store's queue: runs per second through workers, and claim latency.

Q1: N submitted 3-task runs (python no-ops), then W workers in this process
(``runtime.worker.Worker``, one thread per run, concurrency 4 each) run them all:
runs/s and per-run time. Q2: one idle worker (polling every 5 ms); runs are
submitted one at a time, each after a random pause of up to 20 ms (so that it lands
anywhere in the worker's poll: submitted right after the last run ended, it would land
at the same point each time, and how long the worker takes to finish a run would
decide the figure), and the claim latency is the time from the submit's return to its
first task's start (as the store records it): p50/p99.

SQLite by default; ``--store URL`` (e.g. postgresql://postgres@127.0.0.1:5432/test,
a fresh schema is made) for PostgreSQL.

Q3 (``--processes``, instead of Q1 and Q2): Q1's runs through W ``stageflow worker``
processes; runs/s from the first run's start to the last run's end (the store's
times), and the wall time with the processes' start.

Usage: python bench/queue_throughput.py [--runs N] [--workers W] [--store URL] [--processes]
"""

from __future__ import annotations

import argparse
import math
import os
import random
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


def processes(runs: int, workers: int, store: str | None) -> None:
    """Q3: Q1 with ``stageflow worker`` processes instead of threads of this one."""
    import subprocess
    import sys

    from stageflow.runtime.runner import Runner
    from stageflow.runtime.store import open_store

    home = scratch_home()
    settings = _settings(home, store)
    pipeline = _pipeline(home)
    db = open_store(settings.database_url, settings.home)
    submitter = Runner(pipeline, store=db, settings=settings)
    ids = [submitter.prepare({}, hold=False).run.run_id for _ in range(runs)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")])),
    }
    if settings.database_url:
        env["STAGEFLOW_DATABASE_URL"] = settings.database_url
    command = [str(Path(sys.executable).with_name("stageflow")), "--home", home, "worker"]
    command += ["--concurrency", "4", "--poll-seconds", "0.005", "--idle-exit", "0.5"]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*command, "--name", f"p{i}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for i in range(workers)
    ]
    while {r.state for r in db.list_runs(limit=runs)} - {"success", "failed", "cancelled"}:
        time.sleep(0.005)
    took = time.perf_counter() - start
    for proc in procs:
        proc.wait(timeout=60)
    done = [db.get_run(run_id) for run_id in ids]
    db.close()
    # From the first run's start to the last run's end, as the store recorded them:
    # the workers' own start (imports, opening the store) is not the queue's cost.
    busy = max(r.ended_at or 0.0 for r in done) - min(r.started_at or math.inf for r in done)
    report(
        f"Q3 {runs} runs x 3 tasks, {workers} worker process(es), "
        f"{'postgres' if store else 'sqlite'}",
        runs_per_s=runs / busy,
        ms_per_run=busy / runs * 1000,
        wall_s_with_start=took,
        succeeded=sum(r.state == "success" for r in done),
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
        time.sleep(random.uniform(0.0, 0.02))
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
    parser.add_argument(
        "--processes", action="store_true", help="Q3 only: workers as `stageflow worker` processes"
    )
    args = parser.parse_args()
    os.environ.setdefault("STAGEFLOW_LOG_LEVEL", "ERROR")
    for workers in [args.workers] if args.workers else [1, 2]:
        if args.processes:
            processes(args.runs, workers, args.store)
        else:
            throughput(args.runs, workers, args.store)
    if not args.processes:
        claim_latency(args.samples, args.store)


if __name__ == "__main__":
    main()
