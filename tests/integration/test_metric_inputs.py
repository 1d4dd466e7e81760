"""A branch task decides on what a check measured: ``inputs: {drifted:
drift_check.metrics.drifted_columns}`` binds the recorded metric (``check.metrics``:
all of them) to a function's parameter, in a thread and in a worker process; a metric
the check's operator never records is refused before the run, naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
STAGEFLOW = Path(sys.executable).with_name("stageflow")
SPEC = """\
name: branch-on-metrics
params: {shift: 0.0}
tasks:
  - {id: reference, operator: data_ingestion, parameters: {source: "sklearn:wine"}}
  - id: batch
    operator: data_processing
    upstream: [reference]
    parameters: {steps: [{derive: {column: alcohol, expr: "alcohol + ${params.shift}"}}]}
  - id: drift_check
    operator: data_validation
    upstream: [batch, reference]
    parameters:
      input: batch
      drift: {reference: reference, columns: [alcohol]}
      on_violation: warn
  - id: decide
    call: decide_steps:decide
    branch: true
    inputs: {drifted: drift_check.metrics.METRIC, verdict: drift_check.metrics}
  - {id: retrain, call: "decide_steps:say", upstream: [decide]}
  - {id: skip, call: "decide_steps:say", upstream: [decide]}
"""


def stageflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize(("shift", "chosen"), [("0", "skip"), ("2", "retrain")])
def test_a_branch_task_decides_on_a_recorded_metric(
    tmp_path: Path, executor: str, shift: str, chosen: str
) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC.replace("METRIC", "drifted_columns"))
    proc = stageflow(
        tmp_path / "home",
        "run",
        str(spec),
        "--param",
        f"shift={shift}",
        "--executor",
        executor,
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    states = {tid: t["state"] for tid, t in result["tasks"].items()}
    other = "retrain" if chosen == "skip" else "skip"
    assert (states[chosen], states[other]) == ("success", "skipped")


def test_a_metric_the_operator_never_records_is_a_validation_error(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC.replace("METRIC", "drift_cols"))
    proc = stageflow(tmp_path / "home", "validate", str(spec))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        "task 'decide', field 'inputs.drifted': inputs binds 'drifted' to "
        "drift_check.metrics.drift_cols, but operator 'data_validation' of task "
        "'drift_check' records no metric 'drift_cols'; did you mean 'drifted_columns'?"
    ) in proc.stderr
