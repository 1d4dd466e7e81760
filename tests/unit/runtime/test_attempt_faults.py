"""An attempt reports an outcome whatever fails while it reports (``runtime.attempt``).

A full disk is ``/dev/full``: every write to it fails with ENOSPC, so a task that
points its own log there stands for a disk that filled up while it ran; a log
folder that cannot be made stands for a state folder on a broken disk. Before,
``execute`` raised there and the executor never got a result (a thread-executor
run hung; a process-executor worker died and its error was lost).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stageflow import Task
from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.runtime.attempt import Job, execute

needs_dev_full = pytest.mark.skipif(
    not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) to fill a disk"
)


def _log_on_a_full_disk(context: TaskContext) -> None:
    path = str(context.log_path)
    if os.path.lexists(path):
        os.remove(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink("/dev/full", path)


def raises_value_error(context: TaskContext) -> None:
    _log_on_a_full_disk(context)
    raise ValueError("the original failure")


def raises_task_failed(context: TaskContext) -> None:
    _log_on_a_full_disk(context)
    raise TaskFailed("the task's own reason")


def succeeds(context: TaskContext) -> int:
    _log_on_a_full_disk(context)
    return 7


def _job(home: Path, fn: Callable[..., Any]) -> Job:
    return Job(
        run_id="run",
        task=Task("t", fn),
        attempt=1,
        parameters={},
        run_params={},
        artifacts_root=str(home / "artifacts"),
        logs_dir=home / "logs",
        inline_limit=1 << 20,
    )


@needs_dev_full
@pytest.mark.parametrize(
    ("fn", "error"),
    [
        pytest.param(raises_value_error, "ValueError: the original failure", id="exception"),
        pytest.param(raises_task_failed, "the task's own reason", id="task-failed"),
    ],
)
def test_a_failure_is_reported_when_its_log_cannot_be_written(
    tmp_path: Path, fn: Callable[..., Any], error: str
) -> None:
    result = execute(_job(tmp_path, fn))
    assert not result.ok
    assert result.error is not None
    log = tmp_path / "logs" / "run" / "t" / "attempt-1.log"
    assert result.error == (
        f"{error} (and the task log {log} could not be written: No space left on device)"
    )


@needs_dev_full
def test_a_success_is_reported_when_its_log_cannot_be_written(tmp_path: Path) -> None:
    result = execute(_job(tmp_path, succeeds))
    assert result.ok, result.error
    assert result.value == 7


@pytest.mark.parametrize("in_process", [False, True], ids=["thread", "worker-process"])
def test_an_attempt_whose_log_folder_cannot_be_made_fails_with_why(
    tmp_path: Path, in_process: bool
) -> None:
    (tmp_path / "logs").write_text("a file where the logs folder should be")
    result = execute(_job(tmp_path, raises_value_error), in_process=in_process)
    assert not result.ok
    missing = f"NotADirectoryError: [Errno 20] Not a directory: '{tmp_path / 'logs' / 'run'}'"
    if in_process:  # a worker opens the log before the task runs: the attempt cannot start
        assert result.error == f"the attempt failed outside the task's code: {missing}"
    else:  # the task ran (its log is opened on its first print) and failed on the folder
        log = tmp_path / "logs" / "run" / "t" / "attempt-1.log"
        assert result.error == (
            f"{missing} (and the task log {log} could not be written: Not a directory)"
        )
