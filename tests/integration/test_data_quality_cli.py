"""Data-quality monitors through the real CLI: ``examples/data_quality.yaml`` runs and
passes, fails on stale data at once whatever its retries, and ``stageflow validate``
reports a mistaken monitor naming the task and the parameter (exit 2); over the API
a ``pandera: {call: ...}`` needs an admin and a mistaken schema is a 422."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from helpers_serve import serving

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "data_quality.yaml"
STAGEFLOW = Path(sys.executable).with_name("stageflow")


def stageflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAGEFLOW_", "MLFLOW_"))}
    return subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def example_copy(tmp_path: Path, **changes: Any) -> Path:
    """The example with its data and schema in ``tmp_path``; ``changes`` merged into
    the check_quality task."""
    folder = tmp_path / "pipeline"
    (folder / "data").mkdir(parents=True)
    (folder / "schemas").mkdir()
    shutil.copy(ROOT / "examples" / "data" / "orders.jsonl", folder / "data")
    shutil.copy(ROOT / "examples" / "schemas" / "orders.yaml", folder / "schemas")
    spec = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    [task] = [t for t in spec["tasks"] if t["id"] == "check_quality"]
    task.update(changes)
    path = folder / "data_quality.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_the_example_passes_and_records_its_verdict(tmp_path: Path) -> None:
    proc = stageflow(tmp_path, "run", str(EXAMPLE), "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    report = json.loads(
        (
            tmp_path / "artifacts" / "runs" / run_id / "check_quality" / "validation_report.json"
        ).read_text()
    )
    assert [(c["check"], c["passed"], c["failing"]) for c in report["checks"]] == [
        ("not_null(order_id)", True, 0),
        ("not_null(amount)", True, 0),
        ("range(amount)", True, 0),
        ("completeness", True, 1),
        ("outliers(amount, iqr)", True, 1),  # the planted 912.5, within max_fraction
        ("freshness(created_at)", True, 0),
        ("pandera", True, 0),
        ("quality_score", True, 0),
    ]
    outlier = report["checks"][4]
    assert [s["_row"] for s in outlier["samples"]] == [17]
    metadata = json.loads(
        (tmp_path / "logs" / run_id / "check_quality" / "metadata-1.json").read_text()
    )
    metrics = metadata["metrics"]
    assert metrics["passed"] == 1 and metrics["failed_checks"] == 0
    assert metrics["quality_score"] == report["checks"][-1]["score"] > 0.9
    assert metrics["failing.outliers.amount.iqr"] == 1


def test_stale_data_fails_the_run_at_once_despite_retries(tmp_path: Path) -> None:
    spec = example_copy(tmp_path, retry={"max_retries": 2, "delay_seconds": 0})
    proc = stageflow(tmp_path, "run", str(spec), "--param", "max_age=6h", "--format", "json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    task = json.loads(proc.stdout)["tasks"]["check_quality"]
    assert (task["state"], task["attempts"]) == ("failed", 1)  # a verdict is not retried
    assert task["error"].startswith(
        "data validation failed: 2 of 8 checks: freshness(created_at): newest "
        "2026-03-01T15:00:00Z, 9.0h old, over max_age 6h; quality_score: score 0.895"
    )
    assert "Traceback" not in proc.stderr


def test_warn_lets_the_run_succeed(tmp_path: Path) -> None:
    spec = example_copy(tmp_path)
    data = yaml.safe_load(spec.read_text())
    data["tasks"][1]["parameters"]["on_violation"] = "warn"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = stageflow(tmp_path, "run", str(spec), "--param", "max_age=6h")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validate_names_the_task_and_parameter_of_a_mistaken_monitor(tmp_path: Path) -> None:
    spec = example_copy(tmp_path)
    data = yaml.safe_load(spec.read_text())
    parameters = data["tasks"][1]["parameters"]
    parameters["outliers"]["method"] = "lof"
    parameters["quality_score"]["weights"]["outliers"] = 0.5
    parameters["pandera"] = {"file": "schemas/missing.yaml"}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = stageflow(tmp_path, "validate", str(spec), "--format", "json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = {(e["task"], e["field"]): e["message"] for e in json.loads(proc.stdout)["errors"]}
    assert set(errors) == {
        ("check_quality", "parameters.outliers.0.method"),
        ("check_quality", "parameters.quality_score.weights"),
    }
    assert (
        "'zscore', 'iqr' or 'isolation_forest'"
        in errors[("check_quality", "parameters.outliers.0.method")]
    )
    assert (
        "the weights sum to 1.4; make them sum to 1"
        in errors[("check_quality", "parameters.quality_score.weights")]
    )
    proc = stageflow(tmp_path, "validate", str(example_copy(tmp_path / "b")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # a schema file that is not there (checked once the parameters are right)
    data = yaml.safe_load(spec.read_text())
    parameters = data["tasks"][1]["parameters"]
    parameters["outliers"]["method"] = "iqr"
    parameters["quality_score"]["weights"]["outliers"] = 0.1
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = stageflow(tmp_path, "validate", str(spec))
    assert proc.returncode == 2
    assert (
        "task 'check_quality', field 'parameters.pandera.file': operator 'data_validation': "
        "pandera.file 'schemas/missing.yaml' does not exist"
    ) in proc.stderr


def test_over_the_api_a_pandera_call_needs_an_admin_and_mistakes_are_422(
    tmp_path: Path,
) -> None:
    def spec(name: str, pandera: dict[str, str]) -> dict[str, Any]:
        task = {"id": "v", "operator": "data_validation", "parameters": {"pandera": pandera}}
        return {"name": name, "tasks": [task]}

    with serving("sqlite", tmp_path) as server:
        editor = server.token("editor-q", "editor")
        with server.client(editor) as c:
            r = c.post("/api/v1/pipelines", json=spec("by-code", {"call": "schemas:orders"}))
            assert r.status_code == 403, r.text
            assert r.json()["error"].startswith("tasks v run arbitrary code"), r.text
            assert [p["task"] for p in r.json()["problems"]] == ["v"]
            r = c.post("/api/v1/pipelines", json=spec("bad-yaml", {"yaml": "columns: [a, "}))
            assert r.status_code == 422, r.text
            [problem] = r.json()["problems"]
            assert (problem["task"], problem["field"]) == ("v", "parameters.pandera")
            assert "the pandera schema is not YAML" in problem["message"]
            r = c.post("/api/v1/pipelines", json=spec("by-yaml", {"yaml": "columns: {a: {}}"}))
            assert r.status_code == 201, r.text
        with server.client(server.admin) as c:  # saved, never imported by the server
            r = c.post("/api/v1/pipelines", json=spec("by-code", {"call": "schemas:orders"}))
            assert r.status_code == 201, r.text


def test_operators_show_documents_the_monitors(tmp_path: Path) -> None:
    proc = stageflow(tmp_path, "operators", "show", "data_validation", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    names = {p["name"] for p in info["parameters"]}
    assert {"outliers", "freshness", "completeness", "quality_score", "pandera"} <= names
    for line in ("outliers: {columns: [amount], method: iqr", "quality_score:", "pandera: {file:"):
        assert line in info["example"], info["example"]
