"""Run control from another machine: ``stageflow pause|unpause|cancel|approve`` given in
a process that shares nothing local with the worker (another ``--home``; only
``STAGEFLOW_DATABASE_URL`` names the same PostgreSQL) reaches the worker that owns
the run, through the store.

- pause: the running task finishes, no new task starts while the run is paused (the
  ledger shows it), unpause lets it go on to ``success``;
- cancel: the worker stops the run's running attempt (its command's process is
  gone), the run ends ``cancelled`` and the worker goes on serving the next run;
- approve: the gated task runs and the run ends ``success``, decided by the
  operating-system user who ran ``approve``, not by a name it claimed with ``--by``.

The tasks are ``bash`` commands leaving ``run_id task_id pid`` in a ledger
(``test_worker``'s helpers); a task waits at a gate file the test creates.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers_tasks import me, wait_until
from test_worker import AT_GATE, LEDGER, Place, committed

from stageflow.runtime.store import Store
from support.postgres import postgres_schema, require_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def places(tmp_path: Path) -> Iterator[tuple[Place, Place]]:
    """The worker's machine and another one: two homes, one PostgreSQL store."""
    require_postgres()
    with postgres_schema() as url:
        worker_side = Place(tmp_path / "worker-machine", url)
        other_side = Place(tmp_path / "other-machine", url)
        worker_side.tmp.mkdir()
        other_side.tmp.mkdir()
        try:
            yield worker_side, other_side
        finally:
            worker_side.stop_all()


def run_state(place: Place, run_id: str) -> str:
    with place.store() as store:
        return store.get_run(run_id).state


def ran(place: Place, run_id: str) -> list[str]:
    """The tasks of ``run_id`` the ledger shows started, in order."""
    return [t for r, t, _ in place.rows() if r == run_id]


