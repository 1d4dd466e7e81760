"""Table rows in and out: real runs whose tasks pass pandas tables, on both executors.

``table_tasks``: ``load_users`` (10 rows) and ``load_orders`` (5) start the tables,
``clean`` keeps 6 of the 10 users, ``joined`` stacks them on the orders (11),
``summary`` reads ``joined`` and ``clean`` (17 rows in) and returns a dict,
``banner`` touches no table. The run took 15 records in (10 + 5).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import table_tasks as tt

from stageflow import Orchestrator, Pipeline, Task
from stageflow.runtime.result import TaskResult
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store

EXECUTORS = [pytest.param("thread", id="thread"), pytest.param("process", id="process")]

EXPECTED = {
    "load_users": (None, 10),
    "load_orders": (None, 5),
    "clean": (10, 6),
    "joined": (11, 11),
    "summary": (17, None),
    "banner": (None, None),
}


def _tasks() -> list[Task]:
    return [
        Task("load_users", tt.load_users),
        Task("load_orders", tt.load_orders),
        Task("clean", tt.clean, upstream=["load_users"]),
        Task("joined", tt.joined, upstream=["clean", "load_orders"]),
        Task("summary", tt.summary, upstream=["joined", "clean"]),
        Task("banner", tt.banner),
    ]


def _rows(tasks: dict[str, TaskResult]) -> dict[str, tuple[int | None, int | None]]:
    return {tid: (t.rows_in, t.rows_out) for tid, t in tasks.items()}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_run_of_tables_counts_its_rows_exactly(executor: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    pipeline = Pipeline("tables", tasks=_tasks(), params={"users": 10, "orders": 5})
    with Orchestrator(settings=settings, executor=executor) as orch:
        result = orch.execute(pipeline)
        status = orch.status(result.run_id)

    assert result.state == "success"
    assert _rows(result.tasks) == EXPECTED
    assert (result.rows_in, result.rows_out, result.total_records_processed) == (38, 32, 15)
    # the store answers the same, read back by another query (another process would)
    assert _rows(status.tasks) == EXPECTED
    assert status.total_records_processed == 15
    doc = result.as_json()
    assert (doc["rows_in"], doc["rows_out"], doc["total_records_processed"]) == (38, 32, 15)
    assert (doc["tasks"]["clean"]["rows_in"], doc["tasks"]["clean"]["rows_out"]) == (10, 6)
    assert "rows_in" not in doc["tasks"]["banner"]  # a task without tables keeps its shape
    with open_store(settings.database_url, settings.home) as store:
        stored = {a.task_id: (a.rows_in, a.rows_out) for a in store.attempts(result.run_id)}
    assert stored == EXPECTED  # the non-table task records none


@pytest.mark.parametrize("executor", EXECUTORS)
def test_resume_keeps_the_rows_of_the_tasks_it_does_not_repeat(
    executor: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home")
    flag = tmp_path / "flag"
    pipeline = Pipeline(
        "tables",
        tasks=[*_tasks(), Task("gate", tt.gate, upstream=["summary", "joined"])],
        params={"users": 10, "orders": 5, "flag": str(flag)},
    )
    with Orchestrator(settings=settings, executor=executor) as orch:
        failed = orch.execute(pipeline)
        assert (failed.state, failed.tasks["gate"].state) == ("failed", "failed")
        assert (failed.tasks["gate"].rows_in, failed.tasks["gate"].rows_out) == (11, None)
        assert failed.total_records_processed == 15
        flag.touch()
        resumed = orch.resume(failed.run_id)
        status = orch.status(failed.run_id)

    assert resumed.state == "success"
    assert {tid: t.attempts for tid, t in resumed.tasks.items()} == {
        **dict.fromkeys(EXPECTED, 1),
        "gate": 2,
    }
    expected = {**EXPECTED, "gate": (11, None)}
    assert _rows(resumed.tasks) == expected  # the earlier process's rows, from the store
    assert _rows(status.tasks) == expected
    assert resumed.total_records_processed == status.total_records_processed == 15
    with open_store(settings.database_url, settings.home) as store:
        gate = [
            (a.attempt, a.state, a.rows_in, a.rows_out)
            for a in store.attempts(failed.run_id, "gate")
        ]
    # the failed attempt counted the rows it took in, too
    assert gate == [
        (1, "failed", 11, None),
        (2, "success", 11, None),
    ]


def test_runs_show_prints_each_tasks_rows_and_the_records_processed(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from stageflow.service.cli import cli

    settings = Settings(home=tmp_path / "home")
    pipeline = Pipeline("tables", tasks=_tasks(), params={"users": 10, "orders": 5})
    with Orchestrator(settings=settings) as orch:
        run_id = orch.execute(pipeline).run_id

    shown = CliRunner().invoke(cli, ["--home", str(settings.home), "runs", "show", run_id])
    assert shown.exit_code == 0, shown.output
    lines: dict[str, str] = {}  # the first table (later tables name the tasks again)
    for line in shown.output.splitlines():
        if line.strip():
            lines.setdefault(line.split()[0], line)
    assert lines["clean"].rstrip().endswith("10 -> 6")
    assert lines["load_users"].rstrip().endswith("- -> 10")
    assert lines["banner"].rstrip().endswith("-")
    assert "records processed: 15 (rows in 38, rows out 32)" in shown.output
    as_json = CliRunner().invoke(
        cli, ["--home", str(settings.home), "runs", "show", run_id, "--format", "json"]
    )
    assert '"total_records_processed": 15' in as_json.output
