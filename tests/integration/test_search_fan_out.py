"""Hyperparameter search as a fan-out, on real runs with real scikit-learn models:
``search_space`` lists the candidates, ``model_training`` mapped over it trains
one per task run, and ``model_selection`` picks the best from the stored
outputs (of a mapped evaluation in ``examples/hyperparameter_search.yaml``, or
of the trained models directly). A bad space, or a hyperparameter the
estimator does not take, is refused before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stageflow.errors import InvalidSpec
from stageflow.operators.ml.evaluation import LOWER_IS_BETTER
from stageflow.runtime.artifacts import ArtifactStore, load_output
from stageflow.runtime.loading import load_pipeline
from stageflow.runtime.result import RunResult
from stageflow.runtime.runner import run_pipeline
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.spec.load import pipeline_from_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hyperparameter_search.yaml"
STAGEFLOW = Path(sys.executable).with_name("stageflow")

# The models ranked by a training metric: no evaluation task (cross-validation
# gives every candidate a cv_mean).
OVER_MODELS = """
name: search-over-models
tasks:
  - id: ingest
    operator: data_ingestion
    parameters: {source: "sklearn:iris"}
  - id: features
    operator: feature_engineering
    upstream: [ingest]
    parameters: {target: target, test_size: 0.3, seed: 0, steps: [{scale: {}}]}
  - id: grid
    operator: search_space
    parameters:
      space: {C: [0.01, 1.0], fit_intercept: [true, false]}
  - id: train
    operator: model_training
    upstream: [features, grid]
    map_over: grid
    parameters:
      algorithm: logistic_regression
      hyperparameters: {C: 100.0, max_iter: 300}
      cross_validation: 3
      seed: 0
  - id: select_best
    operator: model_selection
    upstream: [train]
"""


def stored_outputs(settings: Settings, run_id: str, prefix: str) -> dict[str, Any]:
    """Every stored output of the task runs ``prefix[k]``, read back from the store."""
    store = open_store(settings.database_url, settings.home)
    try:
        refs = store.outputs(run_id)
    finally:
        store.close()
    artifacts = ArtifactStore(settings.artifacts_root)
    return {
        tid: load_output(ref, artifacts)
        for tid, ref in refs.items()
        if tid.startswith(f"{prefix}[")
    }


def best_of(outputs: dict[str, Any], prefix: str, n: int, metric: str, key: str) -> str:
    """The task run with the best ``metric`` (the first in element order on ties)."""
    runs = [f"{prefix}[{k}]" for k in range(n)]
    values = [outputs[r][key][metric] for r in runs]
    pick = min(values) if metric in LOWER_IS_BETTER else max(values)
    return runs[values.index(pick)]


def check_children(
    result: RunResult, settings: Settings, task: str, source: str
) -> list[dict[str, Any]]:
    """``task[0..N-1]`` succeeded, one per candidate of ``source``, each trained with
    its own candidate's hyperparameters; returns their stored outputs in element order."""
    candidates = result.output(source)
    n = len(candidates)
    runs = [f"{task}[{k}]" for k in range(n)]
    assert [result.tasks[r].state for r in runs] == ["success"] * n
    assert f"{task}[{n}]" not in result.tasks
    assert result.tasks[task].error == f"{n} of {n} elements succeeded"
    stored = stored_outputs(settings, result.run_id, task)
    assert set(stored) == set(runs)
    models = [stored[r] for r in runs]
    chosen = [m["candidate"]["hyperparameters"] for m in models]
    assert chosen == [c["hyperparameters"] for c in candidates]
    assert len({json.dumps(c, sort_keys=True) for c in chosen}) == n  # all distinct
    for k, model in enumerate(models):
        assert model["candidate"]["index"] == k
        estimator = model["estimator"].named_steps["model"].get_params()
        for name, value in chosen[k].items():
            assert estimator[name] == value, (runs[k], name)
    return models


