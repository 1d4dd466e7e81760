"""``stageflow run`` on a real terminal: the live view, Ctrl-C and a cancel from elsewhere.

Each test starts the real CLI with a pseudo-terminal as its stdin, stdout and
stderr (``os.openpty``), so it takes the terminal path (rich's live view) that a
person gets and that a pipe never reaches; ``CI`` is removed from its
environment for the same reason. A reader thread drains the terminal so the
child never blocks on a full buffer. Tasks are a python function that sleeps as
long as ``SLOW_SECONDS`` says (0 when unset) and ``bash`` sleeps, on both
executors. The tests wait on the terminal's text and on committed store state
with deadlines, never with fixed sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers_tasks import clean_environ, store_of, wait_until

pytestmark = pytest.mark.slow

STAGEFLOW = Path(sys.executable).with_name("stageflow")
EXECUTORS = [pytest.param("thread", id="thread"), pytest.param("process", id="process")]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RUN_ID = re.compile(r"run (\d{8}-\d{6}-[0-9a-f]{6}) · pipeline '(\w+)'")

STEPS = """\
import os, time

def slow():
    print("slow starts")  # goes to the task's log, never into the live view
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
    return 1

def quick(slow):
    return slow + 1
"""

PIPELINE = """\
name: terminal
tasks:
  - id: slow
    call: steps:slow
  - id: shell
    operator: bash
    parameters: {command: "sleep ${params.shell_seconds}"}
  - id: quick
    call: steps:quick
    upstream: [slow, shell]
params: {shell_seconds: 0}
"""


class Terminal:
    """A ``stageflow`` process on a pseudo-terminal, and everything it wrote there."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [str(STAGEFLOW), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own session: SIGINT reaches only what we send it to
        )
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            self._chunks.append(data)

    @property
    def text(self) -> str:
        """What the terminal received, without colours and cursor moves."""
        return ANSI.sub("", b"".join(self._chunks).decode("utf-8", "replace"))

    def run_id(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while (match := RUN_ID.search(self.text)) is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"the view names no run; terminal:\n{self.text[-3000:]}")
            time.sleep(0.02)
        return match.group(1)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"stageflow did not exit within {timeout:g}s; terminal:\n{self.text[-3000:]}"
            ) from None
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        os.close(self._master)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "steps.py").write_text(STEPS)
    (tmp_path / "p.yaml").write_text(PIPELINE)
    return tmp_path


def env_for(folder: Path, slow_seconds: float = 0) -> dict[str, str]:
    env = clean_environ(os.environ)
    env.pop("CI", None)  # CI turns the live view off; a person's terminal has none
    env |= {
        "STAGEFLOW_HOME": str(folder / ".stageflow"),
        "TERM": "xterm-256color",
        "COLUMNS": "120",
        "LINES": "40",
        "SLOW_SECONDS": str(slow_seconds),
    }
    return env


@contextmanager
def terminal(folder: Path, args: list[str], slow_seconds: float = 0) -> Iterator[Terminal]:
    term = Terminal(args, folder, env_for(folder, slow_seconds))
    try:
        yield term
    finally:
        term.close()


def run_state(folder: Path, run_id: str) -> str:
    with store_of(folder / ".stageflow") as store:
        return str(store.get_run(run_id).state)


def task_states(folder: Path, run_id: str) -> dict[str, str]:
    with store_of(folder / ".stageflow") as store:
        return {t.task_id: str(t.state) for t in store.task_runs(run_id)}


def wait_running(folder: Path, run_id: str, task: str) -> None:
    wait_until(lambda: task_states(folder, run_id).get(task) == "running", f"{task} runs")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_run_on_a_terminal_finishes_and_shows_every_task(folder: Path, executor: str) -> None:
    with terminal(
        folder, ["run", "p.yaml", "--executor", executor, "--param", "shell_seconds=1"], 1
    ) as term:
        run_id = term.run_id()
        code = term.wait(60)
        text = term.text
    assert code == 0, text[-3000:]
    assert f"run {run_id} · pipeline 'terminal'" in text  # the header, from the first frame
    assert "3/3 done" in text
    for task in ("slow", "shell", "quick"):
        assert re.search(rf"│ {task}\s+│ success", text), (task, text[-3000:])
    assert re.search(r"│ slow\s+│ running\s+│\s+1 │\s+\d+\.\ds", text)  # redrawn while it runs
    assert "slow starts" not in text  # task output goes to its log
    assert f"run {run_id} of pipeline 'terminal': success" in text
    assert run_state(folder, run_id) == "success"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_ctrl_c_cancels_the_run_and_exits_130(folder: Path, executor: str) -> None:
    with terminal(
        folder, ["run", "p.yaml", "--executor", executor, "--param", "shell_seconds=60"], 60
    ) as term:
        run_id = term.run_id()
        wait_running(folder, run_id, "shell")
        wait_running(folder, run_id, "slow")
        sent = time.monotonic()
        term.proc.send_signal(signal.SIGINT)
        code = term.wait(15)
        took = time.monotonic() - sent
        text = term.text
    assert code == 130, text[-3000:]
    assert took < 10, took
    assert f"Ctrl-C: cancelling run {run_id}" in text
    assert f"run {run_id} cancelled by Ctrl-C" in text
    assert run_state(folder, run_id) == "cancelled"
    assert set(task_states(folder, run_id).values()) == {"cancelled"}


