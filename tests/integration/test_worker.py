"""The store's queue across real processes: ``stageflow submit`` records runs as
``queued``; ``stageflow worker`` processes claim and run them (``runtime.worker``),
on SQLite and on PostgreSQL.

- submit prints the run id, or exits 2 naming every problem and queues nothing;
- one worker runs its runs at most ``--concurrency`` at once, higher priority first;
- two workers on one store run every run exactly once and share the work;
- a worker killed by ``kill -9`` is taken over by another once its lease expires;
- SIGTERM drains: a run that outlives ``--grace-seconds`` goes back to the queue;
- a run whose pipeline cannot be loaded by the worker ends ``failed``, once.

Every task is a ``bash`` command that leaves ``run_id task_id pid`` in a ledger file
(``>>``: O_APPEND, one write per line) when it starts; ``pid`` is the process that
started the command (the worker), so the ledger shows which worker ran which task,
and how often.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_places import Place as BasePlace
from helpers_places import kill_group, place_on
from helpers_tasks import read_lines, wait_until

from stageflow.runtime.store import Store, open_store
from support.postgres import postgres_schema, require_postgres

pytestmark = pytest.mark.slow

HOST = socket.gethostname()
LEASE = {"STAGEFLOW_LEASE_SECONDS": "2"}

# The commands of the tasks; the run's parameters arrive as STAGEFLOW_PARAM_<NAME>.
LEDGER = 'echo "$STAGEFLOW_RUN_ID $STAGEFLOW_TASK_ID $PPID" >> "$STAGEFLOW_PARAM_LEDGER"'
AT_GATE = (  # waits (at most 90 s) until the file named by the `gate` parameter exists
    'for _ in $(seq 4500); do [ -e "$STAGEFLOW_PARAM_GATE" ] && break; sleep 0.02; done'
)
SHORT_NAP = "sleep 0.0$((RANDOM % 8))"  # 0 to 70 ms


class Place(BasePlace):
    """A ``helpers_places.Place`` with the queue's commands: submit, start a worker."""

    def start_worker(self, name: str, *args: str, **extra: str) -> subprocess.Popen[bytes]:
        """``stageflow worker --name NAME ARGS`` in a session of its own; its output
        in ``NAME.out/.err``."""
        return self.start(name, "worker", "--name", name, *args, **extra)

    def rows(self) -> list[tuple[str, str, int]]:
        """The ledger: (run_id, task_id, pid of the worker) per task started."""
        return [(r, t, int(p)) for r, t, p in (line.split() for line in read_lines(self.ledger))]

    def write_spec(self, name: str, commands: dict[str, list[str]], **params: str) -> Path:
        """A chain of bash tasks: each runs LEDGER, then its ``commands``."""
        tasks = [
            {
                "id": tid,
                "operator": "bash",
                "upstream": [prev] if prev else [],
                "parameters": {"command": "; ".join([LEDGER, *extra])},
            }
            for prev, (tid, extra) in zip([None, *commands], commands.items(), strict=False)
        ]
        spec = {"name": name, "params": {"ledger": str(self.ledger), **params}, "tasks": tasks}
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(spec))
        return path


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Place]:
    with place_on("sqlite", tmp_path, Place) as found:
        yield found


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    with place_on(request.param, tmp_path, Place) as found:
        yield found


def owner(name: str, proc: subprocess.Popen[bytes]) -> str:
    return f"{name} ({HOST}:{proc.pid})"


def run_successes(store: Store, run_id: str) -> int:
    return sum(1 for e in store.events(run_id) if e.task_id is None and e.to_state == "success")


def task_successes(store: Store, run_id: str) -> Counter[str]:
    return Counter(e.task_id for e in store.events(run_id) if e.to_state == "success" and e.task_id)


