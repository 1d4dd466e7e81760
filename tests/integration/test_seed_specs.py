"""The seeds' JSON pipeline examples pass ``stageflow validate`` as written, and
``data_processing`` runs seed 003's cleaning and aggregation stages on real data.

``tests/fixtures/specs/seeds/`` holds each JSON pipeline example of the seeds:
seed 000's "Workflow Configuration" (its one task's placeholder dependency
``other_task_id`` emptied, as it names no task), seed 001's "Create a new
pipeline" body and its two "Pipeline Examples" (``{...}`` emptied), and seed
002's ``PipelineDefinition`` written as JSON with the Airflow DAG's
``default_args`` (``timedelta`` values as printed) and its ``TaskType``s (seed 002
has no JSON of its own; ``schedule`` is left out: a spec has no schedule).
Each validates (exit 0) or is refused (exit 2) only for operator parameters the
seed leaves out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from stageflow.runtime.loading import load_pipeline
from stageflow.runtime.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "tests" / "fixtures" / "specs"
SEEDS = SPECS / "seeds"
SALES = ROOT / "examples" / "data" / "sales.csv"
STAGEFLOW = Path(sys.executable).with_name("stageflow")
# Seed 001's own capacity settings, so a GPU task validates on any machine.
CAPACITY = {"MAX_CPU_CORES": "16", "MAX_MEMORY_GB": "64", "MAX_GPU_COUNT": "4"}
#: fixture -> the operator parameters the seed leaves out ((task, field) refused)
EXPECTED: dict[str, list[tuple[str, str]]] = {
    # a data_processing task with no dependency: it has nothing to process
    "000_workflow_configuration.json": [("unique_id", "parameters.source")],
    "001_create_pipeline.json": [],
    "001_simple_data_processing.json": [],
    "001_ml_training_with_validation.json": [
        ("train-candidate-model", "parameters.algorithm"),
        ("register-model", "parameters.model_name"),
    ],
    "002_pipeline_definition.json": [
        ("ingest_data", "parameters"),  # `source` or `to`
        ("train_model", "parameters.algorithm"),
        ("register_model", "parameters.model_name"),
    ],
}


def validate(home: Path, path: Path) -> tuple[int, dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env.update(CAPACITY)
    done = subprocess.run(
        [str(STAGEFLOW), "--home", str(home), "validate", str(path), "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, json.loads(done.stdout), done.stderr


def test_every_seed_json_example_validates_or_lacks_only_operator_parameters(
    tmp_path: Path,
) -> None:
    assert sorted(p.name for p in SEEDS.glob("*.json")) == sorted(EXPECTED)
    got: dict[str, Any] = {}
    for name in EXPECTED:
        code, report, _ = validate(tmp_path, SEEDS / name)
        refused = [(e["task"], e["field"]) for e in report["errors"]]
        got[name] = (code, refused)
    assert got == {name: (2 if want else 0, want) for name, want in EXPECTED.items()}


def test_validate_notes_what_is_accepted_but_not_done(tmp_path: Path) -> None:
    spec = tmp_path / "airflow.json"
    spec.write_text(
        json.dumps(
            {
                "pipeline_id": "nightly",
                "name": "Nightly export",
                "default_args": {
                    "owner": "ml_team",
                    "email_on_failure": True,
                    "retries": 3,
                    "retry_delay": "0:05:00",
                    "execution_timeout": "2:00:00",
                },
                "tasks": [
                    {"task_id": "dump", "task_type": "bash", "parameters": {"command": "true"}}
                ],
            }
        )
    )
    code, report, _ = validate(tmp_path, spec)
    assert (code, report["valid"]) == (0, True)
    [note] = report["notes"]
    assert note.startswith("default_args.email_on_failure: no mail goes out without")

    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    text = subprocess.run(
        [str(STAGEFLOW), "--home", str(tmp_path), "validate", str(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert text.returncode == 0
    assert "pipeline 'nightly' is valid" in text.stdout
    assert f"note: {note}" in text.stderr


def test_data_processing_cleans_and_aggregates_a_csv_end_to_end(tmp_path: Path) -> None:
    pipeline = load_pipeline(str(SPECS / "data_processing_sales.yaml"))
    result = run_pipeline(pipeline, params={"source": str(SALES)}, home=tmp_path)
    assert result.ok, {t: r.error for t, r in result.tasks.items()}

    sales = pd.read_csv(SALES).drop_duplicates(subset=["order_id"])
    sales = sales[(sales.quantity >= 5) & (sales.region != "south")]
    sales = sales.assign(revenue=sales.quantity * sales.unit_price)
    expected = (
        sales.groupby("region")
        .agg(
            revenue_sum=("revenue", "sum"),
            revenue_mean=("revenue", "mean"),
            order_id=("order_id", "count"),
        )
        .reset_index()
        .sort_values("revenue_sum", ascending=False)
    )
    got = result.output("aggregate")
    assert got["region"].tolist() == expected["region"].tolist()
    assert got["revenue_sum"].tolist() == pytest.approx(expected["revenue_sum"].tolist())
    assert got["revenue_mean"].tolist() == pytest.approx(expected["revenue_mean"].tolist())
    assert got["order_id"].tolist() == expected["order_id"].tolist()
    assert "south" not in set(result.output("clean")["region"])
    assert len(result.output("clean")) == len(sales) < 60