@pytest.mark.slow
def test_the_example_trains_evaluates_and_selects_one_run_per_candidate(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    result = run_pipeline(load_pipeline(str(EXAMPLE)), settings=settings)
    assert result.ok, {t: r.error for t, r in result.tasks.items() if r.state != "success"}
    n = load_pipeline(str(EXAMPLE)).params["candidates"]
    assert len(result.output("candidates")) == n
    models = check_children(result, settings, "train", "candidates")
    assert all(m["hyperparameters"]["min_samples_leaf"] == 2 for m in models)

    evaluations = stored_outputs(settings, result.run_id, "evaluate")
    assert sorted(evaluations) == [f"evaluate[{k}]" for k in range(n)]
    for k in range(n):  # element order kept: evaluate[k] scored train[k]'s model
        assert evaluations[f"evaluate[{k}]"]["candidate"]["index"] == k
        assert evaluations[f"evaluate[{k}]"]["model_task"] == f"train[{k}]"
    selected = result.output("select_best")
    metric = selected["selection"]["metric"]
    assert metric == "f1"
    expected = best_of(evaluations, "evaluate", n, metric, "metrics")
    assert selected["selection"]["selected"] == expected
    assert selected["candidate"] == evaluations[expected]["candidate"]
    assert selected["metrics"][metric] == evaluations[expected]["metrics"][metric]
    ranking = selected["selection"]["ranking"]
    assert len(ranking) == n and ranking[0]["task"] == expected

    def logs(task: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STAGEFLOW), "--home", str(settings.home), "logs", result.run_id, task],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    shown = logs("train[3]")  # one child's log, by its run id
    assert shown.returncode == 0, shown.stderr
    assert "candidate 3 [" in shown.stdout
    bad = logs("train[x]")
    assert bad.returncode == 2 and "ID[K] with K a number" in bad.stderr
    missing = logs(f"train[{n}]")
    assert missing.returncode != 0 and f"has no task 'train[{n}]'" in missing.stderr


@pytest.mark.slow
def test_selection_over_the_trained_candidates_by_cross_validation(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    pipeline = pipeline_from_text(OVER_MODELS, fmt="yaml")
    result = run_pipeline(pipeline, settings=settings, max_parallel=4)
    assert result.ok, {t: r.error for t, r in result.tasks.items() if r.state != "success"}
    models = check_children(result, settings, "train", "grid")
    assert len(models) == 4
    assert all(m["hyperparameters"]["max_iter"] == 300 for m in models)  # the task's own kept
    stored = stored_outputs(settings, result.run_id, "train")
    selected = result.output("select_best")
    assert selected["selection"]["metric"] == "cv_mean"
    expected = best_of(stored, "train", 4, "cv_mean", "training_metrics")
    assert selected["selection"]["selected"] == expected
    assert selected["candidate"] == stored[expected]["candidate"]


def test_a_bad_search_space_is_refused_before_the_run_naming_task_and_field(
    tmp_path: Path,
) -> None:
    bad = OVER_MODELS.replace("fit_intercept: [true, false]", "fit_intercept: true")
    pipeline = pipeline_from_text(bad, fmt="yaml")
    with pytest.raises(InvalidSpec) as info:
        run_pipeline(pipeline, settings=Settings(home=tmp_path / "home"))
    [problem] = info.value.problems
    assert (problem.task, problem.field) == ("grid", "parameters.space")
    assert "space.fit_intercept is True, not a list of values to try" in problem.message
    assert "fit_intercept: [True]" in problem.message

    empty = OVER_MODELS.replace(
        "space: {C: [0.01, 1.0], fit_intercept: [true, false]}", "space: {}"
    )
    with pytest.raises(InvalidSpec) as info:
        run_pipeline(pipeline_from_text(empty, fmt="yaml"), settings=Settings(home=tmp_path / "h"))
    assert [(p.task, p.field) for p in info.value.problems] == [("grid", "parameters.space")]
    assert "space is empty" in str(info.value)


def test_a_misspelt_candidate_hyperparameter_is_refused_before_running(
    tmp_path: Path,
) -> None:
    spec = OVER_MODELS.replace("fit_intercept: [true, false]", "fit_intercep: [true]")
    with pytest.raises(InvalidSpec) as info:
        run_pipeline(
            pipeline_from_text(spec, fmt="yaml"), settings=Settings(home=tmp_path / "home")
        )
    [problem] = info.value.problems
    assert (problem.task, problem.field) == ("grid", "parameters.space.fit_intercep")
    assert problem.message == (
        "task 'train' trains these candidates: LogisticRegression has no hyperparameter "
        "'fit_intercep'; did you mean 'fit_intercept'?"
    )
    assert not (tmp_path / "home" / "artifacts").exists()


def test_operators_show_search_space() -> None:
    proc = subprocess.run(
        [str(STAGEFLOW), "operators", "show", "search_space", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    params = {p["name"]: p for p in info["parameters"]}
    assert set(params) == {"method", "space", "n_iter", "seed"}
    assert params["space"]["required"] and all(p["description"] for p in params.values())
    assert "operator: search_space" in info["example"]
    assert "map_over: candidates" in info["example"]
