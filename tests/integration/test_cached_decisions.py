"""A cache hit is what its producing attempt did, not only its output: the metrics
that attempt recorded feed ``when:`` conditions and ``inputs:`` bindings as if the
task had run, its ``SkipDownstream`` decision skips the same tasks with the same
reason. Without the producing attempt's log folder the metrics come from its run's
record; with neither, a hit whose metrics are read runs the task again. Steps write
a ledger, so a hit is a name missing from it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import cached_steps as cs
import helpers_tasks as h
import pytest
from helpers_tasks import read_lines, store_of

from stageflow import Pipeline, Task
from stageflow.operators.metadata import read_metadata
from stageflow.runtime.result import RunResult
from stageflow.runtime.runner import Runner, retry_run
from stageflow.runtime.settings import Settings
from stageflow.spec.models import TriggerRule

pytestmark = pytest.mark.slow

ALL_METRICS = {"drifted_columns": 2.0, "error_rate": 0.25}


@pytest.fixture(autouse=True)
def _no_settings_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in set(os.environ) - set(h.clean_environ(os.environ)):
        monkeypatch.delenv(name)


def measured(ledger: Path) -> Pipeline:
    """measure (cached, records metrics) -> gate (when: > 1), quiet (when: > 5), use
    (inputs: one metric and all of them)."""
    log = {"ledger": str(ledger)}
    return Pipeline(
        "cached-metrics",
        tasks=[
            Task("measure", cs.measure, parameters=log, cache=True),
            Task(
                "gate",
                cs.step,
                parameters={**log, "name": "gate"},
                upstream=["measure"],
                when="${measure.metrics.drifted_columns} > 1",
            ),
            Task(
                "quiet",
                cs.step,
                parameters={**log, "name": "quiet"},
                upstream=["measure"],
                when="${measure.metrics.drifted_columns} > 5",
            ),
            Task(
                "use",
                cs.use,
                parameters=log,
                inputs={"drifted": "measure.metrics.drifted_columns", "verdict": "measure.metrics"},
            ),
        ],
    )


def ledger_of(tmp_path: Path) -> Path:
    """The folder the steps' ledger file is in (``cached_steps``)."""
    folder = tmp_path / "ledger"
    folder.mkdir()
    return folder


def rows(home: Path, result: RunResult) -> dict[str, tuple[str, str | None, str | None]]:
    with store_of(home) as store:
        return {r.task_id: (r.state, r.note, r.error) for r in store.task_runs(result.run_id)}


def hit_message(home: Path, result: RunResult, task_id: str) -> str:
    with store_of(home) as store:
        messages = [
            e.message or ""
            for e in store.events(result.run_id)
            if e.task_id == task_id and e.to_state == "success"
        ]
    assert len(messages) == 1, messages
    return messages[0]


def test_a_cache_hit_feeds_conditions_and_inputs_with_its_producers_metrics(
    tmp_path: Path,
) -> None:
    home, ledger = tmp_path / "home", ledger_of(tmp_path)
    pipeline = measured(ledger)
    first = pipeline.run(executor="thread", home=str(home))
    assert first.state == "success"
    expected: dict[str, Any] = {"drifted": 2.0, "verdict": ALL_METRICS}
    assert first.output("use") == expected
    before = rows(home, first)
    assert before["gate"][0] == "success" and before["quiet"][0] == "skipped"

    second = pipeline.run(executor="thread", home=str(home))

    assert second.state == "success"
    after = rows(home, second)
    assert after["measure"] == ("success", "cached", None)
    assert f"cached: output of run {first.run_id}" in hit_message(home, second, "measure")
    assert read_lines(ledger / cs.LINES).count("measure") == 1  # the hit did not run
    # the hit's own metadata file holds them: what a resumed run reads
    assert read_metadata(home / "logs", second.run_id, "measure", 1)["metrics"] == ALL_METRICS
    assert second.output("use") == expected
    assert (after["gate"], after["quiet"]) == (before["gate"], before["quiet"])
    ran = read_lines(ledger / cs.LINES)
    assert ran.count("gate") == 2 and "quiet" not in ran


def test_a_hit_without_its_producers_log_folder_reads_the_metrics_its_record_kept(
    tmp_path: Path,
) -> None:
    home, ledger = tmp_path / "home", ledger_of(tmp_path)
    pipeline = measured(ledger)
    first = pipeline.run(executor="thread", home=str(home))
    assert first.state == "success"
    folder = home / "logs" / first.run_id / "measure"
    assert (folder / "metadata-1.json").is_file()
    shutil.rmtree(folder)

    second = pipeline.run(executor="thread", home=str(home))

    assert second.state == "success"
    assert rows(home, second)["measure"] == ("success", "cached", None)
    assert read_lines(ledger / cs.LINES).count("measure") == 1
    assert second.output("use") == {"drifted": 2.0, "verdict": ALL_METRICS}
    assert rows(home, second)["gate"][0] == "success"


def test_a_hit_whose_producers_metrics_are_gone_runs_the_task_again(tmp_path: Path) -> None:
    """No metadata file and no ended record of the producing run to read them from
    (here: both removed): the metrics cannot be known, so the task runs again."""
    home, ledger = tmp_path / "home", ledger_of(tmp_path)
    pipeline = measured(ledger)
    first = pipeline.run(executor="thread", home=str(home))
    assert first.state == "success"
    shutil.rmtree(home / "logs" / first.run_id / "measure")
    with sqlite3.connect(home / "stageflow.db") as db:
        assert db.execute("DELETE FROM run_records WHERE run_id = ?", (first.run_id,)).rowcount == 1
    db.close()

    second = pipeline.run(executor="thread", home=str(home))

    assert second.state == "success"
    assert rows(home, second)["measure"] == ("success", None, None)
    assert read_lines(ledger / cs.LINES).count("measure") == 2
    assert second.output("use") == {"drifted": 2.0, "verdict": ALL_METRICS}
    assert rows(home, second)["gate"][0] == "success"


