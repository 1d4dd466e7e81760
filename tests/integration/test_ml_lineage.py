"""Reproducibility records, ``runs diff``, ``lineage`` and ``run --track`` on real runs
through the CLI: two runs of one pipeline that differ in one parameter and in the
content of one input file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

STAGEFLOW = Path(sys.executable).with_name("stageflow")

PIPELINE = """
name: lineage-demo
params:
  data: {data}
  n_estimators: 10
tasks:
  - id: ingest
    operator: data_ingestion
    parameters: {{source: "${{params.data}}", to: "{copy}"}}
  - id: features
    operator: feature_engineering
    upstream: [ingest]
    parameters: {{seed: 0, steps: [{{scale: {{}}}}]}}
  - id: train
    operator: model_training
    upstream: [features]
    parameters:
      algorithm: random_forest
      hyperparameters: {{n_estimators: "${{params.n_estimators}}", max_depth: 3}}
      seed: 0
  - id: evaluate
    operator: model_evaluation
    upstream: [features, train]
    parameters: {{pictures: true}}
"""

READER = """
name: reader
tasks:
  - id: load_copy
    operator: data_ingestion
    parameters: {{source: "{copy}"}}
"""


def sf(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAGEFLOW_", "MLFLOW_"))}
    return subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def sf_json(home: Path, *args: str) -> Any:
    proc = sf(home, *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run A on data v1 with n_estimators 10; run B on data v2 with n_estimators 20;
    then a second pipeline reads the copy run B wrote."""
    tmp = tmp_path_factory.mktemp("lineage")
    home = tmp / "home"
    data, copy = tmp / "cancer.csv", tmp / "copy.parquet"
    frame = load_breast_cancer(as_frame=True).frame
    frame.iloc[:400].to_csv(data, index=False)
    spec = tmp / "pipeline.yaml"
    spec.write_text(PIPELINE.format(data=data, copy=copy))
    (tmp / "reader.yaml").write_text(READER.format(copy=copy))
    first_sha = sha(data)
    a = sf_json(home, "run", str(spec))
    frame.iloc[100:].to_csv(data, index=False)
    b = sf_json(home, "run", str(spec), "--param", "n_estimators=20", "--track")
    reader = sf_json(home, "run", str(tmp / "reader.yaml"))
    return {
        "home": home,
        "a": a["run_id"],
        "b": b["run_id"],
        "reader": reader["run_id"],
        "states": [a["state"], b["state"], reader["state"]],
        "data": data,
        "copy": copy,
        "sha_a": first_sha,
        "sha_b": sha(data),
    }


def test_the_runs_succeed(runs: dict[str, Any]) -> None:
    assert runs["states"] == ["success", "success", "success"]


def test_runs_diff_shows_the_parameter_the_data_and_the_metrics(runs: dict[str, Any]) -> None:
    diff = sf_json(runs["home"], "runs", "diff", runs["a"], runs["b"])
    changes = diff["changes"]
    assert changes["params"] == {"n_estimators": {"a": 10, "b": 20}}
    data_key = f"ingest <- {runs['data']}"
    assert changes["data"] == {data_key: {"a": runs["sha_a"], "b": runs["sha_b"]}}
    assert set(changes["outputs"]) == {"ingest", "features", "train", "evaluate"}
    accuracy = changes["metrics"]["evaluate.accuracy"]
    assert accuracy["delta"] == pytest.approx(accuracy["b"] - accuracy["a"])
    assert changes["metrics"]["ingest.rows"] == {"a": 400, "b": 469, "delta": 69}
    assert "code" in diff["same"] and "environment" in diff["same"] and "seeds" in diff["same"]

    text = sf(runs["home"], "runs", "diff", runs["a"], runs["b"])
    assert text.returncode == 0
    assert "params:\n  n_estimators: 10 -> 20\n" in text.stdout
    assert f"  {data_key}: {runs['sha_a'][:12]} -> {runs['sha_b'][:12]}" in text.stdout
    assert "unchanged: seeds, code, environment" in text.stdout


def test_runs_show_lists_the_reproducibility_record(runs: dict[str, Any]) -> None:
    proc = sf(runs["home"], "runs", "show", runs["b"])
    assert proc.returncode == 0, proc.stderr
    record = proc.stdout.split("reproducibility:\n", 1)[1]
    assert "pipeline version  " in record
    assert "environment       Python 3." in record
    assert "seeds             features.seed=0, train.seed=0" in record
    assert (
        f"data read         ingest <- {runs['data']} (file, sha256 {runs['sha_b'][:12]})" in record
    )
    assert "tracking          MLflow run " in record


