"""Sensors in real ``stageflow run`` processes: 1,000 waiting file sensors take no
worker slot from a chain of ordinary tasks on 2 slots; a sensor times out (failed,
or skipped with ``soft_fail``); a task sensor reads another pipeline's latest run
from the store; a run killed while its sensor waits is resumed and waits again;
``examples/sensors.yaml`` runs once its file arrives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import pytest
from helpers_places import kill_group
from helpers_tasks import clean_environ, store_of, wait_until

from stageflow.runtime.artifacts import artifact_store, load_output

pytestmark = pytest.mark.slow

STAGEFLOW = Path(sys.executable).with_name("stageflow")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SENSORS = 1000


@contextmanager
def cli_run(
    home: Path, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """``stageflow run`` in a process group of its own; killed on the way out."""
    err = (home.parent / f"{home.name}-stderr.log").open("w+b")
    proc = subprocess.Popen(
        [str(STAGEFLOW), "--home", str(home), "run", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err,
        env={**clean_environ(os.environ), **(env or {})},
        start_new_session=True,
    )
    try:
        yield proc, err
    finally:
        if proc.poll() is None:
            kill_group(proc)
        err.close()


def cli(
    home: Path, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**clean_environ(os.environ), **(env or {})},
        timeout=180,
        check=False,
    )


def stderr_of(err: IO[bytes]) -> str:
    err.seek(0)
    return err.read().decode(errors="replace")


def task_states(home: Path, pipeline: str | None = None) -> tuple[str, dict[str, str]]:
    """The newest run (of ``pipeline``) and its tasks' states; ``("", {})`` before it exists."""
    with store_of(home) as store:
        runs = store.list_runs(limit=1, pipeline=pipeline)
        if not runs:
            return "", {}
        return runs[0].run_id, {r.task_id: r.state for r in store.task_runs(runs[0].run_id)}


def output_of(home: Path, run_id: str, task_id: str) -> Any:
    """A task's committed output, read back from the store."""
    with store_of(home) as store:
        ref = store.outputs(run_id)[task_id]
    return load_output(ref, artifact_store(str(home / "artifacts")))


def spec_with_many_sensors(path: Path) -> None:
    """1,000 file sensors on ``gate/open.flag``, two chains of 3 bash tasks, and
    ``end`` after all of them; every task asks for a CPU (the sensors too)."""
    sensors = [f"s{k:04d}" for k in range(SENSORS)]
    tasks: list[dict[str, Any]] = [
        {
            "id": sid,
            "operator": "sensor",
            "parameters": {"kind": "file", "path": "gate/*.flag", "poke_interval": "1s"},
        }
        for sid in sensors
    ]
    for chain in ("a", "b"):
        for k in range(1, 4):
            tasks.append(
                {
                    "id": f"{chain}{k}",
                    "operator": "bash",
                    "after": [f"{chain}{k - 1}"] if k > 1 else [],
                    "parameters": {"command": "sleep 0.2; echo done"},
                }
            )
    tasks.append(
        {
            "id": "end",
            "operator": "bash",
            "after": [*sensors, "a3", "b3"],
            "parameters": {"command": "echo end"},
        }
    )
    spec = {"name": "many_sensors", "defaults": {"resources": {"cpu": 1}}, "tasks": tasks}
    path.write_text(json.dumps(spec))


