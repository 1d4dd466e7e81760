"""A missing optional package fails an ML operator's task at once: installing a
package is not something another attempt does, so ``MLOperator.run`` turns
``MissingExtra`` into ``TaskFailed(..., retryable=False)``, whatever the task's
retry policy (``engine.retry.NOT_RETRYABLE``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from stageflow import Pipeline, Task
from stageflow.operators.base import TaskFailed
from stageflow.operators.ml.ingestion import DataIngestion, IngestionParams
from stageflow.spec.models import RetryPolicy
from support.ml import make_ctx

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("adlfs") is not None, reason="adlfs (az://) is installed here"
)
SOURCE = "az://container/raw/data.csv"  # az:// needs adlfs, not a stageflow dependency


def test_the_operator_raises_a_failure_that_is_not_retried(tmp_path: Path) -> None:
    params = IngestionParams.model_validate({"source": SOURCE})
    with pytest.raises(TaskFailed) as info:
        DataIngestion().run(params, {}, make_ctx(tmp_path))
    assert info.value.retryable is False
    assert str(info.value) == (
        f"data_ingestion: {SOURCE}: az:// needs a package that is not installed: pip install adlfs"
    )


def test_a_run_tries_it_once_despite_its_retry_policy(tmp_path: Path) -> None:
    task = Task(
        "ingest",
        operator="data_ingestion",
        parameters={"source": SOURCE},
        retry=RetryPolicy(max_retries=3, delay_seconds=0.01),
    )
    result = Pipeline("missing-extra", tasks=[task]).run(home=str(tmp_path / "home"))
    ingest = result.tasks["ingest"]
    assert (ingest.state, ingest.attempts) == ("failed", 1)
    assert ingest.error is not None and "pip install adlfs" in ingest.error