def gate_waiters(worker_pid: int, gate: Path) -> list[psutil.Process]:
    """The worker's descendant processes still waiting at ``gate``."""
    found = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for p in psutil.Process(worker_pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if str(gate) in " ".join(p.environ().values()):
                    found.append(p)
    return found


def task_events(store: Store, run_id: str) -> list[tuple[str | None, str | None, str]]:
    return [(e.task_id, e.from_state, e.to_state) for e in store.events(run_id)]


def stop_worker(place: Place, name: str) -> None:
    """SIGTERM the worker; it drains and exits 0 (it was still serving)."""
    proc = next(p for p in place.procs if name in p.args)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, place.stderr(name)


def test_pause_and_unpause_from_another_home_reach_the_worker(
    places: tuple[Place, Place],
) -> None:
    here, there = places
    gate = here.tmp / "gate"
    spec = here.write_spec("paused", {"t1": [AT_GATE], "t2": [], "t3": []}, gate=str(gate))
    run_id = here.submit(spec)
    worker = here.start_worker("w")
    wait_until(lambda: ran(here, run_id) == ["t1"], "the worker started t1", timeout=60)

    paused = there.cli("pause", run_id)

    assert paused.returncode == 0, paused.stderr
    assert f"to pause run '{run_id}'" in paused.stderr
    assert str(worker.pid) in paused.stderr  # the owner named: the worker
    wait_until(lambda: run_state(here, run_id) == "paused", "the worker paused the run")
    gate.touch()  # t1 may finish now; nothing may start after it
    wait_until(lambda: committed(here, run_id, "t1"), "t1 finished while paused", timeout=60)
    # t2 was ready when t1's success was recorded; give the worker a few of its steps
    # to (wrongly) start it, then look: the ledger is the proof.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert ran(here, run_id) == ["t1"], here.rows()
        time.sleep(0.05)
    assert run_state(here, run_id) == "paused"

    unpaused = there.cli("unpause", run_id)

    assert unpaused.returncode == 0, unpaused.stderr
    wait_until(lambda: run_state(here, run_id) == "success", "the run ended", timeout=60)
    assert ran(here, run_id) == ["t1", "t2", "t3"]
    assert {pid for _, _, pid in here.rows()} == {worker.pid}
    with here.store() as store:
        runs = [(f, t) for task, f, t in task_events(store, run_id) if task is None]
        assert ("running", "paused") in runs and ("paused", "running") in runs
        # t2 was queued only after the unpause
        events = task_events(store, run_id)
        assert events.index((None, "paused", "running")) < events.index(("t2", "queued", "running"))
    stop_worker(here, "w")


def test_cancel_from_another_home_stops_the_attempt_and_the_worker_goes_on(
    places: tuple[Place, Place],
) -> None:
    here, there = places
    never = here.tmp / "never"  # t1 waits for it; nobody creates it
    spec = here.write_spec("stopped", {"t1": [AT_GATE], "t2": []}, gate=str(never))
    run_id = here.submit(spec)
    worker = here.start_worker("w")
    wait_until(lambda: ran(here, run_id) == ["t1"], "the worker started t1", timeout=60)
    wait_until(lambda: bool(gate_waiters(worker.pid, never)), "t1's command waits at its gate")

    cancelled = there.cli("cancel", run_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert f"to cancel run '{run_id}'" in cancelled.stderr
    wait_until(lambda: run_state(here, run_id) == "cancelled", "the run was cancelled", timeout=60)
    wait_until(lambda: not gate_waiters(worker.pid, never), "t1's command was stopped")
    with here.store() as store:
        assert {t.task_id: t.state for t in store.task_runs(run_id)} == {
            "t1": "cancelled",
            "t2": "cancelled",
        }
        assert [(a.task_id, a.state) for a in store.attempts(run_id)] == [("t1", "cancelled")]
    assert ran(here, run_id) == ["t1"]  # t2 never started

    # The worker goes on serving: the next run is claimed and runs to its end.
    follow = here.submit(here.write_spec("next", {"n1": [], "n2": []}))
    wait_until(lambda: run_state(here, follow) == "success", "the next run ended", timeout=60)
    assert worker.poll() is None
    assert Counter((r, t, pid) for r, t, pid in here.rows() if r == follow) == Counter(
        {(follow, "n1", worker.pid): 1, (follow, "n2", worker.pid): 1}
    )
    stop_worker(here, "w")


def test_approve_from_another_home_runs_the_gated_task(places: tuple[Place, Place]) -> None:
    here, there = places
    other = "bob" if me() == "alice" else "alice"  # an approver, but not the caller
    spec = here.tmp / "gated.json"
    spec.write_text(
        json.dumps(
            {
                "name": "gated",
                "params": {"ledger": str(here.ledger)},
                "tasks": [
                    {"id": "stage", "operator": "bash", "parameters": {"command": LEDGER}},
                    {
                        "id": "deploy",
                        "operator": "bash",
                        "upstream": ["stage"],
                        "parameters": {"command": LEDGER},
                        "approval": {"message": "Promote?", "approvers": [me(), other]},
                    },
                ],
            }
        )
    )
    run_id = here.submit(spec)
    here.start_worker("w")

    def awaiting() -> bool:
        with here.store() as store:
            return any(
                t.task_id == "deploy" and t.state == "awaiting_approval"
                for t in store.task_runs(run_id)
            )

    wait_until(awaiting, "deploy awaits approval", timeout=60)
    claimed = there.cli("approve", run_id, "deploy", "--by", other)
    assert claimed.returncode == 2, claimed.stderr
    assert f"--by {other}: without a server you act as your operating-system user" in (
        claimed.stderr
    )
    with here.store() as store:
        assert store.requests(run_id) == []
    assert ran(here, run_id) == ["stage"]

    approved = there.cli("approve", run_id, "deploy")

    assert approved.returncode == 0, approved.stderr
    assert f"approved task 'deploy' of run '{run_id}' as {me()};" in approved.stderr
    wait_until(lambda: run_state(here, run_id) == "success", "the run ended", timeout=60)
    assert ran(here, run_id) == ["stage", "deploy"]
    with here.store() as store:
        deploy = [(f, t) for task, f, t in task_events(store, run_id) if task == "deploy"]
        assert deploy[:2] == [("pending", "awaiting_approval"), ("awaiting_approval", "queued")]
        assert [(r.request, r.requested_by) for r in store.requests(run_id)] == [("approve", me())]
    stop_worker(here, "w")
