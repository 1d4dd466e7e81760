"""The runtime on real runs, with both executors: outputs, order, retries, timeouts,
crashing workers, failure strategies, bash, logs and the parallelism bound.

Every test runs a real pipeline (real threads or worker processes, SQLite in a
``tmp_path`` home) and then checks what the store recorded: output rows and
files, the event log's order, attempt rows. Waits are polling loops with
generous deadlines, never fixed sleeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers_tasks as h
import pytest
from helpers_tasks import assert_durable_and_causal, pid_gone, store_of, wait_until

from stageflow import Pipeline, Task
from stageflow.runtime.result import RunResult
from stageflow.spec.models import RetryPolicy

pytestmark = pytest.mark.slow

STAGEFLOW = Path(sys.executable).with_name("stageflow")
EXECUTORS = [pytest.param("thread", id="thread"), pytest.param("process", id="process")]


# -- helpers -------------------------------------------------------------------------------


def run(pipeline: Pipeline, executor: str, home: Path, **kwargs: Any) -> RunResult:
    return pipeline.run(executor=executor, home=str(home), **kwargs)


@pytest.fixture(autouse=True)
def _no_settings_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in set(os.environ) - set(h.clean_environ(os.environ)):
        monkeypatch.delenv(name)


def states(result: RunResult) -> dict[str, str]:
    return {tid: str(t.state) for tid, t in result.tasks.items()}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = current = 0
    for _, step in points:
        current += step
        most = max(most, current)
    return most


def log_text(home: Path, run_id: str, task_id: str, attempt: int = 1) -> str:
    path = home / "logs" / run_id / task_id / f"attempt-{attempt}.log"
    return path.read_text() if path.exists() else ""


# -- outputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_outputs_pass_by_name_and_position_and_are_stored_durably(
    executor: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        "outputs",
        tasks=[
            Task("small", h.small),
            Task("big_bytes", h.big_bytes),
            Task("big_list", h.big_list),
            Task("by_name", h.by_name),
            Task("positional", h.positional, upstream=["small", "big_bytes", "big_list"]),
        ],
    )

    result = run(pipeline, executor, tmp_path)

    assert result.state == "success", states(result)
    assert result.output("by_name") == {"n": 42, "bytes": h.BIG_BYTES, "items": h.BIG_LIST}
    assert result.output("positional") == ["dict", "bytes", "list"]
    assert result.output("big_bytes") == b"x" * h.BIG_BYTES
    with store_of(tmp_path) as store:
        outputs = store.outputs(result.run_id)
        assert {tid: ref.kind for tid, ref in outputs.items()} == {
            "small": "inline",
            "big_bytes": "file",
            "big_list": "file",
            "by_name": "inline",
            "positional": "inline",
        }
        for tid in ("big_bytes", "big_list"):
            expected = tmp_path / "artifacts" / "outputs" / result.run_id / tid / "attempt-1"
            assert Path(outputs[tid].uri or "") == expected.resolve()
            assert expected.is_file()
            assert outputs[tid].size > 64 * 1024
        assert_durable_and_causal(store, pipeline.upstream_map(), result.run_id)


# -- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_retries_with_exponential_backoff(executor: str, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    policy = RetryPolicy(max_retries=2, delay_seconds=0.05, backoff="exponential")
    pipeline = Pipeline(
        "retries",
        tasks=[Task("flaky", h.flaky, parameters={"attempts_file": str(calls)}, retry=policy)],
    )

    result = run(pipeline, executor, tmp_path)

    assert result.state == "success"
    assert (result.tasks["flaky"].attempts, result.output("flaky")) == (3, "ok after 3")
    assert h.read_lines(calls) == ["1", "2", "3"]
    with store_of(tmp_path) as store:
        attempts = store.attempts(result.run_id, "flaky")
        events = store.events(result.run_id)
    assert [(a.attempt, a.state) for a in attempts] == [
        (1, "up_for_retry"),
        (2, "up_for_retry"),
        (3, "success"),
    ]
    for a in attempts[:2]:
        assert f"ValueError: flaky failure on attempt {a.attempt}" in (a.error or "")
        assert "Traceback (most recent call last)" in (a.error or "")
        assert "helpers_tasks.py" in (a.error or "")
    assert attempts[2].error is None
    for before, after, delay in ((attempts[0], attempts[1], 0.05), (attempts[1], attempts[2], 0.1)):
        assert before.ended_at is not None and after.started_at is not None
        assert after.started_at - before.ended_at >= delay - 1e-6
    retry_events = [(e.attempt, e.to_state) for e in events if e.task_id == "flaky"]
    assert retry_events.count((1, "up_for_retry")) == 1
    assert retry_events.count((2, "up_for_retry")) == 1
    assert retry_events[-1] == (3, "success")


# -- timeouts --------------------------------------------------------------------------------


def _sleepy_files(tmp_path: Path) -> dict[str, str]:
    return {
        "pid_file": str(tmp_path / "pid"),
        "release_file": str(tmp_path / "release"),
        "done_file": str(tmp_path / "done"),
    }


@pytest.mark.parametrize("executor", EXECUTORS)
def test_python_task_timeout(executor: str, tmp_path: Path) -> None:
    files = _sleepy_files(tmp_path)
    # One slot, warmed by "warm", so the attempt surely starts before its deadline;
    # "after" then needs the slot again (a fresh worker once the old one is killed).
    pipeline = Pipeline(
        "timeouts",
        tasks=[
            Task("warm", h.ok),
            Task("sleepy", h.sleep_long, after=["warm"], parameters=files, timeout_seconds=0.5),
            Task("after", h.ok, after=["sleepy"], trigger_rule="all_done"),
        ],
    )
    try:
        result = run(pipeline, executor, tmp_path, max_parallel=1)

        assert result.state == "failed"
        assert states(result) == {"warm": "success", "sleepy": "failed", "after": "success"}
        sleepy = result.tasks["sleepy"]
        assert "timed out after 0.5s" in (sleepy.error or "")
        with store_of(tmp_path) as store:
            (attempt,) = store.attempts(result.run_id, "sleepy")
        assert attempt.state == "failed"
        assert attempt.ended_at is not None and attempt.started_at is not None
        assert attempt.ended_at - attempt.started_at < 5
        (pid,) = map(int, h.read_lines(files["pid_file"]))
        if executor == "process":
            wait_until(lambda: pid_gone(pid), f"the worker process {pid} is gone")
            assert not Path(files["done_file"]).exists()
        else:
            # The thread cannot be killed: the run finished while it still sleeps.
            assert pid == os.getpid()
            assert not Path(files["done_file"]).exists()
    finally:
        Path(files["release_file"]).touch()
    if executor == "thread":
        wait_until(lambda: Path(files["done_file"]).exists(), "the abandoned thread finished")


def test_a_timeout_before_the_worker_took_the_attempt_still_stops_it(tmp_path: Path) -> None:
    files = _sleepy_files(tmp_path)
    # A cold pool of one slot: the deadline passes while the worker is still starting.
    pipeline = Pipeline(
        "early-timeout",
        tasks=[
            Task("sleepy", h.sleep_long, parameters=files, timeout_seconds=0.01),
            Task("after", h.ok, after=["sleepy"], trigger_rule="all_done"),
        ],
    )
    started = time.monotonic()
    try:
        result = run(pipeline, "process", tmp_path, max_parallel=1)
    finally:
        Path(files["release_file"]).touch()

    assert time.monotonic() - started < 15  # "after" never waited for a 30 s attempt
    assert states(result) == {"sleepy": "failed", "after": "success"}
    assert "timed out after 0.01s" in (result.tasks["sleepy"].error or "")
    assert not Path(files["done_file"]).exists()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_bash_task_timeout_kills_the_command(executor: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "bash.pid"
    pipeline = Pipeline(
        "bash-timeout",
        tasks=[
            Task("warm", h.ok),
            Task(
                "sleepy",
                operator="bash",
                after=["warm"],
                parameters={"command": f"echo $$ > {pid_file}; exec sleep 30"},
                timeout_seconds=0.5,
            ),
        ],
    )
    started = time.monotonic()

    result = run(pipeline, executor, tmp_path, max_parallel=1)

    assert time.monotonic() - started < 15
    assert states(result) == {"warm": "success", "sleepy": "failed"}
    assert "timed out" in (result.tasks["sleepy"].error or "")
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "pid written")
    pid = int(pid_file.read_text())
    wait_until(lambda: pid_gone(pid), f"the command's process {pid} is gone", timeout=10)


def test_a_bash_command_runs_no_line_before_its_group_is_watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill -9 between a command's start and its registration with the lifeline
    would leave it running on: the command waits until it is registered."""
    import stageflow.operators.bash as bash_operator

    started = tmp_path / "started"
    seen: list[bool] = []
    register = bash_operator.watch_group

    def slow_watch_group(pgid: int) -> None:
        time.sleep(0.5)  # a runner descheduled just after the command's start
        seen.append(started.exists())
        register(pgid)

    monkeypatch.setattr(bash_operator, "watch_group", slow_watch_group)
    pipeline = Pipeline(
        "gated",
        tasks=[
            Task("cmd", operator="bash", parameters={"command": f"touch {started}; echo $LINENO"})
        ],
    )

    result = run(pipeline, "thread", tmp_path)

    assert states(result) == {"cmd": "success"}
    assert seen == [False], "the command ran before its process group was watched"
    assert started.exists()
    assert result.tasks["cmd"].output == "1"  # the command's own line numbers