def test_a_hit_on_a_step_whose_metrics_are_in_its_output_still_hits(tmp_path: Path) -> None:
    """A step that records nothing and returns ``{"metrics": ...}``: conditions read the
    output's metrics, so the hit needs no metadata file (it has none to copy)."""
    home, ledger = tmp_path / "home", ledger_of(tmp_path)
    log = {"ledger": str(ledger)}
    pipeline = Pipeline(
        "output-metrics",
        tasks=[
            Task("score", cs.score, parameters=log, cache=True),
            Task(
                "gate",
                cs.step,
                parameters={**log, "name": "gate"},
                upstream=["score"],
                when="${score.metrics.accuracy} > 0.5",
            ),
        ],
    )
    first = pipeline.run(executor="thread", home=str(home))
    assert first.state == "success" and rows(home, first)["gate"][0] == "success"

    second = pipeline.run(executor="thread", home=str(home))

    assert second.state == "success"
    assert rows(home, second)["score"] == ("success", "cached", None)
    assert rows(home, second)["gate"][0] == "success"
    ran = read_lines(ledger / cs.LINES)
    assert ran.count("score") == 1 and ran.count("gate") == 2


def test_a_cached_skip_downstream_skips_the_same_tasks_with_the_same_reason(
    tmp_path: Path,
) -> None:
    home, ledger = tmp_path / "home", ledger_of(tmp_path)
    log = {"ledger": str(ledger)}
    pipeline = Pipeline(
        "cached-skip",
        tasks=[
            Task("check", cs.check, parameters=log, cache=True),
            Task("child", cs.step, parameters={**log, "name": "child"}, upstream=["check"]),
            Task(
                "after_child",
                cs.step,
                parameters={**log, "name": "after_child"},
                upstream=["child"],
                trigger_rule=TriggerRule.NONE_FAILED,
            ),
        ],
    )
    first = pipeline.run(executor="thread", home=str(home))
    assert first.state == "success"
    reason = "3 rows failed not_null(amount)"
    skipped = ("skipped", None, f"skipped: task 'check' skips its downstream ({reason})")
    assert rows(home, first)["check"] == ("success", "skipped downstream", reason)
    assert rows(home, first)["child"] == skipped

    second = pipeline.run(executor="thread", home=str(home))

    assert second.state == "success"
    assert f"cached: output of run {first.run_id}" in hit_message(home, second, "check")
    after = rows(home, second)
    assert after["check"] == ("success", "cached, skipped downstream", reason)
    assert second.tasks["check"].cached and not first.tasks["check"].cached
    assert after["child"] == skipped
    assert after["after_child"][0] == "success"
    assert second.output("check") == {"rows": 3}
    ran = read_lines(ledger / cs.LINES)
    assert ran.count("check") == 1 and "child" not in ran and ran.count("after_child") == 2

    # a resume decides again from the hit's note: `child` stays skipped, never runs
    settings = Settings(home=home)
    with store_of(home) as store:
        runner = Runner(pipeline, store=store, settings=settings)
        again = runner.resume(store.get_run(second.run_id), rerun=["after_child"])
    assert again.state == "success"
    assert rows(home, second)["child"] == skipped
    ran = read_lines(ledger / cs.LINES)
    assert "child" not in ran and ran.count("after_child") == 3


def test_an_entry_whose_producer_ran_again_in_its_run_is_a_miss(tmp_path: Path) -> None:
    """`retry --from` ran the producing task again in its run, under another key: the
    run's task run, metadata and note are now the later attempt's, so the entry of the
    first success is a miss (a hit would pair the first output with the later metrics)."""
    home, ledger = tmp_path / "home", ledger_of(tmp_path)
    source = tmp_path / "value.txt"
    source.write_text("1")
    first_version = source.stat()
    log = {"ledger": str(ledger)}
    pipeline = Pipeline(
        "rerun-metrics",
        tasks=[
            Task("read", cs.read_value, parameters={**log, "source": str(source)}, cache=True),
            Task(
                "compare",
                cs.compare,
                parameters=log,
                upstream=["read"],
                inputs={"value": "read.metrics.value"},
            ),
        ],
    )
    first = pipeline.run(executor="thread", home=str(home))
    assert first.output("compare") == {"output": 1.0, "metric": 1.0}
    source.write_text("2")
    again = retry_run(first.run_id, from_task="read", executor="thread", home=str(home))
    assert again.state == "success"
    assert again.output("compare") == {"output": 2.0, "metric": 2.0}
    source.write_text("1")  # the first version again: the first entry's key
    os.utime(source, ns=(first_version.st_atime_ns, first_version.st_mtime_ns))

    second = pipeline.run(executor="thread", home=str(home))

    assert second.state == "success"
    assert rows(home, second)["read"] == ("success", None, None)  # ran, not a hit
    assert read_lines(ledger / cs.LINES).count("read") == 3
    assert second.output("compare") == {"output": 1.0, "metric": 1.0}