def committed(place: Place, run_id: str, task_id: str) -> bool:
    with place.store() as store:
        return any(r.task_id == task_id and r.state == "success" for r in store.task_runs(run_id))


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at a tie)."""
    points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    open_now = most = 0
    for _, step in points:
        open_now += step
        most = max(most, open_now)
    return most


# -- submit ------------------------------------------------------------------------------------


def test_submit_queues_a_run_and_prints_its_id(place: Place) -> None:
    spec = place.write_spec("queued", {"t1": [], "t2": []})

    text = place.cli("submit", str(spec))
    as_json = place.cli("submit", str(spec), "--priority", "7", "--format", "json")

    assert text.returncode == 0, text.stderr
    run_id = text.stdout.strip()
    assert text.stdout == f"{run_id}\n"  # the id alone: `RUN=$(stageflow submit ...)`
    assert f"queued run {run_id} of pipeline 'queued'" in text.stderr
    assert as_json.returncode == 0, as_json.stderr
    shown = json.loads(as_json.stdout)
    assert shown == {
        "run_id": shown["run_id"],
        "pipeline": "queued",
        "state": "queued",
        "priority": 7,
    }
    with place.store() as store:
        runs = {r.run_id: r for r in store.list_runs()}
        assert set(runs) == {run_id, shown["run_id"]}
        assert {(r.state, r.lease_owner, r.started_at) for r in runs.values()} == {
            ("queued", None, None)
        }
        assert runs[shown["run_id"]].priority == 7
    listed = place.cli("runs", "list", "--format", "json")
    assert {r["state"] for r in json.loads(listed.stdout)} == {"queued"}
    assert place.rows() == []  # nothing ran: no worker yet

    worker = place.start_worker("w", "--idle-exit", "1")

    assert worker.wait(timeout=60) == 0, place.stderr("w")
    with place.store() as store:
        assert {r.state for r in store.list_runs()} == {"success"}
    assert Counter((r, t) for r, t, _ in place.rows()) == Counter(
        {(r, t): 1 for r in runs for t in ("t1", "t2")}
    )


def test_submit_of_an_invalid_pipeline_lists_every_problem_and_queues_nothing(
    place: Place,
) -> None:
    bad = place.tmp / "bad.yaml"
    bad.write_text(
        "name: bad\ntasks:\n"
        "  - {id: a, operator: nosuch, parameters: {command: x}}\n"
        "  - {id: b, operator: bash, upstream: [nope], parameters: {command: x}}\n"
    )
    good = place.write_spec("good", {"t1": []})

    text = place.cli("submit", str(bad))
    as_json = place.cli("submit", str(bad), "--format", "json")
    unknown_param = place.cli("submit", str(good), "--param", "nosuch=1")
    malformed_param = place.cli("submit", str(good), "--param", "ledger")

    assert text.returncode == 2, text
    assert "(2 problems)" in text.stderr
    assert "unknown operator 'nosuch'" in text.stderr
    assert "upstream task 'nope' does not exist" in text.stderr
    assert text.stdout == ""  # no run id
    assert as_json.returncode == 2, as_json
    problems = json.loads(as_json.stdout)
    assert problems["valid"] is False
    assert {(e["task"], e["field"]) for e in problems["errors"]} == {
        ("a", "operator"),
        ("b", "upstream"),
    }
    assert unknown_param.returncode == 2, unknown_param
    assert "no parameter 'nosuch'" in unknown_param.stderr
    assert malformed_param.returncode == 2, malformed_param
    assert "expected KEY=VALUE" in malformed_param.stderr
    for r in (text, as_json, unknown_param, malformed_param):
        assert "Traceback" not in r.stderr
    listed = place.cli("runs", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


# -- one worker ---------------------------------------------------------------------------------


def test_one_worker_runs_every_run_at_most_concurrency_at_once(place: Place) -> None:
    spec = place.write_spec("six", {"t1": ["sleep 0.3"], "t2": [], "t3": ["sleep 0.2"]})
    run_ids = [place.submit(spec) for _ in range(6)]

    worker = place.start_worker("w", "--concurrency", "2", "--idle-exit", "1")

    assert worker.wait(timeout=60) == 0, place.stderr("w")
    err = place.stderr("w")
    assert "6 run(s) finished, 0 handed back" in err, err
    with place.store() as store:
        runs = [store.get_run(r) for r in run_ids]
        assert [r.state for r in runs] == ["success"] * 6
        for r in run_ids:
            assert run_successes(store, r) == 1
            assert task_successes(store, r) == Counter({"t1": 1, "t2": 1, "t3": 1})
    rows = place.rows()
    assert Counter((r, t) for r, t, _ in rows) == Counter(
        {(r, t): 1 for r in run_ids for t in ("t1", "t2", "t3")}
    )
    assert {pid for _, _, pid in rows} == {worker.pid}
    intervals = [(r.started_at or 0.0, r.ended_at or 0.0) for r in runs]
    assert all(0 < a < b for a, b in intervals), intervals
    assert most_at_once(intervals) == 2, intervals  # never 3; and both slots were used


def test_a_worker_starts_higher_priorities_first(place: Place) -> None:
    spec = place.write_spec("ranked", {"t1": []})
    priorities = [0, 5, -3, 10, 5]
    run_ids = [place.submit(spec, "--priority", str(p)) for p in priorities]

    worker = place.start_worker("w", "--concurrency", "1", "--idle-exit", "1")

    assert worker.wait(timeout=60) == 0, place.stderr("w")
    with place.store() as store:
        runs = [store.get_run(r) for r in run_ids]
    assert {r.state for r in runs} == {"success"}
    started = sorted(runs, key=lambda r: r.started_at or 0.0)
    # Higher priority first; of equal priorities, the older run first.
    assert [r.run_id for r in started] == [run_ids[i] for i in (3, 1, 4, 0, 2)]
    for earlier, later in itertools.pairwise(started):
        assert (earlier.ended_at or 0.0) <= (later.started_at or 0.0)  # one at a time


# -- two workers on one store -------------------------------------------------------------------


def test_two_workers_run_every_run_exactly_once(any_place: Place) -> None:
    place = any_place
    go = place.tmp / "go"
    spec = place.write_spec(
        "shared",
        {"t1": [AT_GATE, SHORT_NAP], "t2": [SHORT_NAP], "t3": [SHORT_NAP]},
        gate=str(go),
    )
    run_ids = [place.submit(spec) for _ in range(20)]
    args = ("--concurrency", "3", "--idle-exit", "2")
    workers = {name: place.start_worker(name, *args) for name in ("a", "b")}

    # Both hold runs before any can end, so that both share the work.
    wait_until(
        lambda: all(": started" in place.stderr(name) for name in workers),
        "both workers have started a run",
        timeout=60,
    )
    go.touch()

    for name, proc in workers.items():
        assert proc.wait(timeout=90) == 0, place.stderr(name)
    ran_by = {  # the runs each worker says it ran to their end
        name: {
            line.split()[2]
            for line in place.stderr(name).splitlines()
            if line.endswith("of pipeline 'shared': success")
        }
        for name in workers
    }
    assert ran_by["a"] and ran_by["b"], ran_by
    assert ran_by["a"].isdisjoint(ran_by["b"])
    assert ran_by["a"] | ran_by["b"] == set(run_ids)
    with place.store() as store:
        for run_id in run_ids:
            run = store.get_run(run_id)
            assert run.state == "success", run
            assert run_successes(store, run_id) == 1
            assert task_successes(store, run_id) == Counter({"t1": 1, "t2": 1, "t3": 1})
            ran_it = next(n for n in workers if run_id in ran_by[n])
            assert run.lease_owner == owner(ran_it, workers[ran_it])
    rows = place.rows()
    assert Counter((r, t) for r, t, _ in rows) == Counter(
        {(r, t): 1 for r in run_ids for t in ("t1", "t2", "t3")}
    )
    pids = {n: p.pid for n, p in workers.items()}
    for run_id, _, pid in rows:  # each run's tasks were started by the worker that ran it
        assert run_id in ran_by[next(n for n in workers if pids[n] == pid)]


# -- takeover of a silent worker's run --------------------------------------------------------


def test_a_killed_workers_run_is_taken_over_by_another(place: Place) -> None:
    gate = place.tmp / "gate"
    spec = place.write_spec("taken", {"t1": [], "t2": [AT_GATE], "t3": []}, gate=str(gate))
    run_id = place.submit(spec)
    a = place.start_worker("a", **LEASE)
    wait_until(
        lambda: (run_id, "t2", a.pid) in place.rows() and committed(place, run_id, "t1"),
        "worker a ran t1 and started t2",
        timeout=60,
    )

    kill_group(a)
    killed_at = time.monotonic()

    def listed_as_silent() -> bool:
        r = place.cli("runs", "list", **LEASE)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith(run_id)), "")
        return f"{owner('a', a)} silent since" in line and "will be taken over" in line

    wait_until(listed_as_silent, "runs list shows worker a silent", timeout=30)
    gate.touch()
    b = place.start_worker("b", "--idle-exit", "1", **LEASE)
    wait_until(
        lambda: (run_id, "t2", b.pid) in place.rows(),
        "worker b took the run over",
        timeout=2 + 15 - (time.monotonic() - killed_at),
    )

    assert b.wait(timeout=60) == 0, place.stderr("b")
    err = place.stderr("b")
    assert f"run {run_id} of pipeline 'taken': taking it over from {owner('a', a)}" in err, err
    assert f"run {run_id} of pipeline 'taken': success" in err, err
    assert place.rows() == [
        (run_id, "t1", a.pid),  # committed success: never run again
        (run_id, "t2", a.pid),
        (run_id, "t2", b.pid),
        (run_id, "t3", b.pid),
    ]
    with place.store() as store:
        run = store.get_run(run_id)
        assert (run.state, run.lease_owner) == ("success", owner("b", b))
        assert run_successes(store, run_id) == 1
        assert task_successes(store, run_id) == Counter({"t1": 1, "t2": 1, "t3": 1})


# -- draining ----------------------------------------------------------------------------------


def test_sigterm_hands_a_run_outliving_the_grace_back_to_the_queue(place: Place) -> None:
    gate = place.tmp / "gate"
    spec = place.write_spec("drained", {"t1": [], "t2": [AT_GATE], "t3": []}, gate=str(gate))
    run_id = place.submit(spec)
    a = place.start_worker("a", "--grace-seconds", "1", **LEASE)
    wait_until(
        lambda: (run_id, "t2", a.pid) in place.rows() and committed(place, run_id, "t1"),
        "worker a ran t1 and started t2",
        timeout=60,
    )

    os.kill(a.pid, signal.SIGTERM)
    sent = time.monotonic()

    assert a.wait(timeout=30) == 0, place.stderr("a")
    assert time.monotonic() - sent < 1 + 5, place.stderr("a")
    err = place.stderr("a")
    assert "SIGTERM: draining" in err, err
    assert f"run {run_id}: handed back to the queue (draining)" in err, err
    assert "0 run(s) finished, 1 handed back" in err, err
    with place.store() as store:
        assert run_id in {r.run_id for r in store.claimable_runs(time.time(), 10)}
        assert store.get_run(run_id).state == "running"
        assert task_successes(store, run_id) == Counter({"t1": 1})
    gate.touch()
    b = place.start_worker("b", "--idle-exit", "1", **LEASE)

    assert b.wait(timeout=60) == 0, place.stderr("b")
    assert f"run {run_id} of pipeline 'drained': success" in place.stderr("b")
    assert place.rows() == [
        (run_id, "t1", a.pid),
        (run_id, "t2", a.pid),  # stopped by the drain
        (run_id, "t2", b.pid),
        (run_id, "t3", b.pid),
    ]
    with place.store() as store:
        run = store.get_run(run_id)
        assert (run.state, run.lease_owner) == ("success", owner("b", b))
        assert run_successes(store, run_id) == 1
        assert task_successes(store, run_id) == Counter({"t1": 1, "t2": 1, "t3": 1})


def test_sigterm_lets_a_run_end_within_the_grace_and_claims_nothing_more(place: Place) -> None:
    gate = place.tmp / "gate"
    spec = place.write_spec("short", {"t1": [AT_GATE], "t2": []}, gate=str(gate))
    first = place.submit(spec)
    second = place.submit(spec)
    worker = place.start_worker("w", "--concurrency", "1", "--grace-seconds", "30")
    wait_until(lambda: [r for r, _, _ in place.rows()] == [first], "the first run started", 60)

    os.kill(worker.pid, signal.SIGTERM)
    wait_until(lambda: "SIGTERM: draining" in place.stderr("w"), "the worker is draining")
    gate.touch()

    assert worker.wait(timeout=60) == 0, place.stderr("w")
    err = place.stderr("w")
    assert "1 run(s) finished, 0 handed back" in err, err
    assert "handed back to the queue" not in err
    with place.store() as store:
        assert store.get_run(first).state == "success"
        assert (store.get_run(second).state, store.get_run(second).lease_owner) == (
            "queued",
            None,
        )
    assert place.rows() == [(first, "t1", worker.pid), (first, "t2", worker.pid)]


def test_sigusr1_prints_every_threads_stack_and_the_worker_goes_on(place: Place) -> None:
    gate = place.tmp / "gate"
    spec = place.write_spec("held", {"t1": [AT_GATE], "t2": []}, gate=str(gate))
    run_id = place.submit(spec)
    worker = place.start_worker("w", "--concurrency", "1")
    wait_until(lambda: [r for r, _, _ in place.rows()] == [run_id], "the run started", 60)

    os.kill(worker.pid, signal.SIGUSR1)
    # faulthandler's dump: the main thread (the poll loop) and the run's own thread.
    wait_until(lambda: "Current thread" in place.stderr("w"), "the stacks are printed")
    err = place.stderr("w")
    assert "in serve" in err and "in _run_one" in err, err
    gate.touch()
    wait_until(lambda: len(place.rows()) == 2, "the run went on")
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, place.stderr("w")
    with place.store() as store:
        assert store.get_run(run_id).state == "success"


# -- a pipeline the worker cannot load ---------------------------------------------------------


def test_a_run_the_worker_cannot_load_fails_once_with_the_reason(place: Place) -> None:
    module = place.tmp / "vanishing_steps.py"
    module.write_text("def step() -> int:\n    return 1\n")
    spec = place.tmp / "vanishing.json"
    spec.write_text(
        json.dumps({"name": "vanishing", "tasks": [{"id": "t1", "call": "vanishing_steps:step"}]})
    )
    run_id = place.submit(spec)
    module.unlink()  # gone before any worker loads it
    if (place.tmp / "__pycache__").exists():
        for cached in (place.tmp / "__pycache__").iterdir():
            cached.unlink()

    worker = place.start_worker("w", "--idle-exit", "1")

    assert worker.wait(timeout=60) == 0, place.stderr("w")
    err = place.stderr("w")
    with place.store() as store:
        run = store.get_run(run_id)
        assert run.state == "failed", err  # not left queued for every worker to retry
        (event,) = [e for e in store.events(run_id) if e.to_state == "failed"]
        assert event.task_id is None
        message = event.message or ""
        assert f"worker {owner('w', worker)} could not load or plan the run's pipeline" in message
        assert "vanishing_steps" in message
    failed = [ln for ln in err.splitlines() if f"run {run_id}: failed" in ln]
    assert len(failed) == 1, err  # recorded once; not tried again
    assert f"run {run_id}: failed: worker {owner('w', worker)}" in failed[0], err
    assert "could not run it here" not in err
    shown = place.cli("runs", "show", run_id)
    assert "failed" in shown.stdout


# -- a run too big for a worker ------------------------------------------------------------


def test_a_run_too_big_for_one_worker_waits_for_a_bigger_one(place: Place) -> None:
    spec = place.tmp / "big.json"
    spec.write_text(
        json.dumps(
            {
                "name": "big",
                "tasks": [
                    {
                        "id": "t1",
                        "operator": "bash",
                        "parameters": {"command": "true"},
                        "resources": {"cpu": 64},
                    }
                ],
            }
        )
    )
    run_id = place.submit(spec)  # queued for whichever worker it fits, not refused here
    small = place.start_worker("small", "--idle-exit", "1", STAGEFLOW_MAX_CPU_CORES="2")
    assert small.wait(timeout=60) == 0, place.stderr("small")
    err = place.stderr("small")
    assert f"run {run_id}: left for a bigger worker; it does not fit this one" in err, err
    assert "(handed back to the queue)" in err, err
    assert len([ln for ln in err.splitlines() if "left for a bigger worker" in ln]) == 1, err
    with place.store() as store:
        run = store.get_run(run_id)
        assert run.state == "queued"  # not failed
        # Claimed, then handed back at once: any worker may take it now.
        assert run.lease_epoch == 2 and (run.lease_expires_at or 0.0) <= time.time(), run
        assert run_id in {r.run_id for r in store.claimable_runs(time.time(), 10)}
    big = place.start_worker("big", "--idle-exit", "1", STAGEFLOW_MAX_CPU_CORES="64")
    assert big.wait(timeout=60) == 0, place.stderr("big")
    with place.store() as store:
        assert store.get_run(run_id).state == "success", place.stderr("big")


# -- a lost database connection ---------------------------------------------------------------


@pytest.mark.postgres
def test_a_worker_that_loses_its_database_connections_keeps_its_run_and_finishes_it(
    tmp_path: Path,
) -> None:
    """Every server session of the worker is ended (``pg_terminate_backend``) while a task
    runs: the worker reconnects (its poll and the run's commits try again), the run ends
    ``success`` with every task run once, and the worker goes on claiming runs."""
    import secrets

    import psycopg

    from support.postgres import POSTGRES_URL

    require_postgres()
    app = f"sf_lost_{secrets.token_hex(4)}"
    with postgres_schema() as url:
        place = Place(tmp_path, f"{url}&application_name={app}")
        try:
            gate = place.tmp / "gate"
            spec = place.write_spec("lost", {"t1": [], "t2": [AT_GATE], "t3": []}, gate=str(gate))
            first = place.submit(spec)
            worker = place.start_worker("w", "--idle-exit", "2")
            wait_until(
                lambda: (first, "t2", worker.pid) in place.rows() and committed(place, first, "t1"),
                "the worker ran t1 and started t2",
                timeout=60,
            )

            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (app,),
                ).fetchall()
            assert len(ended) >= 2, ended  # its poll's session and the run's
            gate.touch()
            second = place.submit(spec)

            assert worker.wait(timeout=90) == 0, place.stderr("w")
            err = place.stderr("w")
            assert f"run {first} of pipeline 'lost': success" in err, err
            assert f"run {second} of pipeline 'lost': success" in err, err
            assert "the store answers again" in err, err  # it noticed, and recovered
            assert "Traceback" not in err, err
            with place.store() as store:
                for run_id in (first, second):
                    run = store.get_run(run_id)
                    assert (run.state, run.lease_owner) == ("success", owner("w", worker))
                    assert run_successes(store, run_id) == 1
                    assert task_successes(store, run_id) == Counter({"t1": 1, "t2": 1, "t3": 1})
            assert Counter((r, t) for r, t, _ in place.rows()) == Counter(
                {(r, t): 1 for r in (first, second) for t in ("t1", "t2", "t3")}
            )
        finally:
            place.stop_all()


def test_a_worker_whose_store_cannot_be_reached_says_which_and_why_at_start(
    place: Place,
) -> None:
    bad = "postgresql://stageflow:hunter2@127.0.0.1:1/nowhere"

    r = place.cli("worker", "--idle-exit", "1", STAGEFLOW_DATABASE_URL=bad)

    assert r.returncode == 2, r
    assert "could not connect to postgresql://stageflow:***@127.0.0.1:1/nowhere" in r.stderr
    assert "Connection refused" in r.stderr or "connection failed" in r.stderr, r.stderr
    assert "hunter2" not in r.stderr + r.stdout
    assert "Traceback" not in r.stderr


# -- a run claimed by the worker's poll is not claimed again by its thread ----------------------


def _one(x: int = 1) -> int:
    return x


def test_a_run_won_by_claim_next_starts_under_that_epoch_without_claiming_again(
    tmp_path: Path,
) -> None:
    from stageflow import Pipeline, Task
    from stageflow.errors import RunOwned
    from stageflow.runtime.runner import Runner
    from stageflow.runtime.settings import Settings

    settings = Settings(home=tmp_path / "home")
    pipeline = Pipeline("won", tasks=[Task("a", _one)])
    with contextlib.closing(open_store(None, settings.home)) as store:
        first = Runner(pipeline, store=store, settings=settings).prepare({}, hold=False).run
        second = Runner(pipeline, store=store, settings=settings).prepare({}, hold=False).run
        now = time.time()
        got = store.claim_next(owner="w (h:1)", host=HOST, pid=os.getpid(), now=now, ttl=15.0)
        assert got is not None and got[0].run_id == first.run_id

        # Given the queue's view (no lease shown), the runner renews the lease it was
        # handed instead of claiming again: the epoch stays the one claim_next won.
        result = Runner(pipeline, store=store, settings=settings, owner="w (h:1)").start_queued(
            got[0], epoch=got[1]
        )
        assert result.state == "success"
        run = store.get_run(first.run_id)
        assert (run.state, run.lease_epoch, run.lease_owner) == ("success", 1, "w (h:1)")

        # An epoch that is no longer the run's (taken meanwhile) starts nothing.
        got = store.claim_next(owner="w (h:1)", host=HOST, pid=os.getpid(), now=now, ttl=15.0)
        assert got is not None and got[0].run_id == second.run_id
        store.release_lease(second.run_id, got[1], now)
        with pytest.raises(RunOwned):
            Runner(pipeline, store=store, settings=settings).start_queued(got[0], epoch=got[1])
        assert store.get_run(second.run_id).state == "queued"
        assert store.task_runs(second.run_id)[0].state == "pending"
