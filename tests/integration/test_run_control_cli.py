"""Run control on real runs: ``cancel``, ``pause``/``unpause``, ``retry``, ``approve``.

A ``stageflow run`` subprocess runs the pipeline; the control commands come from
other ``stageflow`` subprocesses, through the store (``runtime.control``). Tasks
are ``bash`` one-liners that leave evidence in files (``O_APPEND`` lines), and
the tests wait on that evidence or on committed store state with deadlines,
never with fixed sleeps. The user-mistake table calls the CLI in-process
(``main``), against runs written straight into a store, since only the exit
code and message matter there.

Without a server, who asks is the operating-system user running the command (by
effective uid, ``me()``): ``--by`` may only repeat that name, and ``$USER`` or
``$LOGNAME`` change nothing. An approval gate's ``approvers`` name ``me()`` where
the test decides it, and other people where it must be refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import psutil
import pytest
from helpers_tasks import (
    SEED_VARS,
    clean_environ,
    me,
    ok,
    pid_gone,
    read_lines,
    store_of,
    wait_cancelled,
    wait_until,
)

from stageflow.engine import Scheduler
from stageflow.engine.scheduler import EnginePlan
from stageflow.runtime.control import RunControl, cancel_run, decide_approval
from stageflow.runtime.store import (
    Batch,
    PipelineRecord,
    RunRecord,
    Store,
    TaskRunRecord,
    open_store,
)
from stageflow.runtime.store.base import AttemptRecord, ControlRequest
from stageflow.service.cli import main
from stageflow.spec.models import Approval, Pipeline, Task
from support.postgres import postgres_schema, require_postgres

pytestmark = pytest.mark.slow

STAGEFLOW = Path(sys.executable).with_name("stageflow")
HERE = Path(__file__).resolve().parent
EXECUTORS = [pytest.param("thread", id="thread"), pytest.param("process", id="process")]
ME = me()
#: Two people who are not the caller, so that naming them claims someone else.
ALICE, BOB = [name for name in ("alice", "bob", "carol") if name != ME][:2]


def someone_else_refused(name: str) -> str:
    """What the CLI says to ``--by NAME`` when NAME is not the caller."""
    return (
        f"--by {name}: without a server you act as your operating-system user ({ME}); "
        f"run the command as {name}, or through a server with {name}'s token "
        "(--server, STAGEFLOW_TOKEN)"
    )


# -- helpers -----------------------------------------------------------------------------


def spec(name: str, *tasks: dict[str, Any]) -> str:
    """A pipeline of ``bash`` tasks: each dict is a task; ``sh`` is its command."""
    lines = [f"name: {name}", "tasks:"]
    for task in tasks:
        fields = {k: v for k, v in task.items() if k != "sh"}
        fields |= {"operator": "bash", "parameters": {"command": task["sh"]}}
        lines.append(f"  - {json.dumps(fields)}")
    return "\n".join(lines) + "\n"


def q(path: Path) -> str:
    return shlex.quote(str(path))


def env(**extra: str) -> dict[str, str]:
    out = clean_environ(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), out.get("PYTHONPATH")]))
    return out | extra


class Running:
    """A ``stageflow run`` subprocess and the files its output goes to."""

    def __init__(self, proc: subprocess.Popen[bytes], out: IO[bytes], err: IO[bytes]) -> None:
        self.proc, self.out, self.err = proc, out, err

    def alive(self) -> bool:
        assert self.proc.poll() is None, f"the run ended early: {self.stderr()}"
        return True

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def finish(self, timeout: float = 60) -> tuple[int, dict[str, Any]]:
        """Wait for the run's end: its exit code and ``--format json`` document."""
        code = self.proc.wait(timeout=timeout)
        self.out.seek(0)
        text = self.out.read().decode()
        assert text, f"no JSON on stdout (exit {code}): {self.stderr()}"
        return code, json.loads(text)


