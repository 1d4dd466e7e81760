"""Tasks work in their pipeline's folder (``operators/paths.py``): bash commands
start there, and the relative paths operators are given resolve there, never
against the process's current directory (the test runs from another folder)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from stageflow.operators.base import TaskFailed
from stageflow.operators.bash import BashOperator, BashParams
from stageflow.operators.ml.ingestion import DataIngestion, IngestionParams
from stageflow.operators.ml.scripts import CustomScript, ScriptParams
from stageflow.operators.ml.validation import DataValidation, ValidationParams
from stageflow.operators.paths import resolve_path
from stageflow.runtime.cache import file_versions
from support.ml import make_ctx

BASE = "/pipelines/churn"
HOME = os.path.expanduser("~")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("data.csv", f"{BASE}/data.csv", id="relative"),
        pytest.param("data/raw.csv", f"{BASE}/data/raw.csv", id="relative-folder"),
        pytest.param("../shared/x.csv", f"{BASE}/../shared/x.csv", id="parent"),
        pytest.param("/abs/x.csv", "/abs/x.csv", id="absolute"),
        pytest.param("~/x.csv", f"{HOME}/x.csv", id="home"),
        pytest.param("s3://bucket/x.parquet", "s3://bucket/x.parquet", id="s3"),
        pytest.param("https://h/x.csv", "https://h/x.csv", id="https"),
        pytest.param("memory://x.csv", "memory://x.csv", id="memory"),
        pytest.param("file:///abs/x.csv", "file:///abs/x.csv", id="file-url"),
        pytest.param("sklearn:wine", "sklearn:wine", id="sklearn"),
        pytest.param("sqlite:///wh.db", f"sqlite:///{BASE}/wh.db", id="sqlite-relative"),
        pytest.param("sqlite:////abs/wh.db", "sqlite:////abs/wh.db", id="sqlite-absolute"),
        pytest.param(
            "sqlite+pysqlite:///wh.db?mode=ro",
            f"sqlite+pysqlite:///{BASE}/wh.db?mode=ro",
            id="sqlite-driver-query",
        ),
        pytest.param("sqlite:///:memory:", "sqlite:///:memory:", id="sqlite-memory"),
        pytest.param("sqlite://", "sqlite://", id="sqlite-empty"),
        pytest.param("postgresql://u@h/db", "postgresql://u@h/db", id="postgres"),
    ],
)
def test_resolve_path(value: str, expected: str) -> None:
    assert resolve_path(value, BASE) == expected


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(the pipeline's folder, the home); the test runs from a third folder."""
    pipeline, home, elsewhere = tmp_path / "pipeline", tmp_path / "home", tmp_path / "elsewhere"
    for folder in (pipeline, home, elsewhere):
        folder.mkdir()
    monkeypatch.chdir(elsewhere)
    return pipeline, home


