"""The ``bash`` operator: run ``command`` with ``bash -c``.

stdout and stderr go, merged and in order, to the attempt's log; the output is
the last non-empty line (as Airflow's BashOperator pushes). A non-zero exit
fails the task. The environment holds the parent's, the attempt's
(``STAGEFLOW_RUN_ID``, ``STAGEFLOW_TASK_ID``, ``STAGEFLOW_ATTEMPT``,
``STAGEFLOW_IDEMPOTENCY_KEY``), each run parameter as ``STAGEFLOW_PARAM_<NAME>``
and the task's ``env``. On timeout or cancellation the whole process group is
killed (the command runs in its own session), whichever executor runs it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stageflow.operators.base import Operator, TaskContext, TaskFailed

__all__ = ["BashOperator", "BashParams"]

_POLL_SECONDS = 0.05


class BashParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, description="the script, run with `bash -c`")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment")
    cwd: str | None = Field(default=None, description="working directory (default: a scratch dir)")


class BashOperator(Operator):
    """Run a shell command; fail on a non-zero exit."""

    name = "bash"
    Params = BashParams

    def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, BashParams)
        env = {**os.environ, **ctx.env(), **params.env}
        cwd = params.cwd or str(ctx.work_dir)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(ctx.log_path, "ab", buffering=0) as log:
            start = log.tell()
            proc = subprocess.Popen(  # the user's own command, by design
                ["bash", "-c", params.command],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
            code = self._wait(proc, ctx)
        if code is None:
            raise TaskFailed("cancelled: the command was killed")
        if isinstance(code, str):
            raise TaskFailed("timed out: the command was killed")
        tail = _tail(ctx.log_path, start)
        if code != 0:
            last = "\n".join(tail[-5:])
            why = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise TaskFailed(f"bash command {why}" + (f"; last output:\n{last}" if last else ""))
        return tail[-1] if tail else None

    @staticmethod
    def _wait(proc: subprocess.Popen[bytes], ctx: TaskContext) -> int | str | None:
        while True:
            remaining = ctx.remaining()
            step = _POLL_SECONDS if remaining is None else min(_POLL_SECONDS, remaining)
            try:
                return proc.wait(timeout=step)
            except subprocess.TimeoutExpired:
                pass
            if ctx.cancelled.is_set():
                _kill(proc)
                return None
            if remaining is not None and remaining <= 0:
                _kill(proc)
                return "timeout"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: Any, start: int, limit: int = 64 * 1024) -> list[str]:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(max(start, end - limit))
        text = f.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if line.strip()]
