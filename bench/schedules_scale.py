"""A scheduler with many schedules: tick lateness and CPU between ticks.

S1: N schedules (default 10,000), each a 1-minute cron (``* * * * *``) of one saved
pipeline (one bash task; no worker runs it: this measures the scheduler alone), on a
fresh store. One ``stageflow scheduler`` process (its default poll and duties) runs
for T minute boundaries. Lateness of a tick = its run's creation time (the store's)
minus the tick's logical time (the minute): p50, p99 and max over every tick fired,
and the time the last run of each minute was created (the whole batch); the minute
in which the schedules were made is not counted (it fires as the scheduler starts). CPU between
ticks: the scheduler's CPU seconds (user + system, psutil) over each quiet window,
from 10 s after a minute to 5 s before the next, divided by its wall time, as a
percentage of one core.

SQLite by default; ``--store URL`` (a fresh schema is made) for PostgreSQL.

Usage: python bench/schedules_scale.py [--schedules N] [--ticks T] [--store URL]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import percentile, report, scratch_home

SPEC = """\
name: tick
tasks:
  - {id: hello, operator: bash, parameters: {command: "echo hello"}}
"""


def _env(home: str, store: str | None) -> dict[str, str]:
    env = dict(os.environ, STAGEFLOW_HOME=home)
    env.pop("STAGEFLOW_DATABASE_URL", None)
    if store:
        import uuid

        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(store, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in store else "?"
        env["STAGEFLOW_DATABASE_URL"] = f"{store}{sep}options=-csearch_path%3D{schema}"
    return env


def _setup(home: str, env: dict[str, str], count: int) -> None:
    """The pipeline saved (``stageflow run`` saves it), then ``count`` schedules, through
    the operations layer."""
    from dataclasses import replace

    from stageflow import operations as ops
    from stageflow.runtime.settings import load_settings

    spec = Path(home) / "tick.yaml"
    spec.write_text(SPEC)
    stageflow = Path(sys.executable).with_name("stageflow")
    subprocess.run(
        [str(stageflow), "--home", home, "run", str(spec)],
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    os.environ.update(env)
    settings = replace(load_settings(), home=Path(home))
    with ops.writing(settings) as store:
        started = time.perf_counter()
        for i in range(count):
            ops.add_schedule(store, f"s{i:05d}", "tick", owner=None, see_all=True, cron="* * * * *")
        report("S0 setup", schedules=count, seconds=time.perf_counter() - started)


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _lateness(env: dict[str, str], home: str) -> list[tuple[float, float]]:
    """(logical time, run created at) of every fired tick."""
    from dataclasses import replace

    from stageflow.runtime.settings import load_settings
    from stageflow.runtime.store import open_store

    settings = replace(load_settings(), home=Path(home))
    store = open_store(env.get("STAGEFLOW_DATABASE_URL"), settings.home)
    try:
        created = {r.run_id: r.created_at for r in store.list_runs(limit=1_000_000)}
        out = []
        for record in store.schedules():
            for at, run_id in store.schedule_runs(record.name, 1000):
                out.append((at, created[run_id]))
        return out
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=2)
    parser.add_argument("--store", default=None)
    args = parser.parse_args()
    home = scratch_home()
    env = _env(home, args.store)
    _setup(home, env, args.schedules)

    stageflow = Path(sys.executable).with_name("stageflow")
    proc = subprocess.Popen(
        [str(stageflow), "--home", home, "scheduler"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    samples: list[tuple[float, float]] = []  # (wall clock, CPU seconds)
    try:
        # Measured from the first minute after the scheduler is up (schedules made in
        # the minute before fire at its start, as the scheduler starts: not counted).
        time.sleep(2.0)
        first = (time.time() // 60 + 1) * 60
        minutes = [first + 60 * k for k in range(args.ticks)]
        end = minutes[-1] + 50
        while time.time() < end:
            samples.append((time.time(), _cpu_seconds(proc.pid)))
            time.sleep(0.5)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    fired = [(at, created) for at, created in _lateness(env, home) if at in minutes]
    late = [created - at for at, created in fired]
    report(
        f"S1 {args.schedules} one-minute schedules, {'postgres' if args.store else 'sqlite'}",
        ticks=len(fired),
        expected=args.schedules * args.ticks,
        lateness_p50_s=percentile(late, 50),
        lateness_p99_s=percentile(late, 99),
        lateness_max_s=max(late) if late else float("nan"),
    )
    for minute in minutes:
        batch = [created - at for at, created in fired if at == minute]
        report(
            f"S1 minute {time.strftime('%H:%M', time.gmtime(minute))}",
            runs=len(batch),
            last_run_s=max(batch) if batch else float("nan"),
        )
    for minute in minutes:
        window = [(t, c) for t, c in samples if minute + 10 <= t <= minute + 55]
        if len(window) >= 2:
            (t0, c0), (t1, c1) = window[0], window[-1]
            report(
                f"S1 quiet CPU after {time.strftime('%H:%M', time.gmtime(minute))}",
                percent_of_a_core=100 * (c1 - c0) / (t1 - t0),
                seconds=t1 - t0,
            )
    if proc.returncode not in (0, -15):
        print(err.decode(errors="replace")[-2000:], file=sys.stderr)


if __name__ == "__main__":
    main()
