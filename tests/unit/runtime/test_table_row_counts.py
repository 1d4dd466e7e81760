"""Counting table rows: which objects are tables, and a run's records processed."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from stageflow.runtime.attempt import table_rows
from stageflow.runtime.result import RunResult, TaskResult, records_processed, rows_by_task
from stageflow.runtime.store import AttemptRecord


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(pd.DataFrame({"a": range(7)}), 7, id="dataframe"),
        pytest.param(pd.DataFrame(), 0, id="empty-dataframe"),
        pytest.param(pd.Series(range(3)), None, id="series-is-not-a-table"),
        pytest.param([1, 2, 3], None, id="list"),
        pytest.param({"a": [1, 2]}, None, id="dict"),
        pytest.param(None, None, id="none"),
    ],
)
def test_table_rows(value: object, expected: int | None) -> None:
    assert table_rows(value) == expected


def test_counting_imports_no_table_library() -> None:
    code = (
        "import sys\n"
        "from stageflow.runtime.attempt import table_rows\n"
        "assert table_rows([1, 2]) is None and table_rows('x') is None\n"
        "print(sorted(m for m in ('pandas', 'polars', 'pyarrow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param([(None, 10), (10, 6), (6, None)], 10, id="chain-counts-the-load-once"),
        pytest.param([(None, 10), (None, 5), (16, 16)], 15, id="two-sources"),
        pytest.param([(None, None), (3, None)], None, id="no-table-out-of-a-source"),
        pytest.param([], None, id="no-tasks"),
        pytest.param([(None, 0)], 0, id="an-empty-table-is-zero"),
    ],
)
def test_records_processed(rows: list[tuple[int | None, int | None]], expected: int | None) -> None:
    assert records_processed(rows) == expected


def test_rows_by_task_takes_each_task_s_last_attempt() -> None:
    attempts = [
        AttemptRecord("r", "a", 2, "success", rows_in=4, rows_out=2),
        AttemptRecord("r", "a", 1, "failed", rows_in=4),
        AttemptRecord("r", "b", 1, "success"),
        AttemptRecord("r", "c", 1, "success", rows_out=9),
    ]
    assert rows_by_task(attempts) == {"a": (4, 2), "c": (None, 9)}


def test_a_run_sums_its_tasks_rows() -> None:
    tasks = {
        "load": TaskResult("load", "success", 1, 0.0, 1.0, None, rows_out=10),
        "clean": TaskResult("clean", "success", 1, 1.0, 2.0, None, rows_in=10, rows_out=6),
        "plain": TaskResult("plain", "success", 1, 1.0, 2.0, None),
    }
    run = RunResult("r", "p", "success", 0.0, 2.0, tasks)
    assert (run.rows_in, run.rows_out, run.total_records_processed) == (10, 16, 10)
    empty = RunResult("r", "p", "success", 0.0, 2.0, {})
    assert (empty.rows_in, empty.rows_out, empty.total_records_processed) == (None, None, None)
    assert run.as_json()["total_records_processed"] == 10
    assert run.as_json()["tasks"]["clean"]["rows_out"] == 6
    # a run or task without tables keeps the JSON shape it had before rows were counted
    assert set(empty.as_json()) == {
        "run_id",
        "pipeline",
        "state",
        "started_at",
        "ended_at",
        "tasks",
    }
    assert "rows_in" not in run.as_json()["tasks"]["plain"]