def test_a_context_without_a_folder_uses_the_current_directory(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    assert ctx.pipeline_dir == Path.cwd()


def test_bash_starts_in_the_pipeline_folder_with_both_folders_in_its_environment(
    folders: tuple[Path, Path],
) -> None:
    pipeline, home = folders
    (pipeline / "step.sh").write_text("echo from-step\n")
    ctx = make_ctx(home, "extract", pipeline_dir=pipeline)
    command = (
        'bash step.sh; echo "$STAGEFLOW_PIPELINE_DIR|$STAGEFLOW_WORK_DIR" > seen.txt; '
        'test -d "$STAGEFLOW_WORK_DIR" && pwd'
    )
    out = BashOperator().run(BashParams(command=command), {}, ctx)
    assert out == str(pipeline)
    assert (pipeline / "seen.txt").read_text().strip() == f"{pipeline}|{ctx.work_dir}"
    assert "from-step" in ctx.log_path.read_text()


def test_a_relative_bash_cwd_starts_at_the_pipeline_folder(folders: tuple[Path, Path]) -> None:
    pipeline, home = folders
    (pipeline / "sub").mkdir()
    ctx = make_ctx(home, pipeline_dir=pipeline)
    assert BashOperator().run(BashParams(command="pwd", cwd="sub"), {}, ctx) == str(
        pipeline / "sub"
    )
    with pytest.raises(TaskFailed, match=r"working directory .*/pipeline/nope \(cwd\)"):
        BashOperator().run(BashParams(command="pwd", cwd="nope"), {}, ctx)


@pytest.mark.parametrize(
    ("script_type", "name", "content", "expected"),
    [
        pytest.param("bash", "step.sh", "echo bash-script", "bash-script", id="bash"),
        pytest.param("python", "step.py", "result = 'python-script'", "python-script", id="python"),
    ],
)
def test_custom_script_path_starts_at_the_pipeline_folder(
    folders: tuple[Path, Path], script_type: str, name: str, content: str, expected: str
) -> None:
    pipeline, home = folders
    (pipeline / "scripts").mkdir()
    (pipeline / "scripts" / name).write_text(content + "\n")
    ctx = make_ctx(home, pipeline_dir=pipeline)
    params = ScriptParams.model_validate(
        {"script_type": script_type, "script_path": f"scripts/{name}"}
    )
    assert CustomScript().run(params, {}, ctx) == expected


@pytest.mark.parametrize("script_type", ["bash", "python"])
def test_a_missing_script_names_where_it_was_looked_for(
    folders: tuple[Path, Path], script_type: str
) -> None:
    pipeline, home = folders
    ctx = make_ctx(home, pipeline_dir=pipeline)
    params = ScriptParams.model_validate({"script_type": script_type, "script_path": "missing.sh"})
    with pytest.raises(TaskFailed) as failed:
        CustomScript().run(params, {}, ctx)
    message = str(failed.value)
    assert f"no such script: {pipeline / 'missing.sh'}" in message
    assert "a relative path starts at the pipeline's folder" in message


def test_ingestion_reads_and_writes_relative_paths_in_the_pipeline_folder(
    folders: tuple[Path, Path],
) -> None:
    pipeline, home = folders
    (pipeline / "data").mkdir()
    (pipeline / "data" / "raw.csv").write_text("a,b\n1,2\n3,4\n")
    ctx = make_ctx(home, "ingest", pipeline_dir=pipeline)
    run: Any = DataIngestion().run
    frame = run(IngestionParams(source="data/raw.csv", to="out/copy.csv"), {}, ctx)
    assert list(frame["a"]) == [1, 3]
    assert (pipeline / "out" / "copy.csv").is_file()
    run(IngestionParams(to="sqlite:///wh.db", table="t"), {"ingest": frame}, ctx)
    with sqlite3.connect(pipeline / "wh.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (2,)
    back = run(IngestionParams(source="sqlite:///wh.db", table="t"), {}, ctx)
    assert len(back) == 2
    with pytest.raises(TaskFailed, match=f"no such file: {pipeline}/absent.csv"):
        run(IngestionParams(source="absent.csv"), {}, ctx)
    assert not Path("out").exists()  # nothing lands in the current directory


def test_validation_reads_a_relative_input_path_in_the_pipeline_folder(
    folders: tuple[Path, Path],
) -> None:
    pipeline, home = folders
    (pipeline / "rows.csv").write_text("x\n1\n2\n")
    ctx = make_ctx(home, "validate", pipeline_dir=pipeline)
    params = ValidationParams.model_validate({"input_path": "rows.csv", "min_rows": 2})
    assert len(DataValidation().run(params, {}, ctx)) == 2


def test_cache_versions_look_up_relative_paths_under_the_base(folders: tuple[Path, Path]) -> None:
    pipeline, _ = folders
    (pipeline / "raw.csv").write_text("a\n1\n")
    assert file_versions({"path": "raw.csv"}) == {}  # not in the current directory
    found = file_versions({"path": "raw.csv"}, str(pipeline))
    assert list(found) == ["raw.csv"] and found["raw.csv"][0] == 4
