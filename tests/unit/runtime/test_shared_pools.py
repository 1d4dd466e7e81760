"""One executor pool per process, shared by its runs (``runtime.host``, ``executors``)."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stageflow import Pipeline, Task
from stageflow.runtime.attempt import AttemptResult, Job
from stageflow.runtime.executors.process import ProcessExecutor
from stageflow.runtime.executors.thread import ThreadExecutor
from stageflow.runtime.host import Host
from stageflow.runtime.runner import run_pipeline
from stageflow.runtime.settings import load_settings

WAIT = 10.0


def job(home: Path, run_id: str, task_id: str, fn: Callable[..., Any], **params: Any) -> Job:
    return Job(
        run_id=run_id,
        task=Task(task_id, fn),
        attempt=1,
        parameters=params,
        run_params={},
        artifacts_root=str(home / "artifacts"),
        logs_dir=home / "logs",
        inline_limit=1 << 20,
    )


def echo() -> str:
    return threading.current_thread().name


def wait_for_cancel(started: threading.Event, release: threading.Event) -> bool:
    started.set()
    return release.wait(WAIT)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_results_go_to_the_run_that_submitted_them(tmp_path: Path, kind: str) -> None:
    pool = ThreadExecutor() if kind == "thread" else ProcessExecutor()
    got: dict[str, queue.SimpleQueue[AttemptResult]] = {
        "a": queue.SimpleQueue(),
        "b": queue.SimpleQueue(),
    }
    views = {
        rid: pool.attach(rid, lambda r, q=got[rid]: q.put(r), 2)  # type: ignore[misc]
        for rid in ("a", "b")
    }
    try:
        for n in range(4):
            for rid, view in views.items():
                view.submit(job(tmp_path, rid, f"t{n}", echo))
        for rid in ("a", "b"):
            results = [got[rid].get(timeout=WAIT) for _ in range(4)]
            assert {r.run_id for r in results} == {rid}
            assert sorted(r.task_id for r in results) == [f"t{n}" for n in range(4)]
            assert all(r.ok for r in results)
        assert pool.workers <= 4  # the two runs' parallelism, not a pool each
    finally:
        pool.shutdown()


def test_a_detached_run_gets_no_late_result_and_its_jobs_are_told_to_stop(tmp_path: Path) -> None:
    pool = ThreadExecutor()
    results: queue.SimpleQueue[AttemptResult] = queue.SimpleQueue()
    started, release = threading.Event(), threading.Event()
    view = pool.attach("a", results.put, 1)
    view.submit(job(tmp_path, "a", "waits", wait_for_cancel, started=started, release=release))
    assert started.wait(WAIT)

    view.shutdown()  # the run is done: its attempt is told to stop (it waits a moment)

    assert [flag.is_set() for flag in pool._flags.values()] == [True]
    release.set()  # this task ignores its flag; when it returns, its result goes nowhere
    for _ in range(1000):
        if not pool._flags:
            break
        time.sleep(0.01)
    assert pool._flags == {}
    assert results.empty()
    other = pool.attach("b", results.put, 1)
    other.submit(job(tmp_path, "b", "next", echo))
    assert results.get(timeout=WAIT).run_id == "b"  # the same thread serves the next run
    assert pool.workers == 1
    pool.shutdown()


def test_the_thread_added_for_an_abandoned_attempt_leaves_when_it_returns(tmp_path: Path) -> None:
    pool = ThreadExecutor()
    results: queue.SimpleQueue[AttemptResult] = queue.SimpleQueue()
    view = pool.attach("a", results.put, 1)
    started, release = threading.Event(), threading.Event()
    stuck = job(tmp_path, "a", "stuck", wait_for_cancel, started=started, release=release)
    view.submit(stuck)
    assert started.wait(WAIT)

    view.cancel(stuck.key)  # abandoned: it keeps its thread, so one more is wanted
    assert pool.workers == 2
    view.submit(job(tmp_path, "a", "next", echo))
    assert results.get(timeout=WAIT).task_id == "next"  # ran on the added thread
    release.set()  # the abandoned attempt returns (it ignores its flag): a thread goes

    for _ in range(1000):
        if pool.workers == 1:
            break
        time.sleep(0.01)
    assert pool.workers == 1
    assert pool._abandoned == set()
    pool.shutdown()


_ran_on: list[threading.Thread] = []


def note_thread() -> int:
    _ran_on.append(threading.current_thread())  # kept alive: no two share an id
    return os.getpid()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_runs_of_one_host_reuse_its_threads_and_worker_processes(tmp_path: Path, kind: str) -> None:
    settings = load_settings({"STAGEFLOW_HOME": str(tmp_path)})
    pipeline = Pipeline("reuse", tasks=[Task(f"t{n}", note_thread) for n in range(6)])
    _ran_on.clear()
    pids: set[int] = set()
    with Host() as host:
        for _ in range(5):
            result = run_pipeline(
                pipeline, settings=settings, max_parallel=3, host=host, executor=kind
            )
            assert result.state == "success"
            pids |= {int(result.output(f"t{n}")) for n in range(6)}
            assert host.workers() <= 3  # one pool, grown to one run's parallelism at most
    if kind == "thread":
        assert len({id(t) for t in _ran_on}) <= 3  # five runs, the same (at most 3) threads
        assert pids == {os.getpid()}
    else:
        assert len(pids) <= 3  # five runs, the same (at most 3) worker processes
        assert os.getpid() not in pids


def test_a_host_lends_one_store_connection_run_after_run(tmp_path: Path) -> None:
    settings = load_settings({"STAGEFLOW_HOME": str(tmp_path)})
    pipeline = Pipeline("lent", tasks=[Task("t", note_thread)])
    with Host() as host:
        with host.store(settings) as first:
            pass
        with host.store(settings) as again:
            assert again is first  # opened (and its schema checked) once
            with host.store(settings) as meanwhile:  # a second borrower gets its own
                assert meanwhile is not first
        assert run_pipeline(pipeline, settings=settings, host=host).state == "success"
        with host.store(settings) as after_run:
            assert after_run in (first, meanwhile)
            assert [r.pipeline for r in after_run.list_runs()] == ["lent"]

        for suffix in ("", "-wal", "-shm"):  # the file is replaced behind the host's back
            (tmp_path / f"stageflow.db{suffix}").unlink(missing_ok=True)
        with host.store(settings) as fresh:
            assert fresh not in (first, meanwhile)
            assert fresh.list_runs() == []  # the new file, not the old connection's


def test_a_store_whose_borrower_failed_is_not_lent_again(tmp_path: Path) -> None:
    settings = load_settings({"STAGEFLOW_HOME": str(tmp_path)})
    with Host() as host:
        with pytest.raises(RuntimeError), host.store(settings) as broken:
            raise RuntimeError("the run failed while it held the store")
        with host.store(settings) as next_one:
            assert next_one is not broken


class CountingStore:
    """Only what ``resources.history_estimates`` reads, counting the reads."""

    url = "sqlite:///counting"

    def __init__(self) -> None:
        self.reads = 0

    def task_durations(self, pipeline: str, runs: int) -> list[tuple[str, float]]:
        self.reads += 1
        return [("t0", 2.0), ("t1", 4.0), ("t2", 6.0)]


def test_history_estimates_are_read_once_per_pipeline_for_a_while() -> None:
    from stageflow.runtime.plan import check

    pipeline = Pipeline("est", tasks=[Task(f"t{n}", echo) for n in range(3)])
    plan = check(pipeline, {})
    store = CountingStore()
    with Host() as host:
        first = host.history_estimates(store, pipeline, plan)  # type: ignore[arg-type]
        again = host.history_estimates(store, pipeline, plan)  # type: ignore[arg-type]
        assert first == again == [2.0, 4.0, 6.0]
        assert store.reads == 1  # the second run of the pipeline did not read the store

        other = Pipeline("est", tasks=[Task(f"t{n}", echo) for n in (2, 1, 0)])
        reordered = host.history_estimates(store, other, check(other, {}))  # type: ignore[arg-type]
        assert reordered == [6.0, 4.0, 2.0]  # another task order is another plan: read again
        assert store.reads == 2


def test_only_a_process_whose_entry_point_tuned_the_collector_has_it_paused() -> None:
    import subprocess
    import sys

    script = (
        "import gc\n"
        "from stageflow.runtime.host import collector_paused, tune_gc\n"
        "threshold = gc.get_threshold()\n"
        "with collector_paused():\n"
        "    embedded = gc.isenabled()\n"
        "assert gc.get_threshold() == threshold  # a host alone changes nothing\n"
        "tune_gc()\n"
        "with collector_paused():\n"
        "    tuned = gc.isenabled()\n"
        "print(embedded, tuned, gc.isenabled(), gc.get_threshold()[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "False", "True", "10000"]