def test_a_second_ctrl_c_exits_at_once_and_leaves_the_run_resumable(folder: Path) -> None:
    # A python task on the thread executor cannot be stopped: the first Ctrl-C's
    # cancel waits a moment for it, and the second one must not wait at all.
    with terminal(folder, ["run", "p.yaml"], 60) as term:
        run_id = term.run_id()
        wait_running(folder, run_id, "slow")
        term.proc.send_signal(signal.SIGINT)
        wait_until(lambda: "Ctrl-C: cancelling" in term.text, "the first Ctrl-C is answered")
        sent = time.monotonic()
        term.proc.send_signal(signal.SIGINT)
        code = term.wait(10)
        took = time.monotonic() - sent
        text = term.text
    assert code == 130, text[-3000:]
    assert took < 3, took
    assert "stays resumable" in text or f"run {run_id} cancelled by Ctrl-C" in text
    assert "[/]" not in text and "[cyan]" not in text  # every frame drawn, never raw markup
    if "stays resumable" in text:  # the second Ctrl-C won the race: nothing more committed
        assert run_state(folder, run_id) != "success"
    resumed = subprocess.run(
        [str(STAGEFLOW), "resume", run_id],
        cwd=folder,
        env=env_for(folder, 0),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert run_state(folder, run_id) == "success"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_cancel_from_another_shell_ends_a_run_shown_live(folder: Path, executor: str) -> None:
    with terminal(
        folder, ["run", "p.yaml", "--executor", executor, "--param", "shell_seconds=60"], 60
    ) as term:
        run_id = term.run_id()
        wait_running(folder, run_id, "shell")
        cancel = subprocess.run(
            [str(STAGEFLOW), "cancel", run_id],
            cwd=folder,
            env=env_for(folder),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cancel.returncode == 0, cancel.stderr
        code = term.wait(15)
        text = term.text
    assert code == 1, text[-3000:]
    assert f"run {run_id} of pipeline 'terminal': cancelled" in text
    assert run_state(folder, run_id) == "cancelled"


def test_warnings_are_shown_once_in_the_view(folder: Path) -> None:
    (folder / "retry.yaml").write_text(
        "name: retrying\n"
        "tasks:\n"
        "  - id: flaky\n"
        "    operator: bash\n"
        "    retry: {max_retries: 1, delay_seconds: 0.2}\n"
        '    parameters: {command: "echo first line; echo the real reason >&2; exit 3"}\n'
    )
    with terminal(folder, ["run", "retry.yaml"]) as term:
        run_id = term.run_id()
        code = term.wait(30)
        text = term.text
    assert code == 1, text
    # the retry warning is drawn in the view; its final frame holds it exactly once
    final = text[text.rindex(f"run {run_id} · pipeline") :]
    assert final.count("attempt 1 failed, retry due") == 1, final
    assert "flaky failed:" in final and "the real reason" in final  # its last lines of error
    assert " WARNING stageflow" not in text  # not printed again as a log line


def test_without_a_terminal_each_warning_is_one_progress_line(folder: Path) -> None:
    (folder / "retry.yaml").write_text(
        "name: retrying\n"
        "tasks:\n"
        "  - id: flaky\n"
        "    operator: bash\n"
        "    retry: {max_retries: 1, delay_seconds: 0.2}\n"
        '    parameters: {command: "echo the real reason >&2; exit 3"}\n'
    )
    done = subprocess.run(
        [str(STAGEFLOW), "run", "retry.yaml"],
        cwd=folder,
        env=env_for(folder),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    retries = [line for line in lines if "attempt 1 failed" in line]
    assert len(retries) == 1, done.stderr
    assert retries[0].startswith("[        warning] run ")
    assert "[         failed] flaky" in done.stderr
