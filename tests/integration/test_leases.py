"""Leases across real processes, on SQLite and on PostgreSQL (``engine.lease``,
``runtime.claim.take_run``, fencing in ``runtime.store``).

- Ten ``stageflow resume RUN_ID`` started at once on a run crashed by ``kill -9``:
  exactly one proceeds, the others exit 1 naming its owner, and every task without
  a committed success runs exactly once.
- A ``stageflow run`` stopped (SIGSTOP) past its lease is taken over by ``stageflow
  resume``; continued (SIGCONT), its late commit is refused (``LeaseLost``): it
  starts and commits nothing more and exits 1, and no task's success is committed
  twice.

Every task leaves ``task_id pid`` in a ledger when it starts (``lease_tasks``), so
the ledger shows which process ran which task, and how often.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from helpers_places import Place as BasePlace
from helpers_places import kill_group, place_on
from helpers_tasks import read_lines, wait_until

from stageflow import Pipeline, Task
from stageflow.errors import LeaseLost
from stageflow.operators.base import TaskContext
from stageflow.runtime.runner import run_pipeline
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import Store

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
HOST = socket.gethostname()

# ingest -> clean -> features -> train_{a..d} -> eval_{a..d} -> report: 12 tasks.
BRANCHES = ("a", "b", "c", "d")
UPSTREAM: dict[str, list[str]] = {
    "ingest": [],
    "clean": ["ingest"],
    "features": ["clean"],
    **{f"train_{b}": ["features"] for b in BRANCHES},
    **{f"eval_{b}": [f"train_{b}"] for b in BRANCHES},
    "report": [f"eval_{b}" for b in BRANCHES],
}
CHAIN: dict[str, list[str]] = {f"t{i}": [f"t{i - 1}"] if i > 1 else [] for i in range(1, 7)}


class Place(BasePlace):
    """A ``helpers_places.Place`` whose processes import this folder's task modules."""

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = super().env(extra)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        return env

    def unlocked(self, run_id: str) -> bool:
        """True when no transaction holds a write lock a claim of ``run_id`` would wait for."""
        if self.url is None:
            conn = sqlite3.connect(self.home / "stageflow.db", timeout=0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                return True
            except sqlite3.OperationalError:
                return False
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.url) as conn:
            try:
                conn.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE NOWAIT", (run_id,))
                return True
            except psycopg.errors.LockNotAvailable:
                return False
            finally:
                conn.rollback()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    with place_on(request.param, tmp_path, Place) as found:
        yield found


def write_spec(place: Place, name: str, upstream: dict[str, list[str]], **params: str) -> Path:
    lines = [f"name: {name}", f"params: {json.dumps(params)}", "tasks:"]
    for tid, ups in upstream.items():
        lines.append(
            f"  - {{id: {tid}, call: 'lease_tasks:gated_step', upstream: {json.dumps(ups)}}}"
        )
    path = place.tmp / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def ledger_rows(path: Path) -> list[tuple[str, int]]:
    return [(task, int(pid)) for task, pid in (line.split() for line in read_lines(path))]


def successes(store: Store, run_id: str) -> Counter[str]:
    return Counter(e.task_id for e in store.events(run_id) if e.to_state == "success" and e.task_id)


# -- in one process: a run taken over stops ------------------------------------------------

_started = {name: threading.Event() for name in ("slow", "waiting")}
_release = threading.Event()
_saw_cancel = threading.Event()
_ran_after: list[str] = []


def slow() -> str:
    _started["slow"].set()
    _release.wait(30)
    return "slow"


def waiting(context: TaskContext) -> str:
    _started["waiting"].set()
    if context.cancelled.wait(30):
        _saw_cancel.set()
    return "waited"


def after(slow: str) -> str:
    _ran_after.append(slow)
    return "after"


def test_a_run_taken_over_stops_its_attempts_and_commits_nothing_more(place: Place) -> None:
    for event in (*_started.values(), _release, _saw_cancel):
        event.clear()
    _ran_after.clear()
    pipeline = Pipeline(
        "taken",
        tasks=[Task("slow", slow), Task("waiting", waiting), Task("after", after)],
    )
    settings = Settings(home=place.home, database_url=place.url)
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(run_pipeline(pipeline, settings=settings, max_parallel=2))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert all(e.wait(30) for e in _started.values())
        with place.store() as store:
            (record,) = store.list_runs()
            # Another process takes the run over (as if its lease had expired).
            store.claim_run(
                record.run_id,
                owner="elsewhere:7",
                expected_epoch=record.lease_epoch,
                host="elsewhere",
                pid=7,
                started_at=1.0,
                now=time.time(),
                ttl=15.0,
            )
            before = (store.task_runs(record.run_id), store.events(record.run_id))
    finally:
        _release.set()
        thread.join(60)

    (exc,) = outcome
    assert isinstance(exc, LeaseLost), exc
    assert exc.owner == "elsewhere:7"
    assert f"run '{record.run_id}' was taken over by elsewhere:7" in str(exc)
    assert _saw_cancel.is_set()  # its running attempt was stopped
    # `after` may have started: the process learns of the takeover at its next commit
    # (here its lease was taken while still live); nothing of it is committed.
    assert _ran_after in ([], ["slow"])
    with place.store() as store:
        assert (store.task_runs(record.run_id), store.events(record.run_id)) == before
        assert store.get_run(record.run_id).lease_owner == "elsewhere:7"


