"""model_training with `resources: {gpu: N}` gets its assigned devices.

No GPU exists here: the capacity is simulated (Capacity(gpu=2)); the
assignment, the environment the worker process sees, and what the operator
records are real. Real scikit-learn training on a bundled dataset.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stageflow.engine.admission import Capacity
from stageflow.runtime.runner import Runner
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.spec.load import pipeline_from_data

pytestmark = pytest.mark.slow


def _pipeline() -> dict[str, object]:
    train = {
        "operator": "model_training",
        "upstream": ["features"],
        "resources": {"cpu": 0.5, "gpu": 1},
        "parameters": {"algorithm": "logistic_regression", "seed": 1},
    }
    return {
        "name": "gpu-training",
        "tasks": [
            {
                "id": "ingest",
                "operator": "data_ingestion",
                "parameters": {"source": "sklearn:iris"},
            },
            {
                "id": "features",
                "operator": "feature_engineering",
                "upstream": ["ingest"],
                "parameters": {"target": "target", "seed": 1},
            },
            {"id": "train_a", **train},
            {"id": "train_b", **train},
        ],
    }


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_each_training_task_gets_its_own_gpu(tmp_path: Path, executor: str) -> None:
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings.database_url, settings.home)
    try:
        runner = Runner(
            pipeline_from_data(_pipeline()),
            store=store,
            settings=settings,
            executor=executor,
            max_parallel=4,
            capacity=Capacity(cpu=4, memory_gb=8, gpu=2),
        )
        result = runner.run_new({})
        assert result.ok, {t: r.error for t, r in result.tasks.items()}
        attempts = [a for a in store.attempts(result.run_id) if a.task_id.startswith("train")]
        stored = {a.task_id: a.gpu_devices for a in attempts}
    finally:
        store.close()
    seen = {tid: result.output(tid)["gpu_devices"] for tid in ("train_a", "train_b")}
    assert seen == stored  # what the operator saw is what was assigned
    assert all(v in ("0", "1") for v in seen.values())
    a, b = attempts
    assert a.started_at is not None and a.ended_at is not None
    assert b.started_at is not None and b.ended_at is not None
    if a.started_at < b.ended_at and b.started_at < a.ended_at:  # they ran side by side
        assert a.gpu_devices != b.gpu_devices
