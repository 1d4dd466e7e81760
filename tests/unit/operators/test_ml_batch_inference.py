"""batch_inference refuses data of another schema in a few words that say how to fix
it, and such a failure is final: ``TaskFailed(..., retryable=False)`` is never
retried, whatever the task's retry policy (``engine.retry.NOT_RETRYABLE``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from stageflow import Pipeline, Task
from stageflow.operators.base import TaskFailed
from stageflow.operators.ml.registry_ops import BatchInference, BatchParams
from stageflow.spec.models import RetryPolicy
from support.ml import make_ctx

pd = pytest.importorskip("pandas")
pytest.importorskip("sklearn")

TRAINED_ON = [f"mean f{i}" for i in range(30)]
RETRY = RetryPolicy(max_retries=3, delay_seconds=0.01)
NOTE = "not retried: another attempt cannot change it"


def frame(columns: list[str], rows: int = 40) -> Any:
    data = {c: [float((r * 7 + i) % 11) for r in range(rows)] for i, c in enumerate(columns)}
    return pd.DataFrame({**data, "target": [r % 2 for r in range(rows)]})


def model(columns: list[str] = TRAINED_ON) -> dict[str, Any]:
    """A ``model_training``-shaped record: an estimator fit on ``columns``."""
    from sklearn.linear_model import LogisticRegression

    rows = frame(columns)
    estimator = LogisticRegression(max_iter=200).fit(rows[columns], rows["target"])
    return {"kind": "model", "name": "champion", "estimator": estimator, "task_id": "train"}


def score(data: Any, tmp_path: Path) -> Any:
    params = BatchParams.model_validate({})
    return BatchInference().run(params, {"rows": data, "train": model()}, make_ctx(tmp_path))


def test_another_schema_is_refused_briefly_with_the_fix(tmp_path: Path) -> None:
    wine = frame([f"wine {i}" for i in range(13)])
    with pytest.raises(TaskFailed) as info:
        score(wine, tmp_path)
    message = str(info.value)
    assert message == (
        "batch_inference: champion expects another schema: the data lacks 30 of its 30 "
        "feature columns ('mean f0', 'mean f1', 'mean f2', 'mean f3', 'mean f4' and 25 "
        "more), so the model was trained on other data; score with the model trained on "
        "these columns (`model: NAME@ALIAS`; register each dataset's model under a name "
        "of its own)"
    )
    assert "wine 0" not in message  # the data's own columns are not listed
    assert info.value.retryable is False


def test_a_few_missing_columns_are_all_named(tmp_path: Path) -> None:
    partial = frame([c for c in TRAINED_ON if c not in ("mean f3", "mean f7")])
    with pytest.raises(TaskFailed, match=r"lacks 2 of its 30 feature columns \('mean f3', "):
        score(partial, tmp_path)


def test_the_right_schema_scores(tmp_path: Path) -> None:
    scored = score(frame(TRAINED_ON), tmp_path)
    assert len(scored) == 40 and "prediction" in scored.columns


def test_retryable_survives_pickling() -> None:
    # A worker process raises it; the flag must come back with it.
    again = pickle.loads(pickle.dumps(TaskFailed("bad rows", retryable=False)))
    assert (str(again), again.retryable) == ("bad rows", False)
    assert TaskFailed("flaky").retryable is True


# -- in a run: a schema error is not retried ----------------------------------------------


def wine_rows() -> Any:
    return frame([f"wine {i}" for i in range(13)])


def breast_cancer_model() -> dict[str, Any]:
    return model()


def test_a_schema_error_fails_the_task_at_once(tmp_path: Path) -> None:
    pipeline = Pipeline(
        "score-other-schema",
        tasks=[
            Task("rows", wine_rows),
            Task("train", breast_cancer_model),
            Task("score", operator="batch_inference", upstream=["rows", "train"], retry=RETRY),
        ],
    )
    result = pipeline.run(home=str(tmp_path / "home"))
    score = result.tasks["score"]
    assert (score.state, score.attempts) == ("failed", 1)
    assert score.error is not None
    assert "lacks 30 of its 30 feature columns" in score.error
    assert score.error.endswith(f"({NOTE})")


def final_failure(log: str) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write("attempt\n")
    raise TaskFailed("the input is wrong", retryable=False)


def flaky_failure(log: str) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write("attempt\n")
    raise TaskFailed("the service is busy")


@pytest.mark.parametrize(
    ("fn", "attempts", "note"),
    [
        pytest.param(final_failure, 1, f"({NOTE})", id="final"),
        pytest.param(flaky_failure, 4, None, id="retryable"),
    ],
)
def test_retryable_false_is_never_retried(
    tmp_path: Path, fn: Any, attempts: int, note: str | None
) -> None:
    log = tmp_path / "attempts.log"
    task = Task("t", fn, parameters={"log": str(log)}, retry=RETRY)
    result = Pipeline("not-retryable", tasks=[task]).run(home=str(tmp_path / "home"))
    t = result.tasks["t"]
    assert (t.state, t.attempts) == ("failed", attempts)
    assert len(log.read_text().splitlines()) == attempts
    assert t.error is not None
    assert (note is not None and t.error.endswith(note)) or "not retried" not in t.error


def test_no_note_where_no_retry_was_due(tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    task = Task("t", final_failure, parameters={"log": str(log)})
    result = Pipeline("no-retries", tasks=[task]).run(home=str(tmp_path / "home"))
    assert result.tasks["t"].error == "the input is wrong"
