"""What a running attempt sees of itself (``operators.base.TaskContext``)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stageflow.operators.base import TaskContext, TaskFailed

LOGGER = logging.getLogger("test.task_context")


def context(**changes: Any) -> TaskContext:
    args: dict[str, Any] = {
        "run_id": "run-1",
        "task_id": "train",
        "attempt": 2,
        "params": {},
        "work_dir": "/tmp/work",
        "log_path": "/tmp/log.txt",
        "logger": LOGGER,
    }
    args.update(changes)
    return TaskContext(**args)


@pytest.mark.parametrize(
    "given",
    [
        pytest.param("/data/run-1/train/work-2", id="str"),
        pytest.param("relative/work", id="relative-str"),
        pytest.param(Path("/data/run-1/train/work-2"), id="path"),
    ],
)
def test_work_dir_and_log_path_come_back_as_paths(given: str | Path) -> None:
    ctx = context(work_dir=given, log_path=given)

    for value in (ctx.work_dir, ctx.log_path):
        assert isinstance(value, Path)
        assert value == Path(given)
        if isinstance(given, Path):
            assert value is given  # a Path is kept as it is
    assert ctx.work_dir is ctx.work_dir  # converted once, then kept
    assert ctx.log_path is ctx.log_path


def test_defaults() -> None:
    ctx = context()

    assert isinstance(ctx.cancelled, threading.Event)
    assert not ctx.cancelled.is_set()
    assert context().cancelled is not ctx.cancelled  # a fresh flag per context
    assert ctx.extra_env == {}
    assert ctx.deadline is None
    assert ctx.remaining() is None
    assert ctx.artifacts_root is None
    assert ctx.artifacts is None
    assert ctx.home is None
    assert ctx.memory_limit_gb is None
    assert ctx.subprocess_cpu_seconds == 0.0
    assert ctx.subprocess_peak_rss_mb is None


def test_a_given_cancellation_flag_is_used() -> None:
    flag = threading.Event()
    ctx = context(cancelled=flag)

    flag.set()

    assert ctx.cancelled is flag
    assert ctx.cancelled.is_set()


def test_remaining_counts_down_to_the_deadline_and_stops_at_zero() -> None:
    left = context(deadline=time.time() + 60).remaining()
    assert left is not None
    assert 50 < left <= 60
    assert context(deadline=time.time() - 5).remaining() == 0.0


def test_env_describes_the_attempt() -> None:
    ctx = context(
        params={"lr": 0.1, "name": "churn", "layers": [1, 2], "cfg": {"a": None}, "on": True},
        extra_env={"CUDA_VISIBLE_DEVICES": "0,1"},
        pipeline_dir="/pipelines/churn",
    )

    assert ctx.env() == {
        "STAGEFLOW_RUN_ID": "run-1",
        "STAGEFLOW_TASK_ID": "train",
        "STAGEFLOW_ATTEMPT": "2",
        "STAGEFLOW_IDEMPOTENCY_KEY": "run-1/train",
        "STAGEFLOW_PIPELINE_DIR": "/pipelines/churn",
        "STAGEFLOW_WORK_DIR": "/tmp/work",
        "STAGEFLOW_PARAM_LR": "0.1",
        "STAGEFLOW_PARAM_NAME": "churn",  # a string as it is, not JSON-quoted
        "STAGEFLOW_PARAM_LAYERS": "[1, 2]",
        "STAGEFLOW_PARAM_CFG": '{"a": null}',
        "STAGEFLOW_PARAM_ON": "true",
        "CUDA_VISIBLE_DEVICES": "0,1",
    }


def test_the_runtime_variables_win_over_a_parameter_of_the_same_name() -> None:
    ctx = context(params={"x": 1}, extra_env={"STAGEFLOW_PARAM_X": "from-runtime"})

    assert ctx.env()["STAGEFLOW_PARAM_X"] == "from-runtime"


def test_idempotency_key_is_the_same_for_every_attempt() -> None:
    assert context(attempt=1).idempotency_key == context(attempt=3).idempotency_key
    assert context().idempotency_key == "run-1/train"


def test_subprocess_usage_adds_cpu_and_keeps_the_largest_peak() -> None:
    ctx = context()

    ctx.record_subprocess_usage(1.5, None)
    ctx.record_subprocess_usage(0.5, 300.0)
    ctx.record_subprocess_usage(2.0, 100.0)

    assert ctx.subprocess_cpu_seconds == 4.0
    assert ctx.subprocess_peak_rss_mb == 300.0


def test_repr_names_the_run_task_and_attempt() -> None:
    assert repr(context()) == "TaskContext(run_id='run-1', task_id='train', attempt=2)"


class MemoryFiles:
    """A ``FileStore`` in memory: what was put where."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def put(self, relpath: str, data: bytes) -> str:
        self.files[relpath] = data
        return f"memory://{relpath}"


def test_write_file_puts_the_bytes_in_the_tasks_folder_of_the_artifact_store() -> None:
    files = MemoryFiles()
    ctx = context(artifacts=files)

    uri = ctx.write_file("plots/roc.png", b"png")

    assert uri == "memory://runs/run-1/train/plots/roc.png"
    assert files.files == {"runs/run-1/train/plots/roc.png": b"png"}


def test_write_file_writes_whole_files_through_the_runtime_artifact_store(
    tmp_path: Path,
) -> None:
    from stageflow.runtime.artifacts import ArtifactStore

    ctx = context(artifacts=ArtifactStore(str(tmp_path)))

    first = ctx.write_file("model.joblib", b"old")
    second = ctx.write_file("model.joblib", b"new")

    assert first == second == str(tmp_path / "runs" / "run-1" / "train" / "model.joblib")
    assert Path(first).read_bytes() == b"new"
    assert sorted(p.name for p in Path(first).parent.iterdir()) == ["model.joblib"]  # no temp


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param(".", id="dot"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("../other/model.joblib", id="up"),
        pytest.param("a/../../b", id="up-inside"),
        pytest.param("a\\b", id="backslash"),
    ],
)
def test_write_file_refuses_a_name_outside_the_tasks_folder(name: str) -> None:
    files = MemoryFiles()

    with pytest.raises(ValueError, match=r"task 'train': file name .* must be a relative path"):
        context(artifacts=files).write_file(name, b"x")
    assert files.files == {}


def test_a_stopped_attempt_writes_no_file() -> None:
    files = MemoryFiles()
    ctx = context(artifacts=files)
    ctx.cancelled.set()  # timed out or cancelled: a thread goes on, abandoned

    with pytest.raises(TaskFailed, match="task 'train' attempt 2 was stopped"):
        ctx.write_file("model.joblib", b"late")
    assert files.files == {}


def test_write_file_without_an_artifact_store_says_so() -> None:
    with pytest.raises(RuntimeError, match="no artifact store"):
        context().write_file("report.json", b"{}")
