"""Faults and hostile input, met by the real CLI in a subprocess: each ends with a
clear message and its exit code (2 a bad argument, 1 a failed run or a store that
cannot be used), never a traceback, an internal error (exit 70) or a hang.

- a full disk under the logs: ``/dev/full`` as a task's log (ENOSPC on write);
- ``kill -9`` of the runner: its commands and workers die with it;
- a damaged store; a read-only state folder;
- numbers that are not numbers (``nan``), out of range, or nested too deep;
- a spec that is a FIFO or ``/dev/zero``; run parameters named ``A=B``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers_tasks import clean_environ, pid_gone, wait_until

STAGEFLOW = Path(sys.executable).with_name("stageflow")
HELLO = Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "hello.yaml"
WAIT = 60  # seconds: only reached when something hangs


@dataclass
class Result:
    code: int
    out: str
    err: str


def sf(
    home: Path,
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> Result:
    """Run the real CLI (under ``wrapper``, a command prefix); fail the test on a
    traceback, an internal error or a hang."""
    environ = clean_environ(os.environ)
    environ["STAGEFLOW_HOME"] = str(home)
    environ.update(env or {})
    proc = subprocess.run(
        [*wrapper, str(STAGEFLOW), *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=environ,
        timeout=WAIT,
        check=False,
        preexec_fn=preexec_fn,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.out + result.err, result
    assert "internal error" not in result.err, result
    return result


# -- a full disk under the logs ------------------------------------------------------------

FILL_LOG = """\
import os

