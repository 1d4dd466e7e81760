"""One worker process, many concurrent runs: its threads and processes stay bounded by
its pools (``runtime.host``), counted from outside while 50 runs go at once.

The worker runs ``--concurrency N`` runs at once; each run may use ``max_parallel_tasks``
(2) attempts at once. The process's ONE thread pool (or pool of worker processes) is
shared by all of them, so it never holds more than N x 2 workers; every run adds its
own thread (the loop) and its committer's, and nothing is started per task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers_tasks import clean_environ

from stageflow.runtime.loading import load_pipeline
from stageflow.runtime.runner import Runner
from stageflow.runtime.settings import load_settings
from stageflow.runtime.store import open_store

pytestmark = pytest.mark.slow

STAGEFLOW = Path(sys.executable).with_name("stageflow")
PARALLEL = 2
PER_RUN_THREADS = 2  # a run's loop and its committer
BASE_THREADS = 16  # the main thread, the observers, the store's, logging, 4 gatherers ...
GATHERERS = 4  # runtime.lineage: threads gathering git and packages for the records


def spec(tmp: Path, executor_tasks: int = 4) -> Path:
    path = tmp / "sleepy.json"
    tasks = [
        {"id": f"t{n}", "operator": "bash", "parameters": {"command": "sleep 0.3"}}
        for n in range(executor_tasks)
    ]
    path.write_text(json.dumps({"name": "sleepy", "max_parallel_tasks": PARALLEL, "tasks": tasks}))
    return path


def queue_runs(home: Path, path: Path, count: int) -> list[str]:
    settings = load_settings({"STAGEFLOW_HOME": str(home)})
    store = open_store(None, home)
    try:
        runner = Runner(load_pipeline(str(path)), store=store, settings=settings)
        return [runner.prepare({}, hold=False).run.run_id for _ in range(count)]
    finally:
        store.close()


def command_line(process: psutil.Process) -> str:
    """Its command line; empty once it has ended (a child may end while listed)."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def executor_processes(worker: psutil.Process, executor: str) -> tuple[int, int]:
    """The thread executor's attempts' commands (the worker's own children), or the
    process executor's worker processes (the children of its fork server); and the
    ``git status`` the records' gatherers run. Not counted: children that ended while
    listed, and ones forked but not yet running their command (a fork shows the
    worker's own command line until it execs)."""
    own = command_line(worker)
    listed = [(c, command_line(c)) for c in worker.children()]
    children = [(c, line) for c, line in listed if line and line != own]
    gits = sum(1 for _, line in children if line.startswith("git "))
    if executor == "thread":
        return len(children) - gits, gits
    return sum(len(c.children()) for c, line in children if "forkserver" in line), gits


@pytest.mark.parametrize(("executor", "runs"), [("thread", 50), ("process", 10)])
def test_concurrent_runs_in_one_worker_hold_bounded_threads_and_processes(
    tmp_path: Path, executor: str, runs: int
) -> None:
    home = tmp_path / "home"
    ids = queue_runs(home, spec(tmp_path), runs)
    proc = subprocess.Popen(
        [
            str(STAGEFLOW),
            "--home",
            str(home),
            "worker",
            "--concurrency",
            str(runs),
            "--executor",
            executor,
            "--idle-exit",
            "2",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "worker.err").open("wb"),
        env=clean_environ(os.environ),
    )
    watched = psutil.Process(proc.pid)
    most_threads = most_children = most_gits = 0
    while proc.poll() is None:
        try:
            most_threads = max(most_threads, watched.num_threads())
            children, gits = executor_processes(watched, executor)
        except psutil.NoSuchProcess:
            break
        most_children, most_gits = max(most_children, children), max(most_gits, gits)
        time.sleep(0.02)
    assert proc.wait(timeout=120) == 0, (tmp_path / "worker.err").read_text()
    print(f"{executor}: {runs} runs, at most {most_threads} threads, {most_children} children")

    store = open_store(None, home)
    try:
        states = {store.get_run(r).state for r in ids}
        why = {
            r: [(t.task_id, t.state, t.error) for t in store.task_runs(r) if t.state != "success"]
            for r in ids
            if store.get_run(r).state != "success"
        }
    finally:
        store.close()
    assert states == {"success"}, (why, (tmp_path / "worker.err").read_text()[-3000:])
    pool = runs * PARALLEL  # the pool's bound: concurrent runs x their parallelism
    assert most_threads <= BASE_THREADS + runs * PER_RUN_THREADS + pool
    assert most_children <= pool  # worker processes, or the tasks' commands: the pool's size
    assert most_gits <= GATHERERS  # not one per run
    assert most_threads > runs  # it did run them at once (a run's loop thread each)
