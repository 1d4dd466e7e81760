"""Dynamic fan-out on real runs: one task run per element, outputs in order,
min_success_ratio, both executors, and the SDK's Task.map."""

from __future__ import annotations

from pathlib import Path

import fan_tasks
import pytest

from stageflow import Pipeline, Task
from stageflow.runtime.runner import run_pipeline
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.spec.load import pipeline_from_text

SPEC = """
name: grid-search
tasks:
  - {id: grid, call: fan_tasks:grid}
  - id: train
    call: fan_tasks:train
    upstream: [grid]
    map_over: grid
    {ratio}
  - {id: best, call: fan_tasks:best, upstream: [train]}
"""


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_each_element_is_its_own_task_run(tmp_path: Path, executor: str) -> None:
    pipeline = pipeline_from_text(SPEC.replace("{ratio}", ""), fmt="yaml")
    settings = Settings(home=tmp_path / "home")
    result = run_pipeline(pipeline, executor=executor, max_parallel=2, settings=settings)
    assert result.state == "success", {t: r.error for t, r in result.tasks.items()}
    assert result.output("best")["order"] == [1, 2, 3, 4, 5]  # element order kept
    assert result.output("best")["best"]["depth"] == 5
    children = [f"train[{k}]" for k in range(5)]
    assert all(result.tasks[c].state == "success" for c in children)
    store = open_store(None, settings.home)
    try:
        rows = {r.task_id: r for r in store.task_runs(result.run_id)}
        outputs = store.outputs(result.run_id)
    finally:
        store.close()
    assert set(children) <= set(rows) and all(rows[c].attempts == 1 for c in children)
    assert set(children) <= set(outputs)  # every element's output stored on its own
    assert rows["train"].note == "mapped"
    assert rows["train"].error == "5 of 5 elements succeeded"


@pytest.mark.parametrize(
    ("ratio", "state", "n"),
    [
        pytest.param("", "failed", None, id="one-failure-fails-the-task"),
        pytest.param("min_success_ratio: 0.8", "success", 4, id="ratio-tolerates-it"),
    ],
)
def test_min_success_ratio_on_a_real_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ratio: str, state: str, n: int | None
) -> None:
    monkeypatch.setenv("FAN_FAIL_DEPTH", "3")
    pipeline = pipeline_from_text(SPEC.replace("{ratio}", ratio), fmt="yaml")
    result = run_pipeline(pipeline, max_parallel=2, settings=Settings(home=tmp_path / "h"))
    assert result.tasks["train[2]"].state == "failed"
    assert "depth 3 diverged" in (result.tasks["train[2]"].error or "")
    assert result.tasks["train"].state == state
    if n is not None:
        assert result.output("best")["n"] == n  # only the successful outputs
        assert result.output("best")["order"] == [1, 2, 4, 5]


def test_sdk_map_and_a_wide_fan_out(tmp_path: Path) -> None:
    numbers = Task("numbers", fan_tasks.numbers, parameters={"n": 2000})
    square = Task("square", fan_tasks.square).map(numbers)
    total = Task("total", fan_tasks.total)
    pipeline = Pipeline("squares", tasks=[numbers, square, total])
    result = pipeline.run(home=str(tmp_path / "home"), max_parallel=4)
    assert result.state == "success"
    assert result.output("total") == sum(k * k for k in range(2000))
    assert len([t for t in result.tasks if t.startswith("square[")]) == 2000


def test_map_over_must_name_an_upstream_task() -> None:
    from stageflow.errors import InvalidSpec
    from stageflow.runtime.plan import check

    bad = SPEC.replace("{ratio}", "").replace("map_over: grid", "map_over: nope")
    with pytest.raises(InvalidSpec) as info:
        check(pipeline_from_text(bad, fmt="yaml"))
    assert any(p.field == "map_over" and "'nope'" in p.message for p in info.value.problems)
