"""The ``bash`` operator: run ``command`` with ``bash -c``.

stdout and stderr go, merged and in order, to the attempt's log; the output is
the last non-empty line (as Airflow's BashOperator pushes). A non-zero exit
fails the task. The command starts in the pipeline's folder (``cwd``, when
given, is resolved against it: ``operators/paths.py``), whichever executor runs
it. The environment holds the parent's, the attempt's (``STAGEFLOW_RUN_ID``,
``STAGEFLOW_TASK_ID``, ``STAGEFLOW_ATTEMPT``, ``STAGEFLOW_IDEMPOTENCY_KEY``,
``STAGEFLOW_PIPELINE_DIR``, and ``STAGEFLOW_WORK_DIR``: a scratch folder made
for the attempt), each run parameter as ``STAGEFLOW_PARAM_<NAME>`` and
the task's ``env``. On timeout or cancellation the whole process group is
killed (the command runs in its own session), whichever executor runs it; and
so it is when the attempt has a memory limit (``enforce_limits``) and the
command's process tree goes over it, or when the stageflow process running it
dies, even by ``kill -9`` (``operators.lifeline``). The command's CPU time and
peak memory are recorded on the context for the attempt's usage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from stageflow.operators.base import Operator, TaskContext, TaskFailed
from stageflow.operators.lifeline import forget_group, watch_group
from stageflow.operators.process_tree import (
    SAMPLE_SECONDS,
    TreeSampler,
    memory_limit_message,
)

__all__ = ["BashOperator", "BashParams", "masked_copy"]

_POLL_SECONDS = 0.05


class BashParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, description="the script, run with `bash -c`")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment")
    cwd: str | None = Field(
        default=None,
        description="working directory, relative to the pipeline's folder (default: that folder)",
    )


class BashOperator(Operator):
    """Run a shell command; fail on a non-zero exit."""

    name = "bash"
    Params = BashParams

    def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, BashParams)
        env = {**os.environ, **ctx.env(), **params.env}
        cwd = ctx.resolve_path(params.cwd) if params.cwd else str(ctx.pipeline_dir)
        if not os.path.isdir(cwd):
            where = "cwd" if params.cwd else "the pipeline's folder"
            raise TaskFailed(
                f"bash: the working directory {cwd} ({where}) is not a folder; "
                "create it, or set `cwd:` to an existing folder"
            )
        ctx.work_dir.mkdir(parents=True, exist_ok=True)  # $STAGEFLOW_WORK_DIR
        ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(ctx.log_path, "ab", buffering=0) as log:
            start = log.tell()
            masked = ctx.mask is not None  # secrets: the output goes through the mask
            gate, opener = os.pipe()  # the command waits on ``gate`` until it is watched
            try:
                proc = subprocess.Popen(  # the user's own command, by design
                    ["bash", "-c", _gated(params.command, gate)],
                    stdout=subprocess.PIPE if masked else log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                    pass_fds=(gate,),
                )
            except BaseException:
                os.close(opener)
                raise
            finally:
                os.close(gate)
            try:
                watch_group(proc.pid)  # killed with this process, even by kill -9 (lifeline)
            finally:
                with contextlib.suppress(OSError):  # the command exited already: nothing to open
                    os.write(opener, b"\n")
                os.close(opener)
            pump = (
                masked_copy(proc.stdout, log.write, ctx.mask)
                if ctx.mask is not None and proc.stdout is not None
                else None
            )
            try:
                code, peak_mb = _wait(proc, ctx)
            finally:
                forget_group(proc.pid)
                if pump is not None:
                    pump.join(timeout=5)
        if code == "cancelled":
            raise TaskFailed("cancelled: the command was killed")
        if code == "timeout":
            raise TaskFailed("timed out: the command was killed")
        if code == "memory":
            raise TaskFailed(memory_limit_message(peak_mb or 0.0, ctx.memory_limit_gb or 0.0))
        assert isinstance(code, int)
        tail = _tail(ctx.log_path, start)
        if code != 0:
            last = "\n".join(tail[-5:])
            why = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise TaskFailed(f"bash command {why}" + (f"; last output:\n{last}" if last else ""))
        return tail[-1] if tail else None


def _gated(command: str, gate: int) -> str:
    """``command``, first waiting for a line on descriptor ``gate`` (then closing it).

    Registering a command's process group with the lifeline can only follow its
    start, so a ``kill -9`` of this process in between would leave the command
    running unwatched; the command therefore does nothing until it is registered.
    If this process dies first, the gate reads end-of-file and the command exits
    (code 137, as if killed) without running a line. The prefix holds no newline,
    so the line numbers in bash's own messages are the command's."""
    return f"IFS= read -r _ <&{gate} || exit 137; exec {gate}<&-; {command}"


def masked_copy(
    source: IO[bytes],
    write: Callable[[bytes], Any],
    mask: Callable[[str], str],
    done: Callable[[], None] | None = None,
) -> threading.Thread:
    """A thread copying ``source`` to ``write`` a line at a time through ``mask`` (a
    secret split across two reads is still whole in its line), then closing ``source``
    and calling ``done``. The ``bash`` operator's output and a process worker's own
    output (``runtime.attempt``) go through it while secrets are known."""

    def copy() -> None:
        with source:
            for line in iter(source.readline, b""):
                write(mask(line.decode("utf-8", errors="replace")).encode("utf-8"))
        if done is not None:
            done()

    thread = threading.Thread(target=copy, name="stageflow-output-mask", daemon=True)
    thread.start()
    return thread


#: The command's own deadline kill waits this long past the deadline, so that the
#: runner's timeout (which fails the attempt as a timeout and may retry it) comes first.
_DEADLINE_GRACE = 0.5


def _wait(proc: subprocess.Popen[bytes], ctx: TaskContext) -> tuple[int | str, float | None]:
    """Wait for the command: its exit code, or why it was killed (``"cancelled"``,
    ``"timeout"``, ``"memory"``), and its tree's peak RSS in MiB.

    The process tree's memory is sampled every ``SAMPLE_SECONDS`` (a command that
    ends sooner has no peak); the command is reaped with ``wait4`` for its CPU time,
    its own and its waited-for children's. Both go to ``ctx.record_subprocess_usage``.
    (``wait4``'s peak is not used: it counts the memory of the process the command
    was started from, which is this whole process when a thread runs the task.)
    """
    limit_mb = None if ctx.memory_limit_gb is None else ctx.memory_limit_gb * 1024
    sampler = TreeSampler(proc.pid)
    next_sample = time.monotonic() + SAMPLE_SECONDS
    delay = 0.0005  # short commands return quickly; long ones are polled every _POLL_SECONDS
    killed_for: str | None = None
    while True:
        reaped = _reap(proc, os.WNOHANG)
        if reaped is not None:
            break
        if time.monotonic() >= next_sample:
            rss = sampler.sample()
            next_sample = time.monotonic() + SAMPLE_SECONDS
            if limit_mb is not None and rss is not None and rss > limit_mb:
                killed_for = "memory"
        remaining = ctx.remaining()
        if killed_for is None and ctx.cancelled.is_set():
            killed_for = "cancelled"
        if killed_for is None and remaining is not None and remaining <= -_DEADLINE_GRACE:
            killed_for = "timeout"  # a backstop: the runner times the attempt out first
        if killed_for is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            reaped = _reap(proc, 0)
            break
        ctx.cancelled.wait(
            delay if remaining is None else max(0.0, min(delay, remaining + _DEADLINE_GRACE))
        )
        delay = min(delay * 2, _POLL_SECONDS)
    code, cpu_seconds = reaped if reaped is not None else (0, 0.0)
    ctx.record_subprocess_usage(cpu_seconds, sampler.peak_mb)
    return (killed_for or code), sampler.peak_mb


def _reap(proc: subprocess.Popen[bytes], options: int) -> tuple[int, float] | None:
    """``wait4`` the command: (exit code, CPU seconds), or ``None`` while it runs
    (``os.WNOHANG``)."""
    try:
        pid, status, usage = os.wait4(proc.pid, options)
    except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): nothing measured
        proc.returncode = 0
        return 0, 0.0
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _tail(path: Any, start: int, limit: int = 64 * 1024) -> list[str]:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(max(start, end - limit))
        text = f.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if line.strip()]