def fill(context):
    path = str(context.log_path)
    if os.path.lexists(path):
        os.remove(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink("/dev/full", path)  # a full disk: every write fails with ENOSPC
    raise ValueError("the original failure")
"""

TWO_FILLERS = """\
name: full
defaults:
  retry: {max_retries: 0}
tasks:
  - {id: a, call: "fill_log:fill"}
  - {id: b, call: "fill_log:fill"}
"""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_full_disk_under_the_logs_still_reports_every_attempt(
    tmp_path: Path, executor: str
) -> None:
    (tmp_path / "fill_log.py").write_text(FILL_LOG)
    (tmp_path / "full.yaml").write_text(TWO_FILLERS)
    home = tmp_path / "home"
    result = sf(home, "run", tmp_path / "full.yaml", "--executor", executor, "--format", "json")
    assert result.code == 1, result
    tasks = json.loads(result.out)["tasks"]
    for task in ("a", "b"):
        log = home.absolute() / "logs" / json.loads(result.out)["run_id"] / task / "attempt-1.log"
        assert tasks[task]["error"] == (
            "ValueError: the original failure "
            f"(and the task log {log} could not be written: No space left on device)"
        )


# -- kill -9 of the runner ------------------------------------------------------------------

BASH_LOOP = """\
name: loop
tasks:
  - id: loop
    operator: bash
    parameters:
      command: |
        sleep 300 &
        echo $! > "$MARK_DIR/child.pid"
        echo $$ > "$MARK_DIR/task.pid"
        while true; do date +%s%N > "$MARK_DIR/marker"; sleep 0.1; done
"""

PYTHON_LOOP_STEPS = """\
import os
import time

def spin():
    mark = os.environ["MARK_DIR"]
    with open(os.path.join(mark, "task.pid"), "w") as f:
        f.write(str(os.getpid()))
    while True:
        with open(os.path.join(mark, "marker"), "w") as f:
            f.write(str(time.time_ns()))
        time.sleep(0.1)
"""

PYTHON_LOOP = """\
name: spin
tasks:
  - {id: spin, call: "spin_steps:spin"}
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "executor"),
    [
        pytest.param(BASH_LOOP, "thread", id="bash-thread"),
        pytest.param(BASH_LOOP, "process", id="bash-process"),
        pytest.param(PYTHON_LOOP, "process", id="python-process"),
    ],
)
def test_a_killed_runners_tasks_die_with_it(tmp_path: Path, spec: str, executor: str) -> None:
    (tmp_path / "spin_steps.py").write_text(PYTHON_LOOP_STEPS)
    (tmp_path / "spec.yaml").write_text(spec)
    mark = tmp_path / "mark"
    mark.mkdir()
    env = clean_environ(os.environ)
    env.update(STAGEFLOW_HOME=str(tmp_path / "home"), MARK_DIR=str(mark))
    runner = subprocess.Popen(
        [str(STAGEFLOW), "run", str(tmp_path / "spec.yaml"), "--executor", executor],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pids: list[int] = []
    try:
        wait_until(lambda: (mark / "task.pid").is_file() and (mark / "marker").is_file(), "it ran")
        wait_until(lambda: bool((mark / "task.pid").read_text().strip()), "its pid is written")
        # The task, and for bash the process it left in the background (same group).
        pids = [
            int((mark / n).read_text()) for n in ("task.pid", "child.pid") if (mark / n).exists()
        ]
        runner.send_signal(signal.SIGKILL)
        runner.wait(WAIT)
        for pid in pids:
            wait_until(functools.partial(pid_gone, pid), f"process {pid} died with the runner", 5)
        marker = (mark / "marker").read_text()
        time.sleep(0.5)
        assert (mark / "marker").read_text() == marker, "the task still runs"
    finally:
        with contextlib.suppress(ProcessLookupError):
            runner.kill()
        runner.wait(WAIT)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if not pid_gone(pid):
                    os.kill(pid, signal.SIGKILL)


# -- a damaged store ------------------------------------------------------------------------


@pytest.fixture
def damaged_home(tmp_path: Path) -> tuple[Path, str]:
    """A home whose store holds a run, then has the pages of its tables overwritten."""
    home = tmp_path / "home"
    assert sf(home, "run", HELLO).code == 0
    db = home / "stageflow.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        run_id = conn.execute("SELECT run_id FROM runs").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [
            row[0]
            for row in conn.execute(
                "SELECT rootpage FROM sqlite_master "
                "WHERE name IN ('runs', 'task_runs', 'attempts', 'pipelines')"
            )
        ]
    with open(db, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * size)
            f.write(b"\xfe" * size)
    return home, run_id


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["runs", "list"], id="runs-list"),
        pytest.param(["runs", "show", "RUN"], id="runs-show"),
        pytest.param(["run", HELLO], id="run"),
        pytest.param(["resume", "RUN"], id="resume"),
    ],
)
def test_a_damaged_store_is_named_with_how_to_recover(
    damaged_home: tuple[Path, str], args: list[str | Path]
) -> None:
    home, run_id = damaged_home
    result = sf(home, *(run_id if a == "RUN" else a for a in args))
    db = (home / "stageflow.db").absolute()
    assert result.code == 1, result
    assert f"error: the store at sqlite:///{db} is damaged (database disk image is malformed)" in (
        result.err
    )
    assert f"move {db} (and its -wal and -shm files) aside" in result.err
    assert f"sqlite3 {db} .recover | sqlite3 recovered.db" in result.err


# -- a read-only state folder ---------------------------------------------------------------


#: As root, permissions do not stop writes: the CLI runs in a private mount
#: namespace where the home is a read-only bind mount of itself.
_READ_ONLY_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


