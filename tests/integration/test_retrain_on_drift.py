"""Seed 004's pipeline (``examples/retrain_on_drift.yaml``) through the real CLI: linear
-> three models -> ensemble, a drift check whose recorded metric
(``${drift_check.metrics.drifted_columns}``) picks retrain or keep, an iterative
retrain loop, and deploy. The run ends ``success`` whether the new batch drifted or not,
and only the chosen path runs; a batch that breaks the basic rules is not scored at
all (``on_violation: skip_downstream``). A wrong metric name is refused before anything
runs, naming the task and field.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers_tasks import store_of

from stageflow.runtime.artifacts import artifact_store, load_output

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "retrain_on_drift.yaml"
STAGEFLOW = Path(sys.executable).with_name("stageflow")
ROUNDS = [f"retrain.{k}.{t}" for k in (1, 2, 3) for t in ("features", "train", "evaluate")]


def stageflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    return subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def run(home: Path, *params: str) -> dict[str, Any]:
    args = [a for p in params for a in ("--param", p)]
    proc = stageflow(home, "run", str(EXAMPLE), *args, "--format", "json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def outputs(home: Path, run_id: str) -> dict[str, Any]:
    with store_of(home) as store:
        refs = store.outputs(run_id)
    artifacts = artifact_store(str(home / "artifacts"))
    return {tid: load_output(ref, artifacts) for tid, ref in refs.items()}


def task_runs(home: Path, run_id: str) -> dict[str, Any]:
    with store_of(home) as store:
        return {r.task_id: r for r in store.task_runs(run_id)}


def states(result: dict[str, Any]) -> dict[str, str]:
    return {tid: t["state"] for tid, t in result["tasks"].items()}


def test_no_drift_keeps_the_ensemble_and_deploys_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run(home, "shift=0")
    s = states(result)
    assert result["state"] == "success"
    assert s["drift_check"] == s["keep_model"] == s["select"] == s["deploy"] == "success"
    assert s["retrain"] == "skipped"
    assert {s[t] for t in ROUNDS} == {"skipped"}
    out = outputs(home, result["run_id"])
    assert out["deploy"]["registered"] is True
    assert out["deploy"]["metrics"] == out["evaluate"]["metrics"]


def test_drift_retrains_on_the_new_batch_and_deploys_that_model(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run(home, "shift=2")
    s = states(result)
    assert result["state"] == "success"
    assert s["keep_model"] == "skipped"
    assert s["retrain.1.train"] == s["retrain.1.evaluate"] == s["retrain"] == "success"
    out = outputs(home, result["run_id"])
    retrained = out["retrain.1.evaluate"]["metrics"]
    assert retrained["accuracy"] >= 0.85  # the loop's target: no second round
    assert {s[f"retrain.{k}.train"] for k in (2, 3)} == {"skipped"}
    assert out["deploy"]["registered"] is True
    assert out["deploy"]["metrics"] == retrained
    assert out["deploy"]["metrics"] != out["evaluate"]["metrics"]


def test_the_loop_goes_on_while_the_target_is_not_met(tmp_path: Path) -> None:
    result = run(tmp_path / "home", "shift=2", "target=1.01")
    s = states(result)
    assert result["state"] == "success"
    assert {s[t] for t in ROUNDS} == {"success"}  # three rounds, the bound


def test_a_batch_that_breaks_the_rules_is_not_scored_and_the_run_succeeds(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    result = run(home, "shift=-20")  # negative alcohol: the range rule fails
    s = states(result)
    assert result["state"] == "success"
    assert s["quality_gate"] == "success"
    assert s["drift_check"] == "skipped"
    assert s["deploy"] == "skipped"
    gate = task_runs(home, result["run_id"])["quality_gate"]
    assert gate.note == "skipped downstream"
    assert "alcohol" in gate.error


def test_a_metric_the_check_never_records_is_refused_before_the_run(tmp_path: Path) -> None:
    spec = tmp_path / "typo.yaml"
    shutil.copytree(EXAMPLE.parent / "templates", tmp_path / "templates")
    text = EXAMPLE.read_text().replace(
        '"${drift_check.metrics.drifted_columns} > 0"', '"${drift_check.metrics.drifted} > 0"'
    )
    assert text != EXAMPLE.read_text()
    spec.write_text(text)
    proc = stageflow(tmp_path / "home", "validate", str(spec))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        "task 'retrain.1.features', field 'when': condition refers to "
        "${drift_check.metrics.drifted}, but operator 'data_validation' of task "
        "'drift_check' records no metric 'drifted'; did you mean 'drifted_columns'?"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr
