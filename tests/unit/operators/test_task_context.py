"""What a running attempt sees of itself (``operators.base.TaskContext``)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stageflow.operators.base import TaskContext

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
    )

    assert ctx.env() == {
        "STAGEFLOW_RUN_ID": "run-1",
        "STAGEFLOW_TASK_ID": "train",
        "STAGEFLOW_ATTEMPT": "2",
        "STAGEFLOW_IDEMPOTENCY_KEY": "run-1/train",
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