@pytest.fixture
def read_only_home(tmp_path: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """A home holding a run, which the CLI then cannot write: its folders and files
    lose write permission, and as root the home is mounted read-only besides."""
    home = tmp_path / "home"
    assert sf(home, "run", HELLO).code == 0
    run_id = sf(home, "runs", "list").out.split()[0]
    wrapper: list[str] = []
    if os.geteuid() == 0:
        wrapper = ["unshare", "--mount", "sh", "-c", _READ_ONLY_MOUNT, str(home)]
        probe = subprocess.run(
            [*wrapper, "sh", "-c", f"! touch {home}/probe"], capture_output=True, check=False
        )
        if probe.returncode != 0:
            why = "running as root without `unshare --mount`: nothing can stop its writes"
            if os.environ.get("CI"):  # CI runs as root with unshare: never skip there
                pytest.fail(why, pytrace=False)
            pytest.skip(why)
    for path in [home, *home.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        yield home, run_id, wrapper
    finally:
        for path in [home, *home.rglob("*")]:
            path.chmod(0o755)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["runs", "list"], "hello", id="runs-list"),
        pytest.param(["runs", "show", "RUN"], "of pipeline 'hello': success", id="runs-show"),
        pytest.param(["logs", "RUN", "greet"], "hello from greet", id="logs"),
        pytest.param(["graph", "--run", "RUN"], "greet", id="graph-run"),
        pytest.param(["runs", "cost"], "hello", id="runs-cost"),
        pytest.param(["runs", "diff", "RUN", "RUN"], "no differences", id="runs-diff"),
        pytest.param(["lineage", "RUN/greet"], "task greet of run", id="lineage"),
    ],
)
def test_reading_commands_work_on_a_read_only_home(
    read_only_home: tuple[Path, str, list[str]], args: list[str], expected: str
) -> None:
    home, run_id, wrapper = read_only_home
    result = sf(home, *(a.replace("RUN", run_id) for a in args), wrapper=wrapper)
    assert result.code == 0, result
    assert expected in result.out


def test_a_run_on_a_read_only_home_says_what_to_do(
    read_only_home: tuple[Path, str, list[str]],
) -> None:
    home, _, wrapper = read_only_home
    result = sf(home, "run", HELLO, wrapper=wrapper)
    assert result.code == 1, result
    assert f"the store at sqlite:///{home / 'stageflow.db'} " in result.err
    assert "make " in result.err


# -- hostile input ----------------------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000

BAD_PARAM_NAME = """\
name: ab
params:
  "A=B": 1
tasks:
  - {id: t, operator: bash, parameters: {command: "echo hi"}}
"""

CASED_PARAMS = """\
name: cased
params: {x: 1, X: 2}
tasks:
  - {id: t, operator: bash, parameters: {command: "echo $STAGEFLOW_PARAM_X"}}
"""