@contextmanager
def cli_run(home: Path, pipeline: Path, *args: str) -> Iterator[Running]:
    """``stageflow run PIPELINE --format json`` in a session of its own; killed on exit."""
    out = (home.parent / f"{home.name}-stdout").open("w+b")
    err = (home.parent / f"{home.name}-stderr").open("w+b")
    proc = subprocess.Popen(
        [str(STAGEFLOW), "--home", str(home), "run", str(pipeline), "--format", "json", *args],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        env=env(),
        start_new_session=True,
    )
    try:
        yield Running(proc, out, err)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
        out.close()
        err.close()


def cli(home: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env(**extra_env),
        timeout=120,
        check=False,
    )


def the_run_id(home: Path, running: Running) -> str:
    found: list[str] = []

    def created() -> bool:
        running.alive()
        if (home / "stageflow.db").exists():
            with store_of(home) as store:
                found.extend(r.run_id for r in store.list_runs())
        return bool(found)

    wait_until(created, "the run is created", timeout=60)
    return found[0]


def wait_for(home: Path, running: Running | None, what: str, check: Any) -> None:
    """Wait until ``check(store)`` holds, reading committed state (one connection)."""
    with store_of(home) as store:
        wait_until(lambda: (running is None or running.alive()) and check(store), what, 60)


def task_state(store: Store, run_id: str, task_id: str) -> str:
    return {r.task_id: r.state for r in store.task_runs(run_id)}[task_id]


def states(doc: dict[str, Any]) -> dict[str, str]:
    return {tid: t["state"] for tid, t in doc["tasks"].items()}


def run_events(store: Store, run_id: str) -> list[tuple[str | None, str, str | None]]:
    return [(e.from_state, e.to_state, e.message) for e in store.events(run_id) if not e.task_id]


def task_events(
    store: Store, run_id: str, task_id: str
) -> list[tuple[str | None, str, str | None]]:
    return [
        (e.from_state, e.to_state, e.message) for e in store.events(run_id) if e.task_id == task_id
    ]


# -- cancel -----------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cancel_from_another_process_stops_running_attempts(executor: str, tmp_path: Path) -> None:
    home, pids = tmp_path / "home", tmp_path / "pids"
    pipeline = tmp_path / "cancel.yaml"
    sleeper = f"echo $$ >> {q(pids)}; exec sleep 60"
    pipeline.write_text(
        spec(
            "cancel",
            {"id": "first", "sh": "true"},
            {"id": "slow_a", "upstream": ["first"], "sh": sleeper},
            {"id": "slow_b", "upstream": ["first"], "sh": sleeper},
            {"id": "after", "upstream": ["slow_a"], "sh": "true"},
        )
    )

    with cli_run(home, pipeline, "--executor", executor, "--max-parallel", "4") as running:
        wait_until(lambda: running.alive() and len(read_lines(pids)) == 2, "both started", 60)
        run_id = the_run_id(home, running)

        r = cli(home, "cancel", run_id)

        assert r.returncode == 0, r.stderr
        assert f"to cancel run '{run_id}'" in r.stderr
        code, doc = running.finish()
    assert code == 1, running.stderr()
    assert doc["state"] == "cancelled"
    assert states(doc) == {
        "first": "success",
        "slow_a": "cancelled",
        "slow_b": "cancelled",
        "after": "cancelled",
    }
    for pid in read_lines(pids):
        wait_until(lambda pid=pid: pid_gone(int(pid)), f"the attempt's process {pid} is gone")
    with store_of(home) as store:
        assert store.get_run(run_id).state == "cancelled"
        (last,) = run_events(store, run_id)[-1:]
        assert last[:2] == ("running", "cancelled")
        assert (last[2] or "").startswith(f"cancelled by {ME} (requested at ")
        assert [(a.task_id, a.state) for a in store.attempts(run_id) if a.task_id != "first"] == [
            ("slow_a", "cancelled"),
            ("slow_b", "cancelled"),
        ]


