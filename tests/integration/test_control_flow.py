"""Conditions (`when:`) and branches on real runs, both executors."""

from __future__ import annotations

from pathlib import Path

import pytest

from stageflow.errors import InvalidSpec
from stageflow.runtime.plan import check
from stageflow.runtime.runner import run_pipeline
from stageflow.runtime.settings import Settings
from stageflow.spec.load import pipeline_from_text

EXECUTORS = ["thread", "process"]

GATED = """
name: gated
params: {deploy: true, score: 0.9}
tasks:
  - id: evaluate
    call: flow_tasks:evaluate
    parameters: {score: "${params.score}"}
  - id: deploy
    call: flow_tasks:deploy
    upstream: [evaluate]
    when: "${evaluate.accuracy} >= 0.85 and ${params.deploy}"
  - id: report
    call: flow_tasks:report
    upstream: [deploy]
    trigger_rule: none_failed
"""

BRANCHED = """
name: branched
params: {drift: 0.5}
tasks:
  - id: quality_check
    call: flow_tasks:quality_check
    parameters: {drift: "${params.drift}"}
    branch: true
  - id: retrain
    call: flow_tasks:retrain
    upstream: [quality_check]
  - id: skip_retrain
    call: flow_tasks:skip_retrain
    upstream: [quality_check]
  - id: report
    call: flow_tasks:report
    upstream: [retrain, skip_retrain]
    trigger_rule: none_failed_min_one_success
"""

VALIDATION = """
name: validation
params: {rows: 100}
tasks:
  - id: validate
    call: flow_tasks:validate
    parameters: {rows: "${params.rows}"}
  - id: train
    call: flow_tasks:train
    upstream: [validate]
  - id: cleanup
    call: flow_tasks:cleanup
    upstream: [validate]
    trigger_rule: all_failed
"""


def _run(text: str, tmp_path: Path, executor: str, **params: object) -> dict[str, object]:
    pipeline = pipeline_from_text(text, fmt="yaml")
    result = run_pipeline(
        pipeline,
        params=params,
        executor=executor,
        max_parallel=2,
        settings=Settings(home=tmp_path / "home"),
    )
    states = {tid: t.state for tid, t in result.tasks.items()}
    return {
        "run": result.state,
        **states,
        "outputs": {tid: t.output for tid, t in result.tasks.items()},
        "errors": {tid: t.error for tid, t in result.tasks.items()},
    }


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize(
    ("params", "deploy_state"),
    [
        pytest.param({}, "success", id="true"),
        pytest.param({"score": 0.5}, "skipped", id="low-accuracy"),
        pytest.param({"deploy": False}, "skipped", id="param-off"),
    ],
)
def test_when_condition_gates_a_task(
    tmp_path: Path, executor: str, params: dict[str, object], deploy_state: str
) -> None:
    out = _run(GATED, tmp_path, executor, **params)
    assert out["deploy"] == deploy_state
    assert out["report"] == "success"  # none_failed: a skipped upstream is fine
    assert out["run"] == "success"
    if deploy_state == "skipped":
        assert "condition is false" in str(out["errors"]["deploy"])  # type: ignore[index]
    else:
        assert out["outputs"]["deploy"] == "deployed rf"  # type: ignore[index]


def test_a_condition_that_cannot_be_evaluated_fails_the_task(tmp_path: Path) -> None:
    text = GATED.replace("${evaluate.accuracy}", "${evaluate.recall}")
    out = _run(text, tmp_path, "thread")
    assert (out["deploy"], out["run"]) == ("failed", "failed")
    assert "no key 'recall'" in str(out["errors"]["deploy"])  # type: ignore[index]


def test_a_condition_on_an_output_without_a_truth_value_fails_the_task(tmp_path: Path) -> None:
    text = (
        "name: truthless\n"
        "tasks:\n"
        "  - {id: scores, call: 'flow_tasks:scores'}\n"
        "  - {id: deploy, call: 'flow_tasks:cleanup', upstream: [scores], when: '${scores}'}\n"
    )
    out = _run(text, tmp_path, "thread")
    assert (out["scores"], out["deploy"], out["run"]) == ("success", "failed", "failed")
    assert "condition could not be evaluated: ValueError" in str(out["errors"]["deploy"])  # type: ignore[index]


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize(
    ("drift", "followed", "skipped"),
    [
        pytest.param(0.5, "retrain", "skip_retrain", id="retrain"),
        pytest.param(0.1, "skip_retrain", "retrain", id="skip"),
    ],
)
def test_branch_follows_the_returned_task(
    tmp_path: Path, executor: str, drift: float, followed: str, skipped: str
) -> None:
    out = _run(BRANCHED, tmp_path, executor, drift=drift)
    assert (out[followed], out[skipped], out["report"]) == ("success", "skipped", "success")
    assert "not chosen by branch task 'quality_check'" in str(
        out["errors"][skipped]  # type: ignore[index]
    )
    assert out["run"] == "success"


@pytest.mark.parametrize(
    ("rows", "train", "cleanup"),
    [
        pytest.param(100, "success", "skipped", id="valid"),
        pytest.param(3, "upstream_failed", "success", id="invalid"),
    ],
)
def test_validation_success_or_cleanup(tmp_path: Path, rows: int, train: str, cleanup: str) -> None:
    """Seed 001's "Data Validation -> [success: Model Training, failure: Data Cleanup]"."""
    out = _run(VALIDATION, tmp_path, "thread", rows=rows)
    assert (out["train"], out["cleanup"]) == (train, cleanup)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        pytest.param("${evaluate.accuracy} >=", "does not parse", id="syntax"),
        pytest.param("${other.x} > 1", "'other' is not upstream", id="not-upstream"),
        pytest.param(
            "${params.nope}", "${params.nope}, which is not a run parameter", id="undeclared-param"
        ),
        pytest.param("__import__('os')", "Call is not allowed", id="call"),
    ],
)
def test_bad_conditions_are_refused_before_the_run(when: str, message: str) -> None:
    text = GATED.replace('"${evaluate.accuracy} >= 0.85 and ${params.deploy}"', repr(when))
    pipeline = pipeline_from_text(text, fmt="yaml")
    with pytest.raises(InvalidSpec) as info:
        check(pipeline)
    problems = [p for p in info.value.problems if p.field == "when"]
    assert problems and problems[0].task == "deploy"
    assert message in problems[0].message
