"""What an attempt used (``AttemptResult.usage``) and the opt-in memory limit.

The executors run real ``Job``s here: Python tasks that burn CPU or fill memory,
and ``bash`` commands that start real Python processes. Memory is filled, not
merely reserved, so the figures are resident memory. A task over its limit holds
its memory for a minute: only being killed ends it sooner.
"""

from __future__ import annotations

import queue
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import usage_tasks as u
from helpers_tasks import pid_gone, wait_until

from stageflow import Task
from stageflow.operators.base import TaskContext
from stageflow.operators.process_tree import memory_limit_message
from stageflow.runtime.attempt import AttemptResult, Job
from stageflow.runtime.executors.base import Deliver, Executor
from stageflow.runtime.executors.process import ProcessExecutor
from stageflow.runtime.executors.thread import ThreadExecutor

PYTHON = shlex.quote(sys.executable)
PEAK = re.compile(r"peaked at ([0-9.]+) GB")


class Runner:
    """One executor with one worker; ``run`` submits a job and waits for its result."""

    def __init__(self, kind: str, home: Path) -> None:
        self.home = home
        self.completions: queue.SimpleQueue[AttemptResult] = queue.SimpleQueue()
        make: Callable[[int, Deliver], Executor] = (
            ProcessExecutor if kind == "process" else ThreadExecutor
        )
        self.executor = make(1, self._deliver)
        self.attempts = 0

    def _deliver(self, result: AttemptResult) -> None:
        self.completions.put(result)

    def run(self, task: Task, memory_limit_gb: float | None = None) -> AttemptResult:
        self.attempts += 1
        job = Job(
            run_id="usage",
            task=task,
            attempt=self.attempts,
            parameters=dict(task.parameters),
            run_params={},
            artifacts_root=str(self.home / "artifacts"),
            logs_dir=self.home / "logs",
            inline_limit=1 << 20,
            memory_limit_gb=memory_limit_gb,
        )
        self.executor.submit(job)
        result = self.completions.get(timeout=240)
        assert (result.task_id, result.attempt) == (task.id, self.attempts)
        return result


@pytest.fixture(params=["thread", "process"])
def runner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runner]:
    r = Runner(request.param, tmp_path)
    yield r
    r.executor.shutdown()


@pytest.fixture
def thread_runner(tmp_path: Path) -> Iterator[Runner]:
    r = Runner("thread", tmp_path)
    yield r
    r.executor.shutdown()


@pytest.fixture
def process_runner(tmp_path: Path) -> Iterator[Runner]:
    r = Runner("process", tmp_path)
    yield r
    r.executor.shutdown()


def python_task(task_id: str, fn: Callable[..., Any], **parameters: Any) -> Task:
    return Task(task_id, fn, parameters=parameters)


def bash_task(task_id: str, command: str) -> Task:
    return Task(id=task_id, operator="bash", parameters={"command": command})


def python_command(code: str, pid_file: Path | None = None) -> str:
    """A bash command that runs ``code`` in Python (as the command's own process)."""
    record = f"echo $$ > {shlex.quote(str(pid_file))}; " if pid_file else ""
    return f"{record}exec {PYTHON} -c {shlex.quote(code)}"


def fill(mb: int, then: str = "") -> str:
    return f"import time; data = b'x' * ({mb} * 1024 * 1024); {then or 'pass'}"


def peak_gb(error: str | None) -> float:
    found = PEAK.search(error or "")
    assert found, error
    return float(found.group(1))


# -- CPU time -------------------------------------------------------------------------------


def test_a_cpu_busy_python_task_reports_its_cpu_time(runner: Runner) -> None:
    result = runner.run(python_task("busy", u.busy, cpu_seconds=0.3))

    assert result.ok, result.error
    assert result.usage is not None
    assert result.usage.cpu_seconds is not None
    assert result.usage.cpu_seconds >= 0.2


def test_a_python_task_in_a_thread_has_no_memory_figure(thread_runner: Runner) -> None:
    result = thread_runner.run(python_task("alloc", u.allocate, mb=50))

    assert result.ok, result.error
    assert result.usage is not None
    assert result.usage.peak_rss_mb is None  # threads share their process's memory


def test_a_bash_commands_cpu_time_counts_in_a_thread(thread_runner: Runner) -> None:
    code = "import time\ns = time.process_time()\nwhile time.process_time() - s < 0.3: pass"
    result = thread_runner.run(bash_task("busy", python_command(code)))

    assert result.ok, result.error
    assert result.usage is not None
    assert result.usage.cpu_seconds is not None
    assert result.usage.cpu_seconds >= 0.2


# -- peak memory ----------------------------------------------------------------------------