# -- pause / unpause --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["unpause", "resume"])
def test_pause_lets_running_tasks_finish_and_starts_none_until_unpaused(
    command: str, tmp_path: Path
) -> None:
    home, ledger, release = tmp_path / "home", tmp_path / "ledger", tmp_path / "release"
    pipeline = tmp_path / "pause.yaml"
    pipeline.write_text(
        spec(
            "pause",
            {
                "id": "a",
                "sh": f"echo a >> {q(ledger)}; while [ ! -e {q(release)} ]; do sleep 0.02; done",
            },
            {"id": "b", "upstream": ["a"], "sh": f"echo b >> {q(ledger)}"},
        )
    )

    with cli_run(home, pipeline) as running:
        wait_until(lambda: running.alive() and read_lines(ledger) == ["a"], "a started", 60)
        run_id = the_run_id(home, running)

        r = cli(home, "pause", run_id, "--by", ME)  # one's own name: accepted

        assert r.returncode == 0, r.stderr
        assert "no new task starts" in r.stderr
        wait_for(home, running, "the run is paused", lambda s: s.get_run(run_id).state == "paused")
        release.touch()
        wait_for(home, running, "a succeeded", lambda s: task_state(s, run_id, "a") == "success")
        with store_of(home) as store:
            # Unpaused, b would have started in the tick that committed a's success.
            assert task_state(store, run_id, "b") == "queued"
        assert read_lines(ledger) == ["a"]
        again = cli(home, "pause", run_id)
        assert again.returncode == 0, again.stderr
        assert "is already paused" in again.stderr

        r = cli(home, command, run_id)

        assert r.returncode == 0, r.stderr
        assert f"to continue run '{run_id}'" in r.stderr
        code, doc = running.finish()
    assert code == 0, running.stderr()
    assert states(doc) == {"a": "success", "b": "success"}
    assert read_lines(ledger) == ["a", "b"]
    with store_of(home) as store:
        events = run_events(store, run_id)
    assert [e[:2] for e in events] == [
        ("queued", "running"),
        ("running", "paused"),
        ("paused", "running"),
        ("running", "success"),
    ]
    assert (events[1][2] or "").startswith(f"paused by {ME} (requested at ")
    assert (events[2][2] or "").startswith(f"unpaused by {ME} (requested at ")


# -- retry ------------------------------------------------------------------------------


def test_retry_reruns_failed_tasks_then_from_a_task_reruns_it_and_its_downstream(
    tmp_path: Path,
) -> None:
    home, ledger, flag = tmp_path / "home", tmp_path / "ledger", tmp_path / "flag"
    pipeline = tmp_path / "retry.yaml"

    def step(tid: str) -> str:
        return f"echo {tid} >> {q(ledger)}"

    pipeline.write_text(
        spec(
            "retry",
            {"id": "first", "sh": step("first")},
            {"id": "gate", "upstream": ["first"], "sh": f"{step('gate')}; test -e {q(flag)}"},
            {"id": "last", "upstream": ["gate"], "sh": step("last")},
            {"id": "side", "upstream": ["first"], "sh": step("side")},
        )
    )
    failed = cli(home, "run", str(pipeline), "--format", "json")
    assert failed.returncode == 1, failed.stderr
    run_id = json.loads(failed.stdout)["run_id"]
    flag.touch()

    r = cli(home, "retry", run_id, "--format", "json")

    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["run_id"], doc["state"]) == (run_id, "success")
    attempts = {tid: t["attempts"] for tid, t in doc["tasks"].items()}
    assert attempts == {"first": 1, "gate": 2, "last": 1, "side": 1}
    assert sorted(read_lines(ledger)) == ["first", "gate", "gate", "last", "side"]

    r = cli(home, "retry", run_id, "--from", "gate", "--format", "json")

    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    attempts = {tid: t["attempts"] for tid, t in doc["tasks"].items()}
    assert attempts == {"first": 1, "gate": 3, "last": 2, "side": 1}
    assert sorted(read_lines(ledger)) == ["first", "gate", "gate", "gate", "last", "last", "side"]
    with store_of(home) as store:
        resets = [
            (e.task_id, e.from_state, e.message)
            for e in store.events(run_id)
            if e.to_state == "pending" and e.from_state != "pending" and e.task_id
        ]
        assert [e[:2] for e in resets] == [
            ("gate", "failed"),
            ("last", "upstream_failed"),
            ("gate", "success"),
            ("last", "success"),
        ]
        assert all(m and m.startswith("reset by retry (by ") for _, _, m in resets[:2])
        assert all(m and m.startswith("reset by retry --from gate (by ") for _, _, m in resets[2:])
        assert [e[:2] for e in run_events(store, run_id)] == [
            ("queued", "running"),
            ("running", "failed"),
            ("failed", "running"),
            ("running", "success"),
            ("success", "running"),
            ("running", "success"),
        ]
        assert [(a.task_id, a.attempt, a.state) for a in store.attempts(run_id, "gate")] == [
            ("gate", 1, "failed"),
            ("gate", 2, "success"),
            ("gate", 3, "success"),
        ]


