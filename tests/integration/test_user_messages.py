"""Messages a user reads, through the real CLI (a subprocess, no TTY).

``run --format json`` of an invalid spec, problems that are only echoes of
another, resource requests too large for this machine (warnings in
``validate``, refusals in ``run``), a Python pipeline's advice, operator types
and errors as a person writes them, mapped tasks in index order, and
``runs diff`` of two runs that differ only in run-specific paths and float noise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGEFLOW = Path(sys.executable).with_name("stageflow")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def sf(home: Path, *args: str | Path, env: Mapping[str, str] | None = None) -> Result:
    """The real CLI with its own home; never a traceback."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    environ.pop("CUDA_VISIBLE_DEVICES", None)
    environ["STAGEFLOW_HOME"] = str(home)
    environ.update(env or {})
    proc = subprocess.run(
        [str(STAGEFLOW), *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=environ,
        timeout=120,
        check=False,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.out + result.err, result
    assert "internal error" not in result.err, result
    return result


# -- run --format json of an invalid spec -------------------------------------------


def test_run_json_of_an_invalid_spec_prints_the_validate_shape(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: p\ntasks:\n"
        "  - {id: features, operator: bash, parameters: {command: x}}\n"
        "  - {id: train, operator: bash, upstream: [featurs], parameters: {command: x}}\n"
    )
    r = sf(tmp_path / "home", "run", spec, "--format", "json")
    assert r.code == 2
    report = r.json()
    assert report["valid"] is False and report["summary"] is None
    assert report["errors"] == [
        {
            "task": "train",
            "field": "upstream",
            "message": "task 'train', field 'upstream': upstream task 'featurs' "
            "does not exist; did you mean 'features'?",
        }
    ]
    assert "did you mean 'features'?" in r.err


def test_run_json_of_an_undeclared_param_prints_the_validate_shape(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: p\nparams: {epochs: 3}\n"
        "tasks:\n  - {id: a, operator: bash, parameters: {command: 'true'}}\n"
    )
    r = sf(tmp_path / "home", "run", spec, "--param", "epoch=5", "--format", "json")
    assert r.code == 2
    (error,) = r.json()["errors"]
    assert error["field"] == "params.epoch" and "did you mean 'epochs'?" in error["message"]


# -- only real problems ----------------------------------------------------------------


def test_an_unknown_key_does_not_make_call_targets_unimportable(tmp_path: Path) -> None:
    (tmp_path / "beside_steps.py").write_text(
        "def extract():\n    return [1]\n\ndef total(extract):\n    return sum(extract)\n"
    )
    spec = tmp_path / "calls.yaml"
    spec.write_text(
        "name: calls\ntasks:\n"
        '  - {id: extract, call: "beside_steps:extract"}\n'
        '  - {id: total, call: "beside_steps:total", upstream: [extract], retires: 3}\n'
    )
    for command in ("validate", "run"):
        r = sf(tmp_path / "home", command, spec, "--format", "json")
        assert r.code == 2, r
        errors = r.json()["errors"]
        assert [(e["task"], e["field"]) for e in errors] == [("total", "retires")], errors
        assert "cannot import" not in r.err


# -- resources: every problem, rounded sizes, warnings in validate ------------------------

TOO_BIG = """\
name: big
tasks:
  - id: train
    operator: bash
    parameters: {command: "true"}
    resources: {gpu: 4, memory_gb: 100000}
  - id: small
    operator: bash
    parameters: {command: "true"}
"""
SMALL_MACHINE = {"STAGEFLOW_MAX_GPU_COUNT": "0", "STAGEFLOW_MAX_MEMORY_GB": "23.5403"}


def test_validate_warns_of_every_request_this_machine_cannot_hold(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text(TOO_BIG)
    home = tmp_path / "home"
    text = sf(home, "validate", spec, env=SMALL_MACHINE)
    assert text.code == 0, text
    assert "pipeline 'big' is valid" in text.out
    assert "task 'train', field 'resources.gpu'" in text.err
    assert "task 'train', field 'resources.memory_gb'" in text.err  # both, not the first only
    assert "resources.gpu is 4 but this machine has 0 GPUs" in text.err
    assert "resources.memory_gb is 100000 but this machine has 23.5 GB of memory" in text.err
    assert "23.5403" not in text.err
    assert "`stageflow run` here refuses" in text.err
    report = sf(home, "validate", spec, "--format", "json", env=SMALL_MACHINE)
    assert report.code == 0, report
    data = report.json()
    assert data["valid"] is True and data["errors"] == []
    assert [(w["task"], w["field"]) for w in data["warnings"]] == [
        ("train", "resources.memory_gb"),
        ("train", "resources.gpu"),
    ]
    run = sf(home, "run", spec, env=SMALL_MACHINE)
    assert run.code == 2
    assert "resources.gpu is 4" in run.err and "resources.memory_gb is 100000" in run.err


# -- Python pipelines -----------------------------------------------------------------

PY_PIPELINE = """\
from stageflow import Pipeline, Task

def load():
    return [1, 2, 3]

def train(load, n_estimators=10):
    return len(load) * n_estimators

pipeline = Pipeline(
    "py", params={"n_estimators": 3}, tasks=[Task("load", load), Task("train", train)]
)
"""


def test_a_python_pipelines_unknown_param_gets_python_advice(tmp_path: Path) -> None:
    (tmp_path / "py_flow.py").write_text(PY_PIPELINE)
    r = sf(
        tmp_path / "home", "run", f"{tmp_path / 'py_flow.py'}:pipeline", "--param", "n_estimator=5"
    )
    assert r.code == 2
    assert "Pipeline(..., params={...})" in r.err
    assert "`params:`" not in r.err
    assert "did you mean 'n_estimators'?" in r.err


# -- operators show and operator errors ---------------------------------------------------


def test_operators_show_prints_types_as_a_person_writes_them(tmp_path: Path) -> None:
    r = sf(tmp_path / "home", "operators", "show", "feature_engineering")
    assert r.code == 0, r
    for internal in ("FieldInfo", "Annotated", "discriminator", "Literal["):
        assert internal not in r.out, r.out
    steps = next(line for line in r.out.splitlines() if line.strip().startswith("steps "))
    assert "list[impute | scale | one_hot" in steps
    task_type = next(line for line in r.out.splitlines() if line.strip().startswith("task_type"))
    assert "'classification' | 'regression' | 'clustering' | None" in task_type
    data = sf(tmp_path / "home", "operators", "show", "feature_engineering", "--format", "json")
    types = {p["name"]: p["type"] for p in data.json()["parameters"]}
    assert "FieldInfo" not in types["steps"]


def test_operator_parameter_errors_read_as_a_person_writes_them(tmp_path: Path) -> None:
    spec = tmp_path / "ml.yaml"
    spec.write_text(
        "name: ml\ntasks:\n"
        "  - {id: t, operator: model_training, parameters: {algorithm: random_forrest}}\n"
        "  - {id: s, operator: search_space, parameters: {space: {a: []}}}\n"
        "  - {id: f, operator: feature_engineering, parameters: {test_size: 2}}\n"
    )
    r = sf(tmp_path / "home", "validate", spec)
    assert r.code == 2
    assert "Value error" not in r.err and "value error" not in r.err
    assert (
        "operator 'model_training': unknown algorithm 'random_forrest'; "
        "did you mean 'random_forest'?" in r.err
    )
    assert "operator 'search_space': space.a is an empty list; give at least one value" in r.err
    assert "operator 'feature_engineering': should be less than 1, got 2" in r.err


# -- mapped tasks in index order -----------------------------------------------------------

MAPPED_STEPS = """\
import time

def items():
    return list(range(6))

def train(items):
    time.sleep((6 - items) * 0.05)  # the later elements finish first
    return items

def total(train):
    return sum(train)
"""

MAPPED = """\
name: mapped
tasks:
  - {id: items, call: "mapped_steps:items"}
  - {id: train, call: "mapped_steps:train", upstream: [items], map_over: items}
  - {id: total, call: "mapped_steps:total", upstream: [train]}
"""


def test_runs_show_and_gantt_list_mapped_children_by_index(tmp_path: Path) -> None:
    (tmp_path / "mapped_steps.py").write_text(MAPPED_STEPS)
    spec = tmp_path / "mapped.yaml"
    spec.write_text(MAPPED)
    home = tmp_path / "home"
    run = sf(home, "run", spec, "--max-parallel", "6", "--format", "json")
    assert run.code == 0, run
    run_id = run.json()["run_id"]
    expected = ["items", "train", *(f"train[{k}]" for k in range(6)), "total"]
    shown = sf(home, "runs", "show", run_id, "--format", "json").json()
    assert list(shown["tasks"]) == expected
    text = sf(home, "runs", "show", run_id).out
    rows = [line.split()[0] for line in text.splitlines()[2:] if line.startswith("  ")]
    assert [r for r in rows if r in expected][: len(expected)] == expected
    svg = tmp_path / "g.svg"
    assert sf(home, "runs", "gantt", run_id, "-o", svg).code == 0
    labels = re.findall(r">(train\[\d+\])<", svg.read_text())
    assert labels == [f"train[{k}]" for k in range(6)]


# -- runs diff -----------------------------------------------------------------------------

DIFF_STEPS = """\
from pathlib import Path

from stageflow.operators.metadata import record

def fit(context, counter):
    path = Path(counter)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    # the same figure, summed in another order on the second run: float noise
    loss = 0.1 + 0.2 if n == 0 else 0.3
    record(context, metrics={"log_loss": loss, "rows": 3})
    return {"model_file": str(context.work_dir / "model.bin"), "rows": 3}
"""


def test_runs_diff_of_two_identical_runs_finds_no_differences(tmp_path: Path) -> None:
    (tmp_path / "diff_steps.py").write_text(DIFF_STEPS)
    spec = tmp_path / "same.yaml"
    counter = tmp_path / "counter.txt"
    spec.write_text(
        "name: same\ntasks:\n"
        f'  - {{id: fit, call: "diff_steps:fit", parameters: {{counter: "{counter}"}}}}\n'
    )
    home = tmp_path / "home"
    a, b = (sf(home, "run", spec, "--format", "json") for _ in range(2))
    assert a.code == 0 and b.code == 0, (a, b)
    ids = [a.json()["run_id"], b.json()["run_id"]]
    diff = sf(home, "runs", "diff", *ids, "--format", "json").json()
    assert "outputs" not in diff["changes"] and "metrics" not in diff["changes"], diff
    assert {"outputs", "metrics"} <= set(diff["same"])
    text = sf(home, "runs", "diff", *ids).out
    assert "e-17" not in text and "no differences" in text