def test_1000_waiting_sensors_leave_two_slots_and_cpus_to_the_other_tasks(tmp_path: Path) -> None:
    home, spec = tmp_path / "home", tmp_path / "many.json"
    spec_with_many_sensors(spec)
    two_cpus = {"STAGEFLOW_MAX_CPU_CORES": "2"}
    with cli_run(home, str(spec), "--max-parallel", "2", cwd=tmp_path, env=two_cpus) as (
        proc,
        err,
    ):

        def chains_done() -> bool:
            assert proc.poll() is None, f"the run ended before the file came: {stderr_of(err)}"
            _, states = task_states(home)
            return states.get("a3") == "success" and states.get("b3") == "success"

        wait_until(chains_done, "both chains have finished", timeout=120)
        run_id, states = task_states(home)
        waiting = [tid for tid, s in states.items() if s == "sensing"]
        assert len(waiting) == SENSORS  # every sensor still waits, and took no slot
        assert states["end"] == "pending"
        show = cli(home, "runs", "show", run_id, cwd=tmp_path)
        assert "sensing" in show.stdout
        assert "waiting for file gate/*.flag: checked every 1s" in show.stdout

        (tmp_path / "gate").mkdir()
        (tmp_path / "gate" / "open.flag").write_text("")
        assert proc.wait(timeout=120) == 0, stderr_of(err)

    with store_of(home) as store:
        assert store.get_run(run_id).state == "success"
        rows = {r.task_id: r for r in store.task_runs(run_id)}
        assert {r.state for r in rows.values()} == {"success"}
        chains_end = max(rows[t].ended_at or 0 for t in ("a3", "b3"))
        assert min(rows[f"s{k:04d}"].ended_at or 0 for k in range(SENSORS)) > chains_end
        outputs = store.outputs(run_id)
        attempts = store.attempts(run_id, "s0007")
    assert set(outputs) >= {f"s{k:04d}" for k in range(SENSORS)}  # stored with the success
    assert [(a.attempt, a.state) for a in attempts][-1] == (1, "success")
    assert output_of(home, run_id, "s0007") == [str(tmp_path / "gate" / "open.flag")]


@pytest.mark.parametrize(
    ("soft_fail", "rc", "state", "downstream"),
    [
        pytest.param(False, 1, "failed", "upstream_failed", id="fails"),
        pytest.param(True, 0, "skipped", "skipped", id="soft-fail-skips"),
    ],
)
def test_a_sensor_times_out(
    tmp_path: Path, soft_fail: bool, rc: int, state: str, downstream: str
) -> None:
    home, spec = tmp_path / "home", tmp_path / "timeout.yaml"
    spec.write_text(
        "name: timeout\n"
        "tasks:\n"
        "  - id: wait\n"
        "    operator: sensor\n"
        "    parameters: {kind: file, path: never/*.csv, poke_interval: 0.5, timeout: 2s, "
        f"soft_fail: {str(soft_fail).lower()}}}\n"
        "  - {id: load, operator: bash, after: [wait], parameters: {command: echo}}\n"
    )
    r = cli(home, "run", str(spec), cwd=tmp_path)
    assert r.returncode == rc, r.stdout + r.stderr
    run_id, states = task_states(home)
    assert states == {"wait": state, "load": downstream}
    show = json.loads(cli(home, "runs", "show", run_id, "--format", "json", cwd=tmp_path).stdout)
    error = show["tasks"]["wait"]["error"]
    assert error.startswith("sensor timed out after 2s (timeout) waiting for file never/*.csv")
    assert "last check: no file matches never/*.csv" in error
    with store_of(home) as store:
        (row,) = [r for r in store.task_runs(run_id) if r.task_id == "wait"]
    assert row.ended_at is not None and row.started_at is not None
    assert 2.0 <= row.ended_at - row.started_at < 10.0