# -- approval gates ---------------------------------------------------------------------


def gated_pipeline(
    tmp_path: Path, ledger: Path, timeout: float, approvers: list[str] | None = None
) -> Path:
    """``deploy`` waits for approval by ``approvers`` (default: the caller and ALICE)."""
    pipeline = tmp_path / "gated.yaml"
    pipeline.write_text(
        spec(
            "gated",
            {"id": "stage", "sh": "true"},
            {
                "id": "deploy",
                "upstream": ["stage"],
                "sh": f"echo deploy >> {q(ledger)}",
                "approval": {
                    "message": "Promote to production?",
                    "timeout_seconds": timeout,
                    "approvers": [ME, ALICE] if approvers is None else approvers,
                },
            },
            {"id": "notify", "upstream": ["deploy"], "sh": f"echo notify >> {q(ledger)}"},
            {
                "id": "cleanup",
                "upstream": ["deploy"],
                "trigger_rule": "one_failed",
                "sh": f"echo cleanup >> {q(ledger)}",
            },
        )
    )
    return pipeline


def awaiting(run_id: str) -> Any:
    return lambda store: task_state(store, run_id, "deploy") == "awaiting_approval"


def undecided(home: Path, run_id: str) -> None:
    """The gate of ``deploy`` still waits: nothing was asked, the run still runs."""
    with store_of(home) as store:
        assert store.requests(run_id) == []
        assert task_state(store, run_id, "deploy") == "awaiting_approval"
        assert store.get_run(run_id).state == "running"


def test_approve_runs_the_gated_task_as_the_os_user_and_not_as_a_claimed_name(
    tmp_path: Path,
) -> None:
    home, ledger = tmp_path / "home", tmp_path / "ledger"

    with cli_run(home, gated_pipeline(tmp_path, ledger, timeout=300)) as running:
        run_id = the_run_id(home, running)
        wait_for(home, running, "deploy awaits approval", awaiting(run_id))
        assert "awaits approval: Promote to production?" in running.stderr()

        # ALICE is an approver, but the caller cannot say it is ALICE.
        for reject in ([], ["--reject"]):
            claimed = cli(home, "approve", run_id, "deploy", *reject, "--by", ALICE)

            assert claimed.returncode == 2, claimed.stderr
            assert claimed.stderr == f"error: {someone_else_refused(ALICE)}\n"
            undecided(home, run_id)

        r = cli(home, "approve", run_id, "deploy", "--comment", "lgtm")

        assert r.returncode == 0, r.stderr
        assert f"as {ME};" in r.stderr
        assert "approved task 'deploy'" in r.stderr
        code, doc = running.finish()
    assert code == 0, running.stderr()
    assert states(doc) == {
        "stage": "success",
        "deploy": "success",
        "notify": "success",
        "cleanup": "skipped",
    }
    assert read_lines(ledger) == ["deploy", "notify"]
    with store_of(home) as store:
        events = task_events(store, run_id, "deploy")
        assert [e[:2] for e in events] == [
            ("pending", "awaiting_approval"),
            ("awaiting_approval", "queued"),
            ("queued", "running"),
            ("running", "success"),
        ]
        assert events[0][2] == "Promote to production?"
        message = events[1][2] or ""
        assert message.startswith(f"approved by {ME} at ")
        assert message.endswith(": lgtm")
        assert [(r.request, r.requested_by) for r in store.requests(run_id)] == [("approve", ME)]