def test_lineage_of_a_task_goes_upstream_to_the_raw_input(runs: dict[str, Any]) -> None:
    found = sf_json(runs["home"], "lineage", f"{runs['b']}/train")
    assert (found["run_id"], found["task"]) == (runs["b"], "train")
    assert [(n["task"], n["depth"]) for n in found["upstream"]] == [("features", 1), ("ingest", 2)]
    assert found["raw_inputs"] == [
        {"task": "ingest", "uri": str(runs["data"]), "sha256": runs["sha_b"], "kind": "file"}
    ]
    assert found["consumers"] == [{"run_id": runs["b"], "task": "evaluate"}]
    latest = sf_json(runs["home"], "lineage", "train")
    assert latest["run_id"] == runs["b"]


def test_lineage_of_files_across_runs(runs: dict[str, Any]) -> None:
    copy = sf_json(runs["home"], "lineage", str(runs["copy"]))
    assert (copy["run_id"], copy["task"], copy["matched"]["kind"]) == (runs["b"], "ingest", "file")
    assert {"run_id": runs["reader"], "task": "load_copy", "uri": str(runs["copy"])} in copy[
        "consumers"
    ]
    old_input = sf_json(runs["home"], "lineage", runs["sha_a"][:16])
    assert (old_input["run_id"], old_input["matched"]["kind"]) == (runs["a"], "input")
    report = Path(runs["home"]) / "artifacts" / "runs" / runs["a"] / "evaluate" / "evaluation.json"
    written = sf_json(runs["home"], "lineage", str(report))
    assert (written["run_id"], written["task"]) == (runs["a"], "evaluate")
    text = sf(runs["home"], "lineage", str(report))
    assert f"written by task evaluate of run {runs['a']}" in text.stdout
    missing = sf(runs["home"], "lineage", "no-such-thing")
    assert missing.returncode == 2
    assert "nothing known as 'no-such-thing'" in missing.stderr


def test_a_tracked_run_is_an_mlflow_run(runs: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    shown = sf(runs["home"], "runs", "show", runs["b"]).stdout
    mlflow_run = shown.split("tracking          MLflow run ", 1)[1].split(" ", 1)[0]
    client = MlflowClient(f"sqlite:///{Path(runs['home']).absolute()}/mlflow.db")
    run = client.get_run(mlflow_run)
    assert run.data.params["n_estimators"] == "20"
    assert run.data.params["seed.train.seed"] == "0"
    assert run.data.tags["stageflow.run_id"] == runs["b"]
    assert run.data.tags["stageflow.pipeline"] == "lineage-demo"
    assert run.data.metrics["ingest.rows"] == 469
    assert {"evaluate.accuracy", "train.test_accuracy", "train.duration_s"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(mlflow_run, "evaluate")}
    assert artifacts == {
        "evaluate/confusion_matrix.png",
        "evaluate/evaluation.json",
        "evaluate/roc_curve.png",
    }
    assert run.info.status == "FINISHED"
    untracked = sf(runs["home"], "runs", "show", runs["a"]).stdout
    assert "tracking" not in untracked.split("reproducibility:", 1)[1]


def test_reading_copies_back_gives_the_same_rows(runs: dict[str, Any]) -> None:
    assert len(pd.read_parquet(runs["copy"])) == 469


# -- runs diff of two runs that compute the same things --------------------------------

SAME = """
name: same-models
tasks:
  - id: ingest
    operator: data_ingestion
    parameters: {source: "sklearn:iris"}
  - id: features
    operator: feature_engineering
    upstream: [ingest]
    parameters: {seed: 0, steps: [{impute: {strategy: median}}, {scale: {}}]}
  - id: train_logistic_regression
    operator: model_training
    upstream: [features]
    parameters: {algorithm: logistic_regression, seed: 0}
  - id: train_random_forest
    operator: model_training
    upstream: [features]
    parameters:
      algorithm: random_forest
      hyperparameters: {n_estimators: 20, max_depth: 4}
      seed: 0
  - id: train_gradient_boosting
    operator: model_training
    upstream: [features]
    parameters:
      algorithm: gradient_boosting
      hyperparameters: {n_estimators: 10, max_depth: 2}
      seed: 0
  - id: evaluate
    operator: model_evaluation
    upstream: [features, train_random_forest]
    parameters: {pictures: true}
"""


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_runs_diff_of_the_same_models_finds_no_changed_outputs(
    tmp_path: Path, executor: str
) -> None:
    """Equal models pickle to bytes of other lengths in another process, and name
    files of their own run: the diff compares what they hold."""
    spec = tmp_path / "same.yaml"
    spec.write_text(SAME)
    home = tmp_path / "home"
    a, b = (sf_json(home, "run", str(spec), "--executor", executor) for _ in range(2))
    assert (a["state"], b["state"]) == ("success", "success")
    diff = sf_json(home, "runs", "diff", a["run_id"], b["run_id"])
    assert "outputs" not in diff["changes"], diff["changes"]
    assert "outputs" in diff["same"]
    text = sf(home, "runs", "diff", a["run_id"], b["run_id"]).stdout
    assert "outputs:" not in text
