"""``stageflow operators list/show`` and the ML commands' help, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

STAGEFLOW = Path(sys.executable).with_name("stageflow")
ML_OPERATORS = {
    "data_ingestion",
    "data_validation",
    "data_processing",
    "feature_engineering",
    "model_training",
    "ensemble",
    "model_evaluation",
    "model_selection",
    "model_registration",
    "model_deployment",
    "batch_inference",
    "custom_script",
    "notification",
}


def sf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STAGEFLOW), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_operators_list_names_every_operator_with_a_summary() -> None:
    proc = sf("operators", "list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert ML_OPERATORS | {"python", "bash"} <= set(rows)
    assert all(r["summary"] for r in rows.values())
    text = sf("operators", "list").stdout
    assert "model_training       Fit a model" in text


@pytest.mark.parametrize("name", sorted(ML_OPERATORS))
def test_operators_show_gives_parameters_and_an_example(name: str) -> None:
    proc = sf("operators", "show", name, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["parameters"], name
    assert all(p["description"] for p in info["parameters"]), name
    assert f"operator: {name}" in info["example"]


def test_operators_show_text_and_an_unknown_name() -> None:
    text = sf("operators", "show", "model_training").stdout
    assert "  algorithm " in text and "str; required" in text
    assert "hyperparameters   dict[str, Any]; default {}" in text
    assert "example:\n  - id: train_rf\n    operator: model_training" in text
    unknown = sf("operators", "show", "model_trainer")
    assert unknown.returncode == 2
    assert "did you mean 'model_training'?" in unknown.stderr


def test_help_lists_the_ml_commands_and_run_track() -> None:
    top = sf("--help").stdout
    for command in ("operators", "lineage", "models"):
        assert f"  {command} " in top
    assert "--track / --no-track" in sf("run", "--help").stdout
    assert "diff" in sf("runs", "--help").stdout
    assert "NAME@ALIAS" in sf("models", "serve", "--help").stdout


def test_import_stageflow_and_the_cli_stay_light() -> None:
    code = (
        "import sys\n"
        "from stageflow.service import cli\n"
        "from stageflow.operators import registry\n"
        "for name in registry.names(): registry.get(name)\n"
        "print(sorted(m for m in ('pandas', 'sklearn', 'mlflow', 'numpy', 'scipy', 'PIL',"
        " 'matplotlib')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