def test_only_approvers_decide_and_user_or_logname_do_not_make_the_caller_one(
    tmp_path: Path,
) -> None:
    home, ledger = tmp_path / "home", tmp_path / "ledger"
    pipeline = gated_pipeline(tmp_path, ledger, timeout=300, approvers=[ALICE, BOB])
    claim = {name: ALICE for name in ("USER", "LOGNAME", "LNAME", "USERNAME")}

    with cli_run(home, pipeline) as running:
        run_id = the_run_id(home, running)
        wait_for(home, running, "deploy awaits approval", awaiting(run_id))

        for reject in ([], ["--reject"]):
            refused = cli(home, "approve", run_id, "deploy", *reject, **claim)

            assert refused.returncode == 1, refused.stderr
            assert refused.stderr.startswith(
                f"error: '{ME}' may not decide the approval of task 'deploy' in run '{run_id}'; "
                f"its approvers are: {ALICE}, {BOB}; ask one of them to decide it"
            ), refused.stderr
            assert "Traceback" not in refused.stderr
            undecided(home, run_id)
        claimed = cli(home, "approve", run_id, "deploy", "--by", ALICE, **claim)
        assert claimed.returncode == 2, claimed.stderr
        assert someone_else_refused(ALICE) in claimed.stderr
        undecided(home, run_id)

        r = cli(home, "cancel", run_id, **claim)

        assert r.returncode == 0, r.stderr
        code, doc = running.finish()
    assert code == 1, running.stderr()
    assert states(doc)["deploy"] == "cancelled"
    assert read_lines(ledger) == []
    with store_of(home) as store:
        assert [(r.request, r.requested_by) for r in store.requests(run_id)] == [("cancel", ME)]
        assert (run_events(store, run_id)[-1][2] or "").startswith(f"cancelled by {ME} ")


def test_reject_fails_the_gated_task_and_downstream_follow_their_rules(tmp_path: Path) -> None:
    home, ledger = tmp_path / "home", tmp_path / "ledger"

    with cli_run(home, gated_pipeline(tmp_path, ledger, timeout=300)) as running:
        run_id = the_run_id(home, running)
        wait_for(home, running, "deploy awaits approval", awaiting(run_id))

        r = cli(home, "approve", run_id, "deploy", "--reject", "--by", ME, "--comment", "no")

        assert r.returncode == 0, r.stderr
        assert "rejected task 'deploy'" in r.stderr
        code, doc = running.finish()
    assert code == 1, running.stderr()
    assert states(doc) == {
        "stage": "success",
        "deploy": "failed",
        "notify": "upstream_failed",
        "cleanup": "success",
    }
    assert doc["tasks"]["deploy"]["attempts"] == 0
    assert doc["tasks"]["deploy"]["error"].startswith(f"rejected by {ME} at ")
    assert read_lines(ledger) == ["cleanup"]


def test_an_undecided_approval_times_out_and_fails(tmp_path: Path) -> None:
    home, ledger = tmp_path / "home", tmp_path / "ledger"

    with cli_run(home, gated_pipeline(tmp_path, ledger, timeout=0.3)) as running:
        code, doc = running.finish()

    assert code == 1, running.stderr()
    assert states(doc)["deploy"] == "failed"
    assert doc["tasks"]["deploy"]["error"] == (
        "approval timed out: no decision within 0.3s (approval.timeout_seconds)"
    )
    assert states(doc)["cleanup"] == "success"
    assert read_lines(ledger) == ["cleanup"]


