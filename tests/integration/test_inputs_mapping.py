"""``inputs=``: an upstream output bound to a parameter of any name, on both local
executors, through a resume (which reloads the spec saved in the store) and the
cache (whose key says which output feeds which parameter)."""

from __future__ import annotations

import json
from pathlib import Path

import inputs_tasks as it
import pytest

from stageflow import Pipeline, Task
from stageflow.runtime.runner import resume_run, run_pipeline
from stageflow.runtime.store import open_store
from stageflow.spec.load import pipeline_from_data


def _chain(n: int) -> Pipeline:
    tasks = [Task("t0", it.zero)]
    tasks += [Task(f"t{i}", it.inc, inputs={"x": f"t{i - 1}"}) for i in range(1, n)]
    return Pipeline("chain", tasks=tasks)


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_generated_chain_runs_on_both_executors(tmp_path: Path, executor: str) -> None:
    result = run_pipeline(_chain(6), executor=executor, home=tmp_path)
    assert result.state == "success", {t: r.error for t, r in result.tasks.items()}
    assert result.output("t5") == 5


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_two_inputs_go_to_their_parameters_not_by_order(tmp_path: Path, executor: str) -> None:
    p = Pipeline(
        "two",
        tasks=[
            Task("one", it.one),
            Task("ten", it.ten),
            Task("diff", it.sub, inputs={"b": "one", "a": "ten"}),  # upstream: one, ten
        ],
    )
    result = run_pipeline(p, executor=executor, home=tmp_path)
    assert result.state == "success", {t: r.error for t, r in result.tasks.items()}
    assert p.task("diff").upstream == ["one", "ten"]
    assert result.output("diff") == 9


def test_the_stored_spec_keeps_inputs_and_a_resume_binds_them(tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    p = Pipeline(
        "resumable",
        tasks=[
            Task("t0", it.zero),
            Task("t1", it.inc, inputs={"x": "t0"}),
            Task("t2", it.flaky_inc, inputs={"x": "t1"}, parameters={"marker": str(marker)}),
        ],
    )
    first = run_pipeline(p, home=tmp_path)
    assert first.tasks["t2"].state == "failed"
    store = open_store(None, tmp_path)
    try:
        run = store.get_run(first.run_id)
        spec = json.loads(store.get_pipeline(run.pipeline, run.pipeline_version).spec_json)
    finally:
        store.close()
    assert spec["tasks"][2]["inputs"] == {"x": "t1"}
    assert pipeline_from_data(spec).task("t2").inputs == {"x": "t1"}
    marker.touch()
    again = resume_run(first.run_id, home=tmp_path)
    assert again.state == "success", {t: r.error for t, r in again.tasks.items()}
    assert again.output("t2") == 2


def test_the_cache_reuses_a_bound_task_and_tells_bindings_apart(tmp_path: Path) -> None:
    log = tmp_path / "ran.txt"

    def pipeline(source: str) -> Pipeline:
        return Pipeline(
            "cached",
            tasks=[
                Task("t0", it.zero),
                Task("t1", it.inc, inputs={"x": "t0"}),
                Task(
                    "t2",
                    it.counted_inc,
                    inputs={"x": source},
                    upstream=["t0", "t1"],
                    parameters={"log": str(log)},
                    cache=True,
                ),
            ],
        )

    assert run_pipeline(pipeline("t1"), home=tmp_path).output("t2") == 2
    second = run_pipeline(pipeline("t1"), home=tmp_path)
    assert second.tasks["t2"].note == "cached" and second.output("t2") == 2
    other = run_pipeline(pipeline("t0"), home=tmp_path)  # same upstream, other binding
    assert other.tasks["t2"].note != "cached" and other.output("t2") == 1
    assert log.read_text().splitlines() == ["1", "0"]