def test_a_new_run_whose_drawn_id_is_taken_draws_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids end in 24 random bits: at a thousand submissions a second two collide now
    and then; the second run draws again instead of failing."""
    import stageflow.runtime.runner as runner_module

    drawn = iter(["20261205-120000-aaaaaa", "20261205-120000-aaaaaa", "20261205-120000-bbbbbb"])
    monkeypatch.setattr(runner_module, "new_run_id", lambda now: next(drawn))
    pipeline = Pipeline("twice", tasks=[Task("a", h.ok)])

    first = run(pipeline, "thread", tmp_path)
    second = run(pipeline, "thread", tmp_path)

    assert (first.run_id, second.run_id) == ("20261205-120000-aaaaaa", "20261205-120000-bbbbbb")
    assert states(first) == states(second) == {"a": "success"}


# -- crashing workers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crash", "message"),
    [
        pytest.param(h.exit_3, "the worker process exited with code 3", id="os-exit"),
        pytest.param(h.sigkill_self, "the worker process was killed by SIGKILL", id="sigkill"),
        pytest.param(h.segfault, "the worker process was killed by SIGSEGV", id="segfault"),
    ],
)
def test_a_crashing_worker_fails_only_its_task(
    crash: Callable[[], None], message: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        "crash",
        tasks=[
            Task("crash", crash),
            Task("a", h.ok),
            Task("b", h.small, after=["a"]),
            Task("c", h.ok, after=["b"]),
        ],
    )

    result = run(pipeline, "process", tmp_path, max_parallel=2)

    assert result.state == "failed"
    assert states(result) == {"crash": "failed", "a": "success", "b": "success", "c": "success"}
    assert result.tasks["crash"].error == message
    assert result.output("b") == {"n": 21}
    with store_of(tmp_path) as store:
        assert store.get_run(result.run_id).state == "failed"
        assert_durable_and_causal(store, pipeline.upstream_map(), result.run_id)


# -- failure strategies ----------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        pytest.param(
            "fail_fast",
            {
                "bad": "failed",
                "waiting": "cancelled",
                "after_waiting": "cancelled",
                "after_bad": "cancelled",
            },
            id="fail_fast",
        ),
        pytest.param(
            "continue",
            {
                "bad": "failed",
                "waiting": "success",
                "after_waiting": "success",
                "after_bad": "upstream_failed",
            },
            id="continue",
        ),
    ],
)
def test_failure_strategy(
    executor: str, strategy: str, expected: dict[str, str], tmp_path: Path
) -> None:
    release = tmp_path / "release"
    pipeline = Pipeline(
        "strategies",
        failure_strategy=strategy,
        tasks=[
            Task("bad", h.fail),
            # Waits for "bad" to have failed (continue) or to be cancelled (fail_fast).
            Task("waiting", h.wait_for_file, parameters={"release": str(release)}),
            Task("after_waiting", h.ok, upstream=["waiting"]),
            Task("after_bad", h.ok, upstream=["bad"]),
        ],
        params={"started": str(tmp_path / "started")},
    )
    if strategy == "continue":
        release.touch()  # nothing would cancel "waiting"

    result = run(pipeline, executor, tmp_path, max_parallel=2)

    release.touch()
    assert result.state == "failed"
    assert states(result) == expected
    assert "boom: this task always fails" in (result.tasks["bad"].error or "")
    if strategy == "fail_fast":
        assert "cancelled: task 'bad' failed (fail_fast)" in (result.tasks["after_bad"].error or "")
        with store_of(tmp_path) as store:  # "waiting" was running when it was cancelled
            (attempt,) = store.attempts(result.run_id, "waiting")
        assert attempt.state == "cancelled"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_fail_fast_kills_a_running_bash_command(executor: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "bash.pid"
    pipeline = Pipeline(
        "fail-fast-bash",
        failure_strategy="fail_fast",
        tasks=[
            Task(
                "sleepy",
                operator="bash",
                parameters={
                    "command": f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; "
                    "exec sleep 30"
                },
            ),
            Task(
                "bad",
                operator="bash",
                parameters={"command": f"while [ ! -s {pid_file} ]; do sleep 0.02; done; exit 1"},
            ),
        ],
    )

    result = run(pipeline, executor, tmp_path, max_parallel=2)

    assert states(result) == {"sleepy": "cancelled", "bad": "failed"}
    pid = int(pid_file.read_text())
    wait_until(lambda: pid_gone(pid), f"the cancelled command's process {pid} is gone", 10)


# -- bash ------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_bash_environment_output_failure_and_logs(executor: str, tmp_path: Path) -> None:
    env_line = "$STAGEFLOW_RUN_ID|$STAGEFLOW_TASK_ID|$STAGEFLOW_ATTEMPT|$STAGEFLOW_PARAM_GREETING"
    pipeline = Pipeline(
        "bash",
        params={"greeting": "hello there", "epochs": 3},
        tasks=[
            Task(
                "env",
                operator="bash",
                parameters={
                    "command": f'echo first; echo "{env_line}"; echo "$STAGEFLOW_PARAM_EPOCHS"'
                },
            ),
            Task(
                "retried",
                operator="bash",
                parameters={
                    "command": 'echo "try $STAGEFLOW_ATTEMPT"; '
                    '[ "$STAGEFLOW_ATTEMPT" -ge 2 ] || exit 7'
                },
                retry=RetryPolicy(max_retries=1),
            ),
            Task(
                "broken",
                operator="bash",
                parameters={"command": "echo one; echo two; echo oops >&2; exit 4"},
            ),
        ],
    )

    result = run(pipeline, executor, tmp_path)

    run_id = result.run_id
    assert states(result) == {"env": "success", "retried": "success", "broken": "failed"}
    assert result.output("env") == "3"
    assert log_text(tmp_path, run_id, "env") == f"first\n{run_id}|env|1|hello there\n3\n"
    assert result.tasks["retried"].attempts == 2
    assert result.output("retried") == "try 2"
    assert "bash command exited with code 7" in log_text(tmp_path, run_id, "retried", 1)
    assert log_text(tmp_path, run_id, "retried", 2) == "try 2\n"
    error = result.tasks["broken"].error or ""
    assert error.startswith("bash command exited with code 4; last output:")
    assert error.endswith("one\ntwo\noops")
    cli = subprocess.run(
        [str(STAGEFLOW), "--home", str(tmp_path), "logs", run_id, "env"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == f"first\n{run_id}|env|1|hello there\n3\n"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_python_print_and_logging_go_to_the_task_log(
    executor: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pipeline = Pipeline(
        "chatty",
        tasks=[
            Task("one", h.chatty, parameters={"marker": "m-one"}),
            Task("two", h.chatty, parameters={"marker": "m-two"}),
        ],
    )

    result = run(pipeline, executor, tmp_path)

    assert result.state == "success"
    for tid in ("one", "two"):
        text = log_text(tmp_path, result.run_id, tid)
        assert f"printed m-{tid}" in text
        assert f"logged m-{tid}" in text
        assert f"m-{'two' if tid == 'one' else 'one'}" not in text
    out, err = capfd.readouterr()
    assert "printed m-" not in out + err


# -- parallelism -----------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_max_parallel_bounds_overlap(executor: str, tmp_path: Path) -> None:
    pipeline = Pipeline(
        "parallel",
        params={"out_dir": str(tmp_path)},
        tasks=[Task(f"t{i}", h.interval) for i in range(6)],
    )

    result = run(pipeline, executor, tmp_path, max_parallel=2)

    assert result.state == "success"
    recorded = [line.split() for line in h.read_lines(tmp_path / "intervals")]
    assert sorted(tid for tid, _, _ in recorded) == [f"t{i}" for i in range(6)]
    assert max_overlap([(float(s), float(e)) for _, s, e in recorded]) <= 2
    with store_of(tmp_path) as store:
        attempts = store.attempts(result.run_id)
    assert len(attempts) == 6
    spans = [(a.started_at or 0.0, a.ended_at or 0.0) for a in attempts]
    assert max_overlap(spans) == 2  # two start in the first tick; never a third