def test_a_task_sensor_reads_the_other_pipelines_latest_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "producer.yaml").write_text(
        "name: producer\ntasks:\n  - {id: publish, operator: bash, parameters: {command: echo}}\n"
    )
    (tmp_path / "consumer.yaml").write_text(
        "name: consumer\n"
        "tasks:\n"
        "  - id: wait\n"
        "    operator: sensor\n"
        "    parameters: {kind: task, pipeline: producer, task: publish, poke_interval: 0.5,\n"
        "                 timeout: 2, soft_fail: true}\n"
    )
    r = cli(home, "run", "consumer.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    first, states = task_states(home, "consumer")
    assert states == {"wait": "skipped"}
    show = cli(home, "runs", "show", first, "--format", "json", cwd=tmp_path).stdout
    assert (
        "last check: pipeline 'producer' has no run yet"
        in json.loads(show)["tasks"]["wait"]["error"]
    )

    assert cli(home, "run", "producer.yaml", cwd=tmp_path).returncode == 0
    producer_run, _ = task_states(home, "producer")
    r = cli(home, "run", "consumer.yaml", "--format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    second, states = task_states(home, "consumer")
    assert states == {"wait": "success"}
    assert output_of(home, second, "wait") == {
        "pipeline": "producer",
        "task": "publish",
        "run_id": producer_run,
        "state": "success",
    }


def test_an_http_sensor_with_a_secret_header_waits_for_the_service(tmp_path: Path) -> None:
    """Answers 503 to the first two checks, then 200 with the JSON asked for, only
    to the right token; the token never reaches the store."""
    token = "tok-5e4f-very-secret"
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("X-Token"))
            ready = len(seen) > 2 and seen[-1] == token
            body = json.dumps({"status": "ready" if ready else "starting"}).encode()
            self.send_response(200 if ready else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health?token={token}"
    home, spec = tmp_path / "home", tmp_path / "http.yaml"
    spec.write_text(
        "name: http_wait\n"
        "tasks:\n"
        "  - id: api\n"
        "    operator: sensor\n"
        "    parameters:\n"
        "      kind: http\n"
        f"      url: http://127.0.0.1:{server.server_address[1]}/health?token=${{secret:TOKEN}}\n"
        "      headers: {X-Token: '${secret:TOKEN}'}\n"
        "      json: {status: ready}\n"
        "      poke_interval: 0.3\n"
        "      timeout: 1m\n"
    )
    try:
        r = cli(home, "run", str(spec), cwd=tmp_path, env={"TOKEN": token})
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(seen) == 3 and set(seen) == {token}
    run_id, states = task_states(home)
    assert states == {"api": "success"}
    assert output_of(home, run_id, "api") == {
        "url": url.replace(token, "***"),
        "status": 200,
        "body": {"status": "ready"},
    }
    with store_of(home) as store:
        events = " ".join(str(e.message) for e in store.events(run_id))
        rows = " ".join(str(t.error) for t in store.task_runs(run_id))
    assert "answered 200" in rows and token not in events + rows


def test_a_paused_runs_sensor_is_not_checked_until_it_is_unpaused(tmp_path: Path) -> None:
    """An http sensor checked every 0.2 s: while its run is paused (`stageflow pause`
    from another process) no check reaches the service; unpaused, the checks go on
    and the run ends when the service is ready."""
    checks: list[float] = []
    ready = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            checks.append(time.monotonic())
            self.send_response(200 if ready.is_set() else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home, spec = tmp_path / "home", tmp_path / "paused.yaml"
    spec.write_text(
        "name: paused_wait\n"
        "tasks:\n"
        "  - id: api\n"
        "    operator: sensor\n"
        "    parameters:\n"
        "      kind: http\n"
        f"      url: http://127.0.0.1:{server.server_address[1]}/health\n"
        "      poke_interval: 0.2\n"
        "      timeout: 2m\n"
        "  - {id: after, operator: bash, after: [api], parameters: {command: echo done}}\n"
    )
    try:
        with cli_run(home, str(spec), cwd=tmp_path) as (proc, err):
            wait_until(lambda: len(checks) >= 2, "the sensor checks the service", timeout=60)
            run_id = task_states(home)[0]
            r = cli(home, "pause", run_id, cwd=tmp_path)
            assert r.returncode == 0, r.stdout + r.stderr

            def paused() -> bool:
                assert proc.poll() is None, stderr_of(err)
                with store_of(home) as store:
                    return store.get_run(run_id).state == "paused"

            wait_until(paused, "the run is paused", timeout=30)
            time.sleep(0.5)  # a check in flight as the pause landed ends meanwhile
            before = len(checks)
            time.sleep(1.5)  # 7 checks' worth of poke_interval
            assert len(checks) == before, "a paused run's sensor was checked"
            assert task_states(home)[1] == {"api": "sensing", "after": "pending"}

            ready.set()
            r = cli(home, "unpause", run_id, cwd=tmp_path)
            assert r.returncode == 0, r.stdout + r.stderr
            assert proc.wait(timeout=60) == 0, stderr_of(err)
    finally:
        server.shutdown()
        server.server_close()
    assert len(checks) == before + 1  # the first check after the unpause found it ready
    assert task_states(home)[1] == {"api": "success", "after": "success"}


def killed_while_sensing(home: Path, folder: Path, timeout: str) -> str:
    """``stageflow run`` of ``wait`` (a file sensor on ``in/*.csv`` with ``timeout``) ->
    ``load``, killed (kill -9, its process group) while the sensor waits; the run's id."""
    spec = folder / "crash.yaml"
    spec.write_text(
        "name: crash\n"
        "tasks:\n"
        "  - id: wait\n"
        "    operator: sensor\n"
        f"    parameters: {{kind: file, path: in/*.csv, poke_interval: 0.5, timeout: {timeout}}}\n"
        "  - {id: load, operator: bash, after: [wait], parameters: {command: ls in}}\n"
    )
    with cli_run(home, str(spec), cwd=folder) as (proc, err):

        def sensing() -> bool:
            assert proc.poll() is None, stderr_of(err)
            return task_states(home)[1].get("wait") == "sensing"

        wait_until(sensing, "the sensor waits", timeout=60)
        kill_group(proc)
    run_id, states = task_states(home)
    assert states == {"wait": "sensing", "load": "pending"}  # the crash left it waiting
    return run_id


def test_a_run_killed_while_its_sensor_waits_is_resumed_and_waits_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_id = killed_while_sensing(home, tmp_path, "5m")

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("x\n")
    r = cli(home, "resume", run_id, "--format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    tasks = json.loads(r.stdout)["tasks"]
    assert tasks["wait"]["state"] == "success" and tasks["wait"]["attempts"] == 2
    assert output_of(home, run_id, "wait") == [str(tmp_path / "in" / "a.csv")]
    assert output_of(home, run_id, "load") == "a.csv"


def test_a_resumed_sensor_keeps_its_timeout_from_its_first_wait(tmp_path: Path) -> None:
    """A sensor waited 3 s of its 3 s timeout before the crash: resumed, it fails at
    its first check instead of waiting 3 s more (the time before the resume counts)."""
    home = tmp_path / "home"
    run_id = killed_while_sensing(home, tmp_path, "3")
    with store_of(home) as store:
        (row,) = [r for r in store.task_runs(run_id) if r.task_id == "wait"]
    assert row.started_at is not None
    time.sleep(max(0.0, row.started_at + 3.5 - time.time()))  # its whole timeout passed

    r = cli(home, "resume", run_id, "--format", "json", cwd=tmp_path)

    assert r.returncode == 1, r.stdout + r.stderr
    tasks = json.loads(r.stdout)["tasks"]
    assert (tasks["wait"]["state"], tasks["load"]["state"]) == ("failed", "upstream_failed")
    with store_of(home) as store:
        events = [e for e in store.events(run_id) if e.task_id == "wait"]
        (row,) = [r for r in store.task_runs(run_id) if r.task_id == "wait"]
    waited, ended = events[-2], events[-1]
    assert (waited.to_state, ended.to_state) == ("sensing", "failed")
    assert "of it passed before the resume" in (waited.message or "")
    assert "sensor timed out after 3s (timeout)" in (ended.message or "")
    assert ended.at - waited.at < 3.0  # failed at its first check, not a fresh 3 s later
    assert row.started_at is not None and row.started_at < waited.at - 3.0  # kept


def test_the_sensors_example_waits_for_its_file(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "sensors.yaml", tmp_path / "sensors.yaml")
    home = tmp_path / "home"
    with cli_run(home, "sensors.yaml", cwd=tmp_path) as (proc, err):

        def waiting() -> bool:
            assert proc.poll() is None, stderr_of(err)
            states = task_states(home)[1]
            return states.get("wait_for_orders") == "sensing" and states.get("prepare") == "success"

        wait_until(waiting, "prepare ran while the sensor waits", timeout=60)
        (tmp_path / "inbox").mkdir()
        (tmp_path / "inbox" / "orders-1.csv").write_text("id,amount\n1,20\n2,35\n")
        assert proc.wait(timeout=60) == 0, stderr_of(err)
    run_id, states = task_states(home)
    assert set(states.values()) == {"success"}
    assert output_of(home, run_id, "load") == "3"
