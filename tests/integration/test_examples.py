"""The examples run end to end: ``examples/ml_functions.yaml`` (the ML flow as
plain functions) through the real CLI, and ``examples/sdk_quickstart.py``
through the CLI and in-process (``make demo``'s ``ml_pipeline.yaml`` is tested
in ``test_ml_examples.py``). Each run gets its own ``--home`` under ``tmp_path``.

The fast tests check the example steps' own logic (``ml_steps``) on small
hand-made frames; the slow ones train real scikit-learn models.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stageflow.operators import TaskFailed
from stageflow.runtime.loading import load_pipeline
from stageflow.runtime.plan import check

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ML_YAML = EXAMPLES / "ml_functions.yaml"
SDK_FILE = EXAMPLES / "sdk_quickstart.py"
STAGEFLOW = Path(sys.executable).with_name("stageflow")
TRAINING = ("train_logistic_regression", "train_random_forest", "train_gradient_boosting")
ML_TASKS = {
    "load",
    "validate",
    "features",
    *TRAINING,
    "evaluate_logistic_regression",
    "evaluate_random_forest",
    "evaluate_gradient_boosting",
    "select_best",
}


def stageflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``stageflow`` CLI with its own state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    return subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def run_json(home: Path, *args: str) -> dict[str, Any]:
    proc = stageflow(home, "run", *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def interval(task: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(task["started_at"]), datetime.fromisoformat(task["ended_at"])


@pytest.fixture
def ml_steps(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import ml_steps

    return ml_steps


# -- the YAML pipeline's shape and steps (fast) ------------------------------------


def test_ml_pipeline_is_valid_and_trains_in_three_parallel_branches() -> None:
    pipeline = load_pipeline(str(ML_YAML))
    check(pipeline)
    upstream = pipeline.upstream_map()
    assert pipeline.name == "ml-functions"
    assert set(upstream) == ML_TASKS
    assert set(pipeline.params) >= {"dataset", "test_size", "seed", "metric"}
    for tid in TRAINING:
        assert upstream[tid] == ["features"]
        assert pipeline.timeout_of(pipeline.task(tid)) is not None
    assert (pipeline.max_parallel_tasks or 0) >= len(TRAINING)


def test_ml_steps_import_no_heavy_library() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(EXAMPLES)!r}); import ml_steps; "
        "print(sorted(m for m in ('pandas', 'sklearn') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"


def _frame(rows: int = 120, classes: tuple[int, ...] = (0, 1), **columns: list[Any]) -> Any:
    import pandas as pd

    data: dict[str, list[Any]] = {
        "x1": [float(i) for i in range(rows)],
        "target": [classes[i % len(classes)] for i in range(rows)],
    }
    data.update(columns)
    return pd.DataFrame(data)


def _with_nulls() -> Any:
    frame = _frame()
    frame.loc[3, "x1"] = None
    return frame


def _imbalanced() -> Any:
    frame = _frame(rows=200)
    frame["target"] = [1 if i < 4 else 0 for i in range(200)]
    return frame


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(_with_nulls, "missing values in x1 (1)", id="nulls"),
        pytest.param(lambda: _frame(rows=50), "50 rows, fewer than min_rows=100", id="few-rows"),
        pytest.param(lambda: _frame(classes=(1,)), "only 1 class", id="one-class"),
        pytest.param(_imbalanced, "class 1 is 2.0% of the rows", id="imbalanced"),
        pytest.param(lambda: _frame().drop(columns=["target"]), "no 'target'", id="no-target"),
        pytest.param(lambda: _frame(x2=["a"] * 120), "non-numeric features: x2", id="text-feature"),
    ],
)
def test_validate_data_refuses_bad_data(ml_steps: ModuleType, make: Any, message: str) -> None:
    with pytest.raises(TaskFailed, match="data validation failed") as err:
        ml_steps.validate_data(make())
    assert message in str(err.value)


def test_validate_data_passes_good_data_through(ml_steps: ModuleType) -> None:
    frame = _frame()
    assert ml_steps.validate_data(frame) is frame


EVALUATIONS = [
    {"model": "a", "accuracy": 0.9, "precision": 0.8, "recall": 0.7, "f1": 0.75, "roc_auc": 0.95},
    {"model": "b", "accuracy": 0.8, "precision": 0.9, "recall": 0.9, "f1": 0.9, "roc_auc": 0.91},
    {"model": "c", "accuracy": 0.7, "precision": 0.7, "recall": 0.8, "f1": 0.75, "roc_auc": 0.99},
]


@pytest.mark.parametrize(
    ("metric", "ranking"),
    [
        pytest.param("f1", ["b", "a", "c"], id="f1-tie-keeps-upstream-order"),
        pytest.param("accuracy", ["a", "b", "c"], id="accuracy"),
        pytest.param("roc_auc", ["c", "a", "b"], id="roc_auc"),
    ],
)
def test_select_best_ranks_by_metric(ml_steps: ModuleType, metric: str, ranking: list[str]) -> None:
    best = ml_steps.select_best(*EVALUATIONS, metric=metric)
    assert best["ranking"] == ranking
    assert best["best_model"] == ranking[0]
    winner = next(e for e in EVALUATIONS if e["model"] == ranking[0])
    assert best["metrics"] == {k: v for k, v in winner.items() if k != "model"}


def test_select_best_refuses_unknown_metric(ml_steps: ModuleType) -> None:
    with pytest.raises(TaskFailed, match="unknown metric 'mse'"):
        ml_steps.select_best(*EVALUATIONS, metric="mse")


# -- real runs (slow) ----------------------------------------------------------------


@pytest.mark.slow
def test_ml_pipeline_cli_run_trains_in_parallel_and_runs_show_agrees(tmp_path: Path) -> None:
    result = run_json(tmp_path, str(ML_YAML))

    assert result["pipeline"] == "ml-functions"
    assert result["state"] == "success"
    assert set(result["tasks"]) == ML_TASKS
    assert {tid: t["state"] for tid, t in result["tasks"].items()} == dict.fromkeys(
        ML_TASKS, "success"
    )
    # Parallel branches: every training started before any of them ended.
    spans = [interval(result["tasks"][tid]) for tid in TRAINING]
    assert max(start for start, _ in spans) < min(end for _, end in spans)
    features_end = interval(result["tasks"]["features"])[1]
    assert all(start >= features_end for start, _ in spans)

    show = stageflow(tmp_path, "runs", "show", result["run_id"], "--format", "json")
    assert show.returncode == 0, show.stderr
    shown = json.loads(show.stdout)
    assert shown["run_id"] == result["run_id"]
    assert shown["state"] == "success"
    assert shown["tasks"] == result["tasks"]


@pytest.mark.slow
def test_ml_pipeline_process_executor_prints_the_best_model(tmp_path: Path) -> None:
    proc = stageflow(tmp_path, "run", str(ML_YAML), "--executor", "process")

    assert proc.returncode == 0, proc.stderr
    assert "pipeline 'ml-functions': success" in proc.stdout
    summary = proc.stdout.split("output of select_best: ", 1)[1]
    best = json.loads(summary)
    assert best["metric"] == "f1"
    assert best["best_model"] in {"logistic_regression", "random_forest", "gradient_boosting"}
    assert sorted(best["ranking"]) == ["gradient_boosting", "logistic_regression", "random_forest"]
    assert set(best["metrics"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert 0.9 < best["metrics"]["accuracy"] <= 1.0  # breast cancer: real models do > 0.9

    runs = stageflow(tmp_path, "runs", "list", "--format", "json")
    assert [r["state"] for r in json.loads(runs.stdout)] == ["success"]


@pytest.mark.slow
def test_sdk_quickstart_runs_from_the_cli(tmp_path: Path) -> None:
    result = run_json(tmp_path, f"{SDK_FILE.relative_to(ROOT)}:pipeline")

    assert result["pipeline"] == "quickstart"
    assert {tid: t["state"] for tid, t in result["tasks"].items()} == {
        "split": "success",
        "train": "success",
        "evaluate": "success",
    }


@pytest.mark.slow
def test_sdk_quickstart_runs_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("sdk_quickstart", SDK_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "sdk_quickstart", module)
    spec.loader.exec_module(module)

    result = module.pipeline.run(home=str(tmp_path))

    assert result.ok, {tid: t.error for tid, t in result.tasks.items()}
    assert list(result.tasks) == ["split", "train", "evaluate"]
    assert module.pipeline.task("evaluate").upstream == ["split", "train"]
    assert result.output("evaluate")["accuracy"] > 0.8
    assert (tmp_path / "stageflow.db").exists()