def quiet() -> str:
    time.sleep(2.5)
    return "quiet"


def test_a_quiet_run_keeps_renewing_its_lease(place: Place) -> None:
    """No task ends for 2.5 s and commits are held up to a minute: the heartbeat still
    renews a 3 s lease (every second), so the run is never up for takeover."""
    settings = Settings(
        home=place.home, database_url=place.url, lease_seconds=3.0, commit_interval=60.0
    )
    outcome: list[object] = []
    thread = threading.Thread(
        target=lambda: outcome.append(
            run_pipeline(Pipeline("quiet", tasks=[Task("quiet", quiet)]), settings=settings)
        )
    )
    thread.start()
    seen: list[tuple[float, float]] = []  # (when, lease expiry) while the task runs
    with place.store() as store:
        wait_until(lambda: bool(store.list_runs()), "the run was created")
        (run,) = store.list_runs()
        while thread.is_alive():
            now, record = time.time(), store.get_run(run.run_id)
            if record.state == "running" and record.lease_expires_at is not None:
                seen.append((now, record.lease_expires_at))
            time.sleep(0.05)
        final = store.get_run(run.run_id)
    thread.join()
    assert getattr(outcome[0], "state", None) == "success"
    assert all(now < expires for now, expires in seen)  # never expired while it ran
    assert len({expires for _, expires in seen}) >= 2  # renewed again and again
    assert (final.state, final.lease_expires_at) == ("success", None)


# -- ten resumes at once: exactly one proceeds ----------------------------------------------


def test_of_ten_simultaneous_resumes_exactly_one_runs_the_rest(place: Place) -> None:
    ledger, gate = place.tmp / "ledger", place.tmp / "gate"
    gate.touch()
    spec = write_spec(place, "crash", UPSTREAM, ledger=str(ledger), gate=str(gate))
    crashed = place.start("run", "run", str(spec), "--max-parallel", "2")

    def five_started() -> bool:
        assert crashed.poll() is None, f"the run ended before the kill: {place.output('run')}"
        return len(read_lines(ledger)) >= 5

    wait_until(five_started, "five tasks have started", timeout=60)
    kill_group(crashed)
    gate.unlink()  # the resumed tasks wait until every refused resume has exited
    at_kill = len(ledger_rows(ledger))
    with place.store() as store:
        (run,) = store.list_runs()
        run_id = run.run_id
        assert run.state == "running"  # the crash left it unfinished
        committed = {r.task_id for r in store.task_runs(run_id) if r.state == "success"}
    remaining = set(UPSTREAM) - committed
    assert committed and remaining

    resumes = [place.start(f"resume-{k}", "resume", run_id, "--format", "json") for k in range(10)]

    def nine_ended() -> bool:
        pids = {pid for _, pid in ledger_rows(ledger)[at_kill:]}
        assert len(pids) <= 1, f"several resumes ran the run's tasks (pids {sorted(pids)})"
        return sum(p.poll() is not None for p in resumes) >= 9

    wait_until(nine_ended, "nine of the ten resumes have ended", timeout=120)
    gate.touch()
    codes = [p.wait(timeout=120) for p in resumes]

    outputs = [place.output(f"resume-{k}") for k in range(10)]
    assert sorted(codes) == [0] + [1] * 9, list(zip(codes, outputs, strict=True))
    k = codes.index(0)
    owner = f"{HOST}:{resumes[k].pid}"
    assert json.loads(outputs[k][0])["state"] == "success"
    for code, (_, err) in zip(codes, outputs, strict=True):
        if code == 1:
            assert f"error: run '{run_id}' " in err, err
            assert owner in err, err  # names the owner
            assert "Traceback" not in err
    after = ledger_rows(ledger)[at_kill:]
    assert {pid for _, pid in after} == {resumes[k].pid}
    assert Counter(task for task, _ in after) == Counter(dict.fromkeys(remaining, 1))
    with place.store() as store:
        run = store.get_run(run_id)
        assert (run.state, run.lease_owner, run.lease_expires_at) == ("success", owner, None)
        assert successes(store, run_id) == Counter(dict.fromkeys(UPSTREAM, 1))