def test_a_process_task_reports_its_peak_memory(process_runner: Runner) -> None:
    result = process_runner.run(python_task("alloc", u.allocate, mb=300))

    assert result.ok, result.error
    assert result.usage is not None
    assert result.usage.peak_rss_mb is not None
    assert result.usage.peak_rss_mb >= 250


def test_the_peak_counts_the_processes_a_process_task_started(process_runner: Runner) -> None:
    # Only the slot's sampling of the worker's process tree can see the child's memory.
    result = process_runner.run(python_task("child", u.child_holds, mb=200, seconds=3))

    assert result.ok, result.error
    assert result.usage is not None
    assert result.usage.peak_rss_mb is not None
    assert result.usage.peak_rss_mb >= 150


def test_a_bash_command_reports_its_peak_memory_in_a_thread(thread_runner: Runner) -> None:
    result = thread_runner.run(bash_task("alloc", python_command(fill(200, "time.sleep(1)"))))

    assert result.ok, result.error
    assert result.usage is not None
    assert result.usage.peak_rss_mb is not None
    assert result.usage.peak_rss_mb >= 150


def test_a_bash_commands_tree_is_summed(thread_runner: Runner) -> None:
    # Two processes of 100 MiB each at once: only sampling the tree sees 200 MiB.
    hold = PYTHON + " -c " + shlex.quote(fill(100, "time.sleep(3)"))
    result = thread_runner.run(bash_task("pair", f"{hold} & {hold} & wait"))

    assert result.ok, result.error
    assert result.usage is not None
    assert result.usage.peak_rss_mb is not None
    assert result.usage.peak_rss_mb >= 180


# -- the memory limit (enforce_limits) ------------------------------------------------------


def test_a_process_task_over_its_limit_is_killed_and_the_slot_goes_on(
    process_runner: Runner,
) -> None:
    killed = process_runner.run(python_task("hog", u.allocate_and_wait, mb=400), 0.15)

    assert not killed.ok
    assert killed.error is not None
    assert "exceeded its memory limit" in killed.error
    assert "limit 0.15 GB" in killed.error
    assert "resources.memory_gb" in killed.error
    assert peak_gb(killed.error) > 0.15
    assert killed.usage is not None
    assert killed.usage.peak_rss_mb is not None
    assert killed.usage.peak_rss_mb > 0.15 * 1024

    after = process_runner.run(python_task("next", u.ok))

    assert after.ok, after.error


def test_a_task_within_its_limit_succeeds(process_runner: Runner) -> None:
    result = process_runner.run(python_task("fits", u.allocate, mb=100), 1.0)

    assert result.ok, result.error
    assert result.usage is not None
    assert result.usage.peak_rss_mb is not None
    assert 80 <= result.usage.peak_rss_mb < 1024


def test_a_bash_command_over_its_limit_is_killed(runner: Runner, tmp_path: Path) -> None:
    pid_file = tmp_path / "hog.pid"
    command = python_command(fill(400, "time.sleep(60)"), pid_file)

    killed = runner.run(bash_task("hog", command), 0.15)

    assert not killed.ok
    assert killed.error is not None
    assert "exceeded its memory limit" in killed.error
    assert "limit 0.15 GB" in killed.error
    assert peak_gb(killed.error) > 0.15
    pid = int(pid_file.read_text())
    wait_until(lambda: pid_gone(pid), "the command's process is gone")

    after = runner.run(bash_task("next", "echo fine"))

    assert after.ok, after.error


def test_a_bash_command_within_its_limit_succeeds(runner: Runner) -> None:
    result = runner.run(bash_task("fits", python_command(fill(100, "time.sleep(1)"))), 1.0)

    assert result.ok, result.error
    assert result.usage is not None
    assert result.usage.peak_rss_mb is not None


# -- the pieces -----------------------------------------------------------------------------


def test_the_limit_message_names_the_peak_the_limit_and_the_fix() -> None:
    assert memory_limit_message(1.31 * 1024, 1.0) == (
        "the task exceeded its memory limit: peaked at 1.31 GB, limit 1 GB "
        "(resources.memory_gb with enforce_limits: true); "
        "raise resources.memory_gb or reduce the task's memory use"
    )
    # Just over the limit still reads as over it.
    assert "peaked at 0.151 GB, limit 0.15 GB" in memory_limit_message(154.5, 0.15)


def test_subprocess_usage_adds_cpu_and_keeps_the_largest_peak(tmp_path: Path) -> None:
    import logging

    ctx = TaskContext("r", "t", 1, {}, tmp_path, tmp_path / "log", logging.getLogger("t"))
    ctx.record_subprocess_usage(0.5, 100.0)
    ctx.record_subprocess_usage(0.25, None)
    ctx.record_subprocess_usage(1.0, 40.0)

    assert ctx.subprocess_cpu_seconds == 1.75
    assert ctx.subprocess_peak_rss_mb == 100.0
