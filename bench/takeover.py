"""Takeover time after a SIGKILL: how long a run waits when the worker running it dies.

T1: two ``stageflow worker`` processes on one store, at the default lease (15 s,
renewed every 5 s; ``--lease`` to change it). Each round submits a run whose one
task waits for a gate file, waits until a worker holds it, SIGKILLs that worker's
process group, and times the kill → the run's takeover by the other worker (the
time of the resumed run's ``taken over by worker ...`` event, which the new owner
records right after its claim). Then the gate opens, the run ends, and a fresh
worker replaces the killed one, so two are alive at every kill. p50/p99 over
``--kills`` rounds. The kill comes right after the run started (its lease was just
renewed: the longest wait), or ``--random`` after a random delay of up to one
renewal period (a crash at any moment; seeded).

SQLite in a scratch home by default; ``--store URL`` (e.g.
postgresql://postgres@127.0.0.1:5432/test, a fresh schema is made) for PostgreSQL.

Usage: python bench/takeover.py [--kills 20] [--lease 15] [--random] [--store URL]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import percentile, report, scratch_home

STAGEFLOW = Path(sys.executable).with_name("stageflow")
WAIT = 'while [ ! -e "$STAGEFLOW_PARAM_GATE" ]; do sleep 0.05; done'


def _store_url(store: str | None) -> str | None:
    if not store:
        return None
    import uuid

    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in store else "?"
    return f"{store}{sep}options=-csearch_path%3D{schema}"


class Bench:
    def __init__(self, home: Path, url: str | None, lease: float) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
        self.env["STAGEFLOW_LOG_LEVEL"] = "WARNING"
        if lease:
            self.env["STAGEFLOW_LEASE_SECONDS"] = f"{lease:g}"
        if url:
            self.env["STAGEFLOW_DATABASE_URL"] = url
        self.url = url
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.count = 0

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(STAGEFLOW), "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=True,
        )
        return done.stdout.strip()

    def start_worker(self) -> None:
        self.count += 1
        log = (self.home / f"worker-{self.count}.err").open("wb")
        proc = subprocess.Popen(
            [str(STAGEFLOW), "--home", str(self.home), "worker", "--name", f"w{self.count}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=self.env,
            start_new_session=True,
        )
        self.workers[proc.pid] = proc

    def kill(self, pid: int) -> float:
        proc = self.workers.pop(pid)
        os.killpg(pid, signal.SIGKILL)
        killed = time.time()
        proc.wait()
        return killed

    def stop_all(self) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self.workers.pop(pid).wait()


def takeover(kills: int, lease: float, store: str | None, at_random: bool) -> None:
    import random

    from stageflow.engine.lease import LeaseTerms
    from stageflow.runtime.store import open_store

    rng = random.Random(12)
    renew_every = LeaseTerms(lease or 15.0).renew_every

    home = Path(scratch_home())
    bench = Bench(home, _store_url(store), lease)
    spec = home / "held.json"
    gate_dir = home / "gates"
    gate_dir.mkdir()
    spec.write_text(
        json.dumps(
            {
                "name": "held",
                "params": {"gate": ""},
                "tasks": [{"id": "wait", "operator": "bash", "parameters": {"command": WAIT}}],
            }
        )
    )
    db = open_store(bench.url, home)
    times: list[float] = []
    try:
        bench.start_worker()
        bench.start_worker()
        for k in range(kills):
            gate = gate_dir / f"gate-{k}"
            run_id = bench.cli("submit", str(spec), "--param", f"gate={gate}")
            while True:  # until a worker runs it
                run = db.get_run(run_id)
                if run.state == "running" and run.owner_pid in bench.workers:
                    break
                time.sleep(0.01)
            holder = run.owner_pid
            assert holder is not None
            if at_random:
                time.sleep(rng.uniform(0.0, renew_every))
            killed = bench.kill(holder)
            bench.start_worker()  # two alive again (the new one may be the taker too)
            while True:
                taken = [e for e in db.events(run_id) if (e.message or "").startswith("taken")]
                if taken:
                    break
                time.sleep(0.01)
            times.append(taken[0].at - killed)
            print(f"kill {k + 1}: taken over after {times[-1]:.2f}s", flush=True)
            gate.touch()
            while db.get_run(run_id).state != "success":
                time.sleep(0.01)
    finally:
        bench.stop_all()
        db.close()
    report(
        f"T1 takeover after SIGKILL {'at a random moment' if at_random else 'at the start'}, "
        f"lease {lease or 15:g}s, 2 workers, {'postgres' if store else 'sqlite'}",
        p50_s=percentile(times, 50),
        p99_s=percentile(times, 99),
        min_s=min(times),
        max_s=max(times),
        kills=len(times),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease", type=float, default=0.0, help="seconds; 0: the default 15")
    parser.add_argument("--random", action="store_true", help="kill at a random moment")
    parser.add_argument("--store", default=None)
    args = parser.parse_args()
    takeover(args.kills, args.lease, args.store, args.random)


if __name__ == "__main__":
    main()