# -- the in-process API -------------------------------------------------------------------


@contextmanager
def backend_url(name: str) -> Iterator[str | None]:
    """``None`` (SQLite in the home) or the URL of a fresh PostgreSQL schema."""
    if name == "sqlite":
        yield None
        return
    require_postgres()
    with postgres_schema() as url:
        yield url


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_sdk_approve_and_cancel_from_another_thread(backend: str, tmp_path: Path) -> None:
    pipeline = Pipeline(
        "sdk",
        tasks=[
            Task("gated", ok, approval=Approval(message="go?")),
            Task("blocker", wait_cancelled),
        ],
    )
    with backend_url(backend) as url:
        results: list[Any] = []

        def run() -> None:
            try:
                results.append(pipeline.run(home=str(tmp_path), store_url=url))
            except BaseException as exc:  # reported by the assertion below
                results.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        store = open_store(url, tmp_path)
        try:
            run_ids: list[str] = []

            def gated_waits() -> bool:
                assert not results, results
                runs = store.list_runs()
                if runs and task_state(store, runs[0].run_id, "gated") == "awaiting_approval":
                    run_ids.append(runs[0].run_id)
                return bool(run_ids)

            wait_until(gated_waits, "the gated task awaits approval", 60)
            run_id = run_ids[0]

            message = decide_approval(run_id, "gated", by="erin", home=tmp_path, store_url=url)

            assert "approved task 'gated'" in message
            wait_until(lambda: task_state(store, run_id, "gated") == "success", "gated ran", 60)
            assert "to cancel run" in cancel_run(run_id, by="erin", home=tmp_path, store_url=url)
            thread.join(timeout=60)
            events = run_events(store, run_id)
        finally:
            thread.join(timeout=60)
            store.close()
    (result,) = results
    assert result.state == "cancelled"
    assert {t: r.state for t, r in result.tasks.items()} == {
        "gated": "success",
        "blocker": "cancelled",
    }
    assert events[-1][:2] == ("running", "cancelled")
    assert (events[-1][2] or "").startswith("cancelled by erin")


# -- runs that no live process runs, and the requests table ---------------------------------


def made_spec(approvers: list[str]) -> dict[str, Any]:
    """The pipeline of the made runs: ``deploy`` is gated, decided by ``approvers``."""
    return {
        "name": "made",
        "tasks": [
            {
                "id": "deploy",
                "operator": "bash",
                "parameters": {"command": "true"},
                "approval": {"message": "ok?", "approvers": approvers},
            },
            {"id": "plain", "operator": "bash", "parameters": {"command": "true"}},
            {"id": "later", "operator": "bash", "parameters": {"command": "true"}, "approval": {}},
        ],
    }


def make_run(
    store: Store, run_id: str, state: str, *, live: bool, approvers: tuple[str, ...] = (ALICE,)
) -> None:
    """A run written straight into the store; ``live``: owned by this (live) process,
    with a live lease, else by a process that is gone (its start time does not match)
    and whose lease expired long ago. ``deploy`` awaits ``approvers``' decision (by
    default someone other than the caller); each list is a version of the pipeline."""
    spec = json.dumps(made_spec(list(approvers)))
    version = hashlib.sha256(spec.encode()).hexdigest()[:12]
    store.save_pipeline(PipelineRecord("made", version, spec, 1.0))
    store.create_run(
        RunRecord(run_id, "made", version, state, {}, 1.0), ["deploy", "plain", "later"]
    )
    started = psutil.Process().create_time() if live else 0.0
    store.claim_run(
        run_id,
        owner=f"{socket.gethostname()}:{os.getpid()}",
        expected_epoch=0,
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=started,
        now=time.time() if live else 2.0,
        ttl=3600.0 if live else 15.0,
    )
    final = state in ("success", "failed", "cancelled")
    store.commit(
        Batch(
            task_runs=[
                TaskRunRecord(run_id, "deploy", "success" if final else "awaiting_approval"),
                TaskRunRecord(run_id, "plain", "success" if final else "running", attempts=1),
                TaskRunRecord(run_id, "later", "success" if final else "pending"),
            ],
            attempts=[] if final else [AttemptRecord(run_id, "plain", 1, "running", 2.0)],
        )
    )


