"""Mapped elements listed by index: ``train``, ``train[0]``, ..., ``train[10]``, in a
run's result, its usage per task and its Gantt chart, whatever order they ran in."""

from __future__ import annotations

import re

import pytest

from stageflow.runtime.result import RunResult, TaskResult, index_order
from stageflow.runtime.store.base import AttemptRecord, RunRecord
from stageflow.runtime.usage import task_usage
from stageflow.service.gantt import gantt


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(["a", "b"], ["a", "b"], id="nothing-mapped"),
        pytest.param(
            ["items", "train", "total", "train[4]", "train[3]", "train[10]", "train[0]"],
            ["items", "train", "train[0]", "train[3]", "train[4]", "train[10]", "total"],
            id="after-the-parent-by-number",
        ),
        pytest.param(
            ["train[2]", "x", "train[1]"], ["train[1]", "train[2]", "x"], id="parent-unlisted"
        ),
        pytest.param(
            ["t", "t[1]", "t[0]", "t[1][1]", "t[1][0]"],
            ["t", "t[0]", "t[1]", "t[1][0]", "t[1][1]"],
            id="nested",
        ),
        pytest.param(["a[x]", "a"], ["a[x]", "a"], id="not-an-index"),
    ],
)
def test_index_order(given: list[str], expected: list[str]) -> None:
    assert index_order(given) == expected


def _attempt(task: str, started: float) -> AttemptRecord:
    return AttemptRecord("r1", task, 1, "success", started, started + 1.0, None)


FINISHED = ["train[4]", "train[3]", "train[0]", "train[2]", "train[1]"]


def test_a_run_result_lists_mapped_elements_by_index() -> None:
    tasks = {t: TaskResult(t, "success", 1, 0.0, 1.0, None) for t in ["train", *FINISHED]}
    result = RunResult("r1", "p", "success", 0.0, 1.0, tasks)
    assert list(result.tasks) == ["train", *(f"train[{k}]" for k in range(5))]
    assert list(result.as_json()["tasks"]) == list(result.tasks)


def test_usage_and_the_gantt_list_mapped_elements_by_index() -> None:
    attempts = [_attempt(t, float(i)) for i, t in enumerate(FINISHED)]
    assert [u.task_id for u in task_usage(attempts)] == [f"train[{k}]" for k in range(5)]
    run = RunRecord("r1", "p", "v1", "success", {}, 0.0, 0.0)
    svg = gantt(run, FINISHED, attempts, "svg")
    assert isinstance(svg, str)
    assert re.findall(r">(train\[\d\])<", svg) == [f"train[{k}]" for k in range(5)]