# -- a stopped owner loses its lease: its late commit is refused ----------------------------


def test_a_run_stopped_past_its_lease_is_taken_over_and_commits_nothing_more(
    place: Place,
) -> None:
    lease = {"STAGEFLOW_LEASE_SECONDS": "2"}
    ledger, gate = place.tmp / "ledger", place.tmp / "gate"
    spec = write_spec(place, "stopped", CHAIN, ledger=str(ledger), gate=str(gate))
    stale = place.start("stale", "run", str(spec), "--max-parallel", "1", **lease)
    wait_until(lambda: ledger_rows(ledger) == [("t1", stale.pid)], "t1 started", timeout=60)
    with place.store() as store:
        (run,) = store.list_runs()
        run_id = run.run_id
        wait_until(
            lambda: store.get_run(run_id).lease_owner == f"{HOST}:{stale.pid}", "the run's claim"
        )

    stop_between_commits(place, stale, run_id)
    with place.store() as store:

        def lease_expired() -> bool:
            expires = store.get_run(run_id).lease_expires_at
            return expires is not None and expires < time.time() - 0.1

        wait_until(lease_expired, "the stopped run's lease expired", timeout=30)
    gate.touch()
    resumer = place.start("resume", "resume", run_id, "--format", "json", **lease)
    assert resumer.wait(timeout=120) == 0, place.output("resume")
    new_owner = f"{HOST}:{resumer.pid}"
    with place.store() as store:
        run = store.get_run(run_id)
        assert (run.state, run.lease_owner) == ("success", new_owner)
        events = store.events(run_id)
    ledger_then = ledger_rows(ledger)

    os.killpg(stale.pid, signal.SIGCONT)

    assert stale.wait(timeout=60) == 1, place.output("stale")
    err = place.output("stale")[1]
    assert f"error: run '{run_id}' was taken over by {new_owner}" in err, err
    assert "Traceback" not in err
    assert ledger_rows(ledger) == ledger_then  # it started nothing more
    assert [row for row in ledger_then if row[1] == stale.pid] == [("t1", stale.pid)]
    assert Counter(t for t, pid in ledger_then if pid == resumer.pid) == Counter(
        dict.fromkeys(CHAIN, 1)
    )
    with place.store() as store:
        assert store.events(run_id) == events  # and committed nothing more
        assert successes(store, run_id) == Counter(dict.fromkeys(CHAIN, 1))
        assert store.get_run(run_id).state == "success"


def stop_between_commits(place: Place, proc: subprocess.Popen[bytes], run_id: str) -> None:
    """SIGSTOP ``proc``'s group at a moment it holds no write lock on the store (a
    frozen transaction would hold up the takeover itself, not what is tested here)."""
    for _ in range(100):
        os.killpg(proc.pid, signal.SIGSTOP)
        wait_until(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED, "it stopped")
        if place.unlocked(run_id):
            return
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the run's process held a write lock every time it was stopped")


def test_a_run_prepared_to_run_here_is_created_under_this_process_s_lease(
    place: Place,
) -> None:
    """``prepare(hold=True)`` records the run already claimed (epoch 1, this process as
    its owner), so ``start`` runs it without a second claim; one prepared for the
    queue (``hold=False``) has no owner until a worker claims it."""
    from stageflow.runtime.claim import process_start
    from stageflow.runtime.runner import Runner
    from stageflow.runtime.settings import load_settings

    settings = replace(load_settings({}), home=place.home, database_url=place.url)
    pipeline = Pipeline("held", tasks=[Task("only", quiet)])
    with place.store() as store:
        runner = Runner(pipeline, store=store, settings=settings)
        held = runner.prepare({})
        queued = runner.prepare({}, hold=False)
        for prepared, epoch in ((held, 1), (queued, 0)):
            assert store.get_run(prepared.run.run_id).lease_epoch == epoch
        row = store.get_run(held.run.run_id)
        assert (row.lease_owner, row.owner_host, row.owner_pid) == (runner.owner, HOST, os.getpid())
        assert row.owner_started_at == process_start()
        assert store.get_run(queued.run.run_id).lease_owner is None

        assert runner.start(held).state == "success"
        done = store.get_run(held.run.run_id)
        assert (done.state, done.lease_epoch, done.lease_expires_at) == ("success", 1, None)
