"""``stageflow stats`` through the real CLI on SQLite: a pipeline whose ``train``
fails when the run parameter ``fail`` is not 0, run four times."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stageflow.runtime.store import PipelineRecord, RunRecord, open_store

STAGEFLOW = Path(sys.executable).with_name("stageflow")
SPEC = """\
name: nightly
params: {fail: 0}
tasks:
  - {id: extract, operator: bash, parameters: {command: "echo extract"}}
  - id: train
    operator: bash
    upstream: [extract]
    parameters: {command: "test ${params.fail} = 0 || { echo broke; exit 3; }"}
  - {id: report, operator: bash, upstream: [train], parameters: {command: "echo done"}}
"""
FAILS = (0, 1, 0, 1, 0)


def sf(home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real CLI; never a traceback or an internal error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env["STAGEFLOW_HOME"] = str(home)
    proc = subprocess.run(
        [str(STAGEFLOW), *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc
    assert "internal error" not in proc.stderr, proc
    return proc


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stats")
    spec = root / "nightly.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    home = root / "home"
    for fail in FAILS:
        done = sf(home, "run", spec, "--param", f"fail={fail}")
        assert done.returncode == (1 if fail else 0), done.stderr
    return home


def test_json_counts_rates_durations_and_the_last_failure(home: Path) -> None:
    done = sf(home, "stats", "nightly", "--format", "json")

    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["pipeline"] == "nightly"
    assert doc["days"] == 30
    assert doc["runs"] == 5
    assert doc["runs_by_state"] == {"failed": 2, "success": 3}
    tasks = {t["task_id"]: t for t in doc["tasks"]}
    assert list(tasks) == ["extract", "train", "report"]
    counts = {
        tid: (t["runs"], t["successes"], t["failures"], t["other"], t["success_rate"])
        for tid, t in tasks.items()
    }
    assert counts == {
        "extract": (5, 5, 0, 0, 1.0),
        "train": (5, 3, 2, 0, 0.6),
        "report": (5, 3, 0, 2, 1.0),  # upstream_failed twice: not report's failure
    }
    train = tasks["train"]
    assert 0 <= train["p50_seconds"] <= train["p95_seconds"]
    assert train["last_failure"].startswith("bash command exited with code 3")
    assert "\n" not in train["last_failure"]
    assert train["last_failure_at"] is not None
    newest_failed = json.loads(sf(home, "runs", "list", "--format", "json").stdout)[1]
    assert train["last_failure_run_id"] == newest_failed["run_id"]  # FAILS ends 1, 0
    assert tasks["extract"]["last_failure"] is None


def test_text_is_an_aligned_table(home: Path) -> None:
    done = sf(home, "stats", "nightly")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:6] == ["task", "runs", "ok", "failed", "other", "success"]
    assert lines[1].split()[:6] == ["extract", "5", "5", "0", "0", "100.0%"]
    assert lines[2].split()[:6] == ["train", "5", "3", "2", "0", "60.0%"]
    assert "bash command exited with code 3" in lines[2]
    assert lines[3].split()[:6] == ["report", "5", "3", "0", "2", "100.0%"]
    ends = {line.index("%") for line in lines[1:4]}
    assert len(ends) == 1, "the success column is right-aligned"
    assert lines[-1] == "runs: 5 (2 failed, 3 success)"


def test_csv_has_a_header_and_one_row_per_task(home: Path) -> None:
    done = sf(home, "stats", "nightly", "--days", "1", "--format", "csv")

    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["task_id"] for r in rows] == ["extract", "train", "report"]
    train = rows[1]
    assert (train["runs"], train["successes"], train["failures"]) == ("5", "3", "2")
    assert train["success_rate"] == "0.6"
    assert train["last_failure"].startswith("bash command exited with code 3")


def test_an_unknown_pipeline_names_the_closest(home: Path) -> None:
    done = sf(home, "stats", "nightyl")

    assert done.returncode == 1
    assert done.stdout == ""
    assert "no pipeline 'nightyl'" in done.stderr
    assert "did you mean 'nightly'?" in done.stderr


@pytest.mark.parametrize("days", [0, 3661])
def test_days_out_of_range_is_a_usage_error(home: Path, days: int) -> None:
    done = sf(home, "stats", "nightly", "--days", str(days))

    assert done.returncode == 2
    assert "--days" in done.stderr


def test_no_runs_in_the_window_says_so_and_prints_empty_rows(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = open_store(None, home)
    try:
        store.save_pipeline(PipelineRecord("quiet", "v1", "{}", 1.0))
        store.create_run(RunRecord("old", "quiet", "v1", "success", {}, 1.0), ["a"])
    finally:
        store.close()

    text = sf(home, "stats", "quiet", "--days", "1")
    as_json = sf(home, "stats", "quiet", "--format", "json")
    as_csv = sf(home, "stats", "quiet", "--format", "csv")

    assert (text.returncode, text.stdout) == (0, "")
    assert "no runs of pipeline 'quiet' created in the last 1 days" in text.stderr
    assert as_json.returncode == 0
    doc = json.loads(as_json.stdout)
    assert (doc["runs"], doc["runs_by_state"], doc["tasks"]) == (0, {}, [])
    assert as_csv.returncode == 0
    assert as_csv.stdout.splitlines() == [
        "task_id,runs,successes,failures,other,success_rate,p50_seconds,p95_seconds,"
        "last_failure_at,last_failure_run_id,last_failure"
    ]