@pytest.fixture(scope="module")
def made_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("made")
    with store_of(home) as store:
        make_run(store, "done", "success", live=False)
        make_run(store, "live", "running", live=True)
        make_run(store, "crashed", "running", live=False, approvers=(ALICE, ME))
    return home


@pytest.fixture
def no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("STAGEFLOW_") or name in SEED_VARS:
            monkeypatch.delenv(name)


def call(home: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(["--home", str(home), *args])
    return int(info.value.code or 0)


MISTAKES = [
    # (arguments, exit code, part of the message), against made_home's runs:
    # done (succeeded), live (running in this process), crashed (its process is gone).
    # ALICE alone decides live's deploy; the caller (ME) may decide crashed's.
    (("cancel", "done"), 1, "run 'done' already ended (success); nothing to cancel"),
    (("pause", "done"), 1, "already ended (success); nothing to pause"),
    (("unpause", "done"), 1, "nothing to unpause"),
    (("approve", "done", "deploy"), 1, "nothing to approve"),
    (("retry", "done"), 1, "run 'done' succeeded; nothing to retry"),
    (("retry", "done", "--from", "deplyo"), 2, "no task 'deplyo'; did you mean 'deploy'?"),
    (("retry", "done", "--from", "../x"), 2, "--from: task id '../x' is invalid"),
    (("cancel", "nope"), 1, "no run 'nope' in the store"),
    (("approve", "nope", "deploy"), 1, "no run 'nope'"),
    (("pause", "../x"), 2, "run id '../x' is invalid"),
    (("unpause", "a b"), 2, "run id 'a b' is invalid"),
    (("cancel", ""), 2, "run id is empty"),
    (("approve", "live", "../x"), 2, "TASK: task id '../x' is invalid"),
    (("approve", "live", "deplo"), 2, "run 'live' has no task 'deplo'; did you mean 'deploy'?"),
    (("approve", "live", "plain"), 1, "task 'plain' of run 'live' has no approval gate"),
    (("approve", "live", "later"), 1, "task 'later' of run 'live' is pending, not awaiting"),
    (("approve", "live", "deploy"), 1, f"'{ME}' may not decide the approval of task 'deploy'"),
    (("approve", "live", "deploy"), 1, f"its approvers are: {ALICE}; ask one of them to decide"),
    (("approve", "live", "deploy", "--reject"), 1, f"'{ME}' may not decide the approval of"),
    (("approve", "live", "deploy", "--by", " "), 2, "--by ' ': give a name"),
    (("unpause", "live"), 1, "run 'live' is running, not paused"),
    (("pause", "crashed"), 1, "cannot pause run 'crashed': no live process runs it"),
    (("approve", "crashed", "deploy"), 1, "cannot approve run 'crashed'"),
    # Without a server, --by may only name the caller (ALICE is deploy's approver).
    (("approve", "live", "deploy", "--by", ALICE), 2, someone_else_refused(ALICE)),
    (("approve", "live", "deploy", "--reject", "--by", ALICE), 2, someone_else_refused(ALICE)),
    (("cancel", "live", "--by", BOB), 2, someone_else_refused(BOB)),
    (("pause", "live", "--by", BOB), 2, someone_else_refused(BOB)),
    (("unpause", "live", "--by", BOB), 2, someone_else_refused(BOB)),
    (("cancel", "crashed", "--by", BOB), 2, someone_else_refused(BOB)),
]


@pytest.mark.usefixtures("no_settings_env")
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [pytest.param(*m, id=f"{i}-{'-'.join(m[0][:2]) or 'empty'}") for i, m in enumerate(MISTAKES)],
)
def test_user_mistakes(
    made_home: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    with store_of(made_home) as store:
        before = [(r.run_id, r.state) for r in store.list_runs()]
        rows_before = [store.task_runs(run_id) for run_id, _ in before]

    assert call(made_home, *args) == code

    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    with store_of(made_home) as store:
        assert store.requests(args[1] if len(args) > 1 else "") == []  # nothing was asked
        assert [(r.run_id, r.state) for r in store.list_runs()] == before  # nothing changed
        assert [store.task_runs(run_id) for run_id, _ in before] == rows_before


@pytest.mark.usefixtures("no_settings_env")
def test_requests_are_stored_with_who_when_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with store_of(tmp_path) as store:
        make_run(store, "live", "running", live=True, approvers=(ALICE, ME))

    assert call(tmp_path, "pause", "live", "--by", ME) == 0
    assert call(tmp_path, "approve", "live", "deploy", "--comment", "ok") == 0
    assert call(tmp_path, "approve", "live", "deploy", "--reject", "--by", f" {ME} ") == 0
    assert call(tmp_path, "cancel", "live") == 0

    err = capsys.readouterr().err
    assert f"asked process {os.getpid()} to pause run 'live'" in err
    assert f"approved task 'deploy' of run 'live' as {ME};" in err
    with store_of(tmp_path) as store:
        requests = store.requests("live")
    assert [(r.request, r.task_id, r.requested_by, r.comment) for r in requests] == [
        ("pause", None, ME, None),
        ("approve", "deploy", ME, "ok"),
        ("reject", "deploy", ME, None),
        ("cancel", None, ME, None),
    ]
    assert [r.request_id for r in requests] == sorted({r.request_id for r in requests})
    assert all(r.requested_at > 1e9 for r in requests)


@pytest.mark.usefixtures("no_settings_env")
def test_cancel_of_a_run_no_live_process_runs_ends_it_in_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with store_of(tmp_path) as store:
        make_run(store, "crashed", "running", live=False)

    assert call(tmp_path, "cancel", "crashed") == 0

    assert "was not running in any live process; cancelled it in the store" in (
        capsys.readouterr().err
    )
    with store_of(tmp_path) as store:
        run = store.get_run("crashed")
        assert (run.state, run.ended_at is not None) == ("cancelled", True)
        rows = {r.task_id: (r.state, r.error) for r in store.task_runs("crashed")}
        why = f"cancelled by {ME} (no live process ran the run)"
        assert rows == {
            "deploy": ("cancelled", why),
            "plain": ("cancelled", why),
            "later": ("cancelled", why),
        }
        assert [(a.task_id, a.state) for a in store.attempts("crashed")] == [("plain", "cancelled")]
        assert run_events(store, "crashed")[-1] == ("running", "cancelled", why)
    assert call(tmp_path, "cancel", "crashed") == 1


def test_a_process_that_takes_a_run_over_ignores_earlier_requests(tmp_path: Path) -> None:
    with store_of(tmp_path) as store:
        make_run(store, "r", "running", live=True)
        store.add_request(ControlRequest("r", "cancel", 3.0, "old"))
        plan = EnginePlan.from_pipeline(Pipeline("made", tasks=[Task("t", ok)]))

        def poll(control: RunControl) -> Scheduler:
            sched = Scheduler(plan)
            sched.start(10.0)
            control.poll(sched, 10.0, Batch(), lambda transitions, batch: None)
            return sched

        resumed = RunControl.for_run(store, "r", {}, 10.0)
        fresh = RunControl(store, "r", {}, 10.0)

        assert not poll(resumed).finished and not resumed.cancelled
        assert poll(fresh).finished and fresh.cancelled
        assert fresh.message and fresh.message.startswith("cancelled by old")
        assert resumed.next_poll == 10.25  # polled again POLL_SECONDS later
