"""Crash safety, proven with a real ``kill -9``: a ``stageflow run`` CLI process (and
its worker processes) is killed mid-run, then ``stageflow resume`` finishes the run.

DESIGN.md's durability rule: after a crash at any instant, resume re-runs exactly
the tasks without a committed ``success`` and never one that has it. Every task
appends its id to a ledger file when it starts, so the ledger shows which tasks
really ran, and how often, across the crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from helpers_places import kill_group
from helpers_tasks import (
    assert_durable_and_causal,
    clean_environ,
    read_lines,
    store_of,
    wait_until,
)

pytestmark = pytest.mark.slow

STAGEFLOW = Path(sys.executable).with_name("stageflow")
HERE = Path(__file__).resolve().parent
EXECUTORS = [pytest.param("thread", id="thread"), pytest.param("process", id="process")]

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


def _spec(name: str, call: str, upstream: dict[str, list[str]], params: dict[str, str]) -> str:
    lines = [f"name: {name}", f"params: {json.dumps(params)}", "tasks:"]
    for tid, ups in upstream.items():
        lines.append(f"  - {{id: {tid}, call: '{call}', upstream: {json.dumps(ups)}}}")
    return "\n".join(lines) + "\n"


def _env() -> dict[str, str]:
    env = clean_environ(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


@contextmanager
def cli_run(home: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """``stageflow run`` in a session (process group) of its own; killed on the way out."""
    err = (home.parent / f"{home.name}-stderr.log").open("w+b")
    proc = subprocess.Popen(
        [str(STAGEFLOW), "--home", str(home), "run", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err,
        env=_env(),
        start_new_session=True,
    )
    try:
        yield proc, err
    finally:
        if proc.poll() is None:
            kill_group(proc)
        err.close()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=_env(),
        timeout=120,
        check=False,
    )


def only_run_id(home: Path) -> str:
    with store_of(home) as store:
        (run,) = store.list_runs()
    return run.run_id


def stderr_of(err: IO[bytes]) -> str:
    err.seek(0)
    return err.read().decode(errors="replace")


# -- kill -9 mid-run, then resume ----------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_kill_9_mid_run_then_resume_repeats_no_committed_task(
    executor: str, tmp_path: Path
) -> None:
    home, ledger = tmp_path / "home", tmp_path / "ledger"
    spec = tmp_path / "crash.yaml"
    spec.write_text(_spec("crash", "helpers_tasks:ledger_step", UPSTREAM, {"ledger": str(ledger)}))

    with cli_run(home, str(spec), "--executor", executor, "--max-parallel", "2") as (proc, err):

        def five_started() -> bool:
            assert proc.poll() is None, f"the run ended before the kill: {stderr_of(err)}"
            return len(read_lines(ledger)) >= 5

        wait_until(five_started, "five tasks have started", timeout=60)
        kill_group(proc)
    at_kill = read_lines(ledger)

    run_id = only_run_id(home)
    with store_of(home) as store:
        assert store.get_run(run_id).state == "running"  # the crash left it unfinished
        committed = {r.task_id for r in store.task_runs(run_id) if r.state == "success"}
    assert "ingest" in committed  # its success was committed long before the kill
    assert committed < set(UPSTREAM)
    assert committed <= set(at_kill)

    r = cli(home, "resume", run_id, "--executor", executor, "--format", "json")

    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "success"
    ledger_lines = read_lines(ledger)
    assert ledger_lines[: len(at_kill)] == at_kill
    after_kill = Counter(ledger_lines[len(at_kill) :])
    total = Counter(ledger_lines)
    for tid in UPSTREAM:
        assert total[tid] >= 1, f"{tid} never ran"
        if tid in committed:
            assert total[tid] == 1, f"{tid} had a committed success but ran again"
            assert after_kill[tid] == 0
    with store_of(home) as store:
        assert store.get_run(run_id).state == "success"
        rows = store.task_runs(run_id)
        assert {r.task_id: r.state for r in rows} == dict.fromkeys(UPSTREAM, "success")
        successes = Counter(
            e.task_id for e in store.events(run_id) if e.to_state == "success" and e.task_id
        )
        assert successes == Counter(dict.fromkeys(UPSTREAM, 1))
        assert_durable_and_causal(store, UPSTREAM, run_id)
        assert store.outputs(run_id)["report"].data == b'"report"'


# -- resume refused while the run is alive -------------------------------------------------


def test_resume_is_refused_while_the_owner_still_runs(tmp_path: Path) -> None:
    home, release, started = tmp_path / "home", tmp_path / "release", tmp_path / "started"
    spec = tmp_path / "slow.yaml"
    spec.write_text(
        _spec(
            "slow",
            "helpers_tasks:wait_for_file",
            {"slow": [], "after": ["slow"]},
            {"release": str(release), "started": str(started)},
        )
    )

    with cli_run(home, str(spec)) as (proc, err):
        wait_until(lambda: read_lines(started) == ["slow"], "the slow task started", 60)
        run_id = only_run_id(home)

        r = cli(home, "resume", run_id)

        assert r.returncode == 1, r
        assert f"run '{run_id}' is still running in process {proc.pid}" in r.stderr
        assert "Traceback" not in r.stderr
        assert proc.poll() is None
        release.touch()
        assert proc.wait(timeout=60) == 0, stderr_of(err)
    assert read_lines(started) == ["slow", "after"]
    with store_of(home) as store:
        assert store.get_run(run_id).state == "success"


# -- resume after fixing the cause of a failure --------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_resume_reruns_a_failed_task_once_its_cause_is_fixed(executor: str, tmp_path: Path) -> None:
    home, ledger, flag = tmp_path / "home", tmp_path / "ledger", tmp_path / "flag"
    spec = tmp_path / "gate.yaml"
    spec.write_text(
        "name: gate\n"
        f"params: {json.dumps({'ledger': str(ledger), 'flag': str(flag)})}\n"
        "tasks:\n"
        "  - {id: first, call: 'helpers_tasks:ledger_step'}\n"
        "  - {id: gate, call: 'helpers_tasks:needs_flag', upstream: [first]}\n"
        "  - {id: last, call: 'helpers_tasks:ledger_step', upstream: [gate]}\n"
    )

    first = cli(home, "run", str(spec), "--executor", executor, "--format", "json")

    assert first.returncode == 1, first.stderr
    doc = json.loads(first.stdout)
    run_id = doc["run_id"]
    assert {t: v["state"] for t, v in doc["tasks"].items()} == {
        "first": "success",
        "gate": "failed",
        "last": "upstream_failed",
    }
    assert "flag file" in doc["tasks"]["gate"]["error"]
    flag.touch()

    r = cli(home, "resume", run_id, "--executor", executor, "--format", "json")

    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["run_id"], doc["state"]) == (run_id, "success")
    assert {t: v["attempts"] for t, v in doc["tasks"].items()} == {
        "first": 1,
        "gate": 2,
        "last": 1,
    }
    assert read_lines(ledger) == ["first", "gate", "gate", "last"]
    with store_of(home) as store:
        attempts = [(a.task_id, a.attempt, a.state) for a in store.attempts(run_id)]
        assert attempts == [
            ("first", 1, "success"),
            ("gate", 1, "failed"),
            ("gate", 2, "success"),
            ("last", 1, "success"),
        ]
        assert_durable_and_causal(store, {"first": [], "gate": ["first"], "last": ["gate"]}, run_id)