WANTS_CPUS = """\
name: cpus
tasks:
  - {id: t, operator: bash, parameters: {command: "echo hi"}, resources: {cpu: 1}}
"""


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ["runs", "list", "--limit", "100000000000000000000"],
            {},
            "Invalid value for '--limit': 100000000000000000000 is not in the range 1<=x<=1000000",
            id="limit-overflow",
        ),
        pytest.param(
            ["logs", "RUN", "greet", "--attempt", "100000000000000000000"],
            {},
            "Invalid value for '--attempt'",
            id="attempt-overflow",
        ),
        pytest.param(
            ["run", HELLO, "--max-parallel", "100000000000000000000"],
            {},
            "Invalid value for '--max-parallel'",
            id="max-parallel-overflow",
        ),
        pytest.param(
            ["run", HELLO, "--param", f"greeting={DEEP}"],
            {},
            "--param greeting: the value is nested deeper than 64 levels",
            id="param-5000-deep",
        ),
        pytest.param(
            ["run", HELLO, "--param", "a b=1"],
            {},
            "--param 'a b=1': run parameter 'a b' is not a valid name",
            id="param-name",
        ),
        pytest.param(
            ["validate", "SPECS/ab.yaml"],
            {},
            "field 'params.A=B': run parameter 'A=B' is not a valid name",
            id="spec-param-name",
        ),
        pytest.param(
            ["run", "SPECS/ab.yaml"],
            {},
            "field 'params.A=B': run parameter 'A=B' is not a valid name",
            id="spec-param-name-run",
        ),
        pytest.param(
            ["run", HELLO, "--cpus", "nan"],
            {},
            "Invalid value for '--cpus': nan is not a finite number",
            id="cpus-nan",
        ),
        pytest.param(
            ["run", HELLO, "--memory-gb", "inf"],
            {},
            "Invalid value for '--memory-gb': inf is not a finite number",
            id="memory-inf",
        ),
        pytest.param(
            ["run", HELLO],
            {"STAGEFLOW_COMMIT_INTERVAL_MS": "nan"},
            "STAGEFLOW_COMMIT_INTERVAL_MS is 'nan'; it must be a finite number",
            id="commit-interval-nan",
        ),
        pytest.param(
            ["run", HELLO],
            {"STAGEFLOW_TASK_TIMEOUT": "nan"},
            "STAGEFLOW_TASK_TIMEOUT (or TASK_TIMEOUT) is 'nan'; it must be a finite number",
            id="task-timeout-nan",
        ),
        pytest.param(
            ["run", "SPECS/cpus.yaml"],
            {"STAGEFLOW_MAX_CPU_CORES": "nan"},
            "STAGEFLOW_MAX_CPU_CORES is 'nan'; it must be a finite number",
            id="max-cpu-cores-nan",
        ),
        # Capacity settings are refused when the settings load: a pipeline whose
        # tasks declare no resources fails too, naming the variable.
        pytest.param(
            ["run", HELLO],
            {"STAGEFLOW_MAX_CPU_CORES": "nan"},
            "STAGEFLOW_MAX_CPU_CORES is 'nan'; it must be a finite number",
            id="max-cpu-cores-nan-no-resources",
        ),
        pytest.param(
            ["run", HELLO],
            {"MAX_MEMORY_GB": "-5"},
            "MAX_MEMORY_GB is '-5'; it must not be negative",
            id="seed-max-memory-negative-no-resources",
        ),
        pytest.param(
            ["validate", HELLO],
            {"STAGEFLOW_MAX_GPU_COUNT": "two"},
            "STAGEFLOW_MAX_GPU_COUNT is 'two'; it must be a number",
            id="max-gpu-count-word",
        ),
        pytest.param(
            ["run", HELLO],
            {"STAGEFLOW_POOLS": "training=nan"},
            "STAGEFLOW_POOLS: 'training=nan' is not NAME=AMOUNT",
            id="pools-nan-no-resources",
        ),
        pytest.param(
            ["run", HELLO],
            {"STAGEFLOW_CUSTOM_RESOURCES": "licenses"},
            "STAGEFLOW_CUSTOM_RESOURCES: 'licenses' is not NAME=AMOUNT",
            id="custom-resources-no-amount",
        ),
        pytest.param(
            ["validate", "SPECS/cased.yaml"],
            {},
            "field 'params.X': run parameters 'x' and 'X' differ only in case",
            id="params-differing-in-case",
        ),
        pytest.param(
            ["run", "SPECS/cased.yaml", "--param", "X=3"],
            {},
            "field 'params.X': run parameters 'x' and 'X' differ only in case",
            id="params-differing-in-case-run",
        ),
        pytest.param(
            ["validate", "SPECS/fifo.yaml"],
            {},
            "fifo.yaml is not a regular file (it is a FIFO); give a pipeline file saved on disk",
            id="fifo",
        ),
        pytest.param(
            ["validate", "SPECS/zero.yaml"],
            {},
            "zero.yaml is not a regular file (it is a character device)",
            id="dev-zero",
        ),
    ],
)
def test_hostile_input_is_a_usage_error(
    tmp_path: Path, args: list[str | Path], env: dict[str, str], message: str
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "ab.yaml").write_text(BAD_PARAM_NAME)
    (specs / "cpus.yaml").write_text(WANTS_CPUS)
    (specs / "cased.yaml").write_text(CASED_PARAMS)
    os.mkfifo(specs / "fifo.yaml")
    os.symlink("/dev/zero", specs / "zero.yaml")
    home = tmp_path / "home"
    run_id = "20260101-000000-000000"
    argv = [str(a).replace("SPECS", str(specs)).replace("RUN", run_id) for a in args]
    result = sf(home, *argv, env=env, preexec_fn=_bounded_memory)
    assert result.code == 2, result
    assert message in result.err


def _bounded_memory() -> None:
    """A spec read until memory runs out must not take the machine's with it."""
    limit = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
