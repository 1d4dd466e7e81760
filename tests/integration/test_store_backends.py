"""Real runs on both stores (SQLite and the PostgreSQL server), and outputs on an
fsspec artifact store (``memory://``: no bucket exists here, fsspec's in-memory
filesystem stands in for S3/GCS and exercises the same non-local code path)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stageflow import Pipeline, Task
from stageflow.runtime.artifacts import ArtifactStore, deserialize, load_output, serialize
from stageflow.runtime.runner import resume_run, run_pipeline
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from support.postgres import postgres_schema, require_postgres


def make_numbers() -> list[int]:
    return list(range(50_000))  # ~340 KB as JSON: stored as a file, not inline


def total(make_numbers: list[int]) -> int:
    return sum(make_numbers)


def pipeline() -> Pipeline:
    return Pipeline("backends", tasks=[Task("make_numbers", make_numbers), Task("total", total)])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    base = Settings(home=tmp_path / "home")
    if request.param == "sqlite":
        yield base
        return
    require_postgres()
    with postgres_schema() as url:
        yield replace(base, database_url=url)


def test_a_run_is_recorded_in_either_store(settings: Settings) -> None:
    result = run_pipeline(pipeline(), settings=settings)
    assert result.state == "success"
    assert result.output("total") == sum(range(50_000))
    store = open_store(settings.database_url, settings.home)
    try:
        run = store.get_run(result.run_id)
        assert (run.state, run.pipeline) == ("success", "backends")
        states = {t.task_id: (t.state, t.attempts) for t in store.task_runs(result.run_id)}
        assert states == {"make_numbers": ("success", 1), "total": ("success", 1)}
        outputs = store.outputs(result.run_id)
        big = outputs["make_numbers"]
        assert big.kind == "file" and big.uri is not None
        assert hashlib.sha256(Path(big.uri).read_bytes()).hexdigest() == big.sha256
        assert outputs["total"].kind == "inline"
        events = [(e.task_id, e.to_state) for e in store.events(result.run_id)]
        assert events.index(("make_numbers", "success")) < events.index(("total", "running"))
    finally:
        store.close()
    # a successful run cannot be resumed: the message says so
    from stageflow.errors import UsageError

    with pytest.raises(UsageError, match="already succeeded"):
        resume_run(result.run_id, settings=settings)


def test_outputs_on_an_fsspec_artifact_store(tmp_path: Path) -> None:
    # memory:// lives inside one process, so this uses the thread executor; a
    # worker process would write to its own copy (a real bucket has no such limit).
    root = f"memory://stageflow-{uuid.uuid4().hex}"
    settings = Settings(home=tmp_path / "home", artifacts_url=root)
    result = run_pipeline(pipeline(), settings=settings)
    assert result.state == "success", result.tasks
    store = open_store(None, settings.home)
    try:
        ref = store.outputs(result.run_id)["make_numbers"]
    finally:
        store.close()
    assert ref.kind == "file" and ref.uri is not None
    assert ref.uri == f"{root}/outputs/{result.run_id}/make_numbers/attempt-1"
    assert not (settings.home / "artifacts").exists()  # nothing went to the local folder
    assert load_output(ref, ArtifactStore(root)) == list(range(50_000))


@pytest.mark.parametrize(
    ("value", "serializer"),
    [
        pytest.param(None, "none", id="none"),
        pytest.param({"a": [1, 2.5, "x", None, True]}, "json", id="json"),
        pytest.param((1, 2), "pickle", id="tuple-is-not-json"),
        pytest.param({1: "int keys"}, "pickle", id="int-keys-are-not-json"),
        pytest.param(float("nan"), "pickle", id="nan-is-not-json"),
        pytest.param({"a", "b"}, "pickle", id="set"),
    ],
)
def test_serializers_round_trip_exactly(value: Any, serializer: str) -> None:
    name, data = serialize(value)
    assert name == serializer
    back = deserialize(name, data)
    if value == value:  # nan != nan
        assert back == value and type(back) is type(value)
    else:
        assert back != back


def test_dataframes_and_models_use_parquet_and_joblib() -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]})
    name, data = serialize(frame)
    assert name == "parquet" and data[:4] == b"PAR1"
    assert deserialize(name, data).equals(frame)
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    name, data = serialize(model)
    assert name == "joblib"
    assert list(deserialize(name, data).predict([[0.0], [3.0]])) == [0, 1]
