"""The end-of-run summary: states, the critical path, metrics and the last output."""

from __future__ import annotations

import io

import pandas as pd

from stageflow.runtime.result import RunResult, TaskResult
from stageflow.service.progress import render_summary


def test_summary_shows_metrics_and_a_short_last_output() -> None:
    tasks = {
        "train": TaskResult("train", "success", 1, 0.0, 1.0, None, output={"model": "x"}),
        "evaluate": TaskResult(
            "evaluate",
            "success",
            2,
            1.0,
            1.5,
            None,
            output={"name": "rf", "metrics": {"f1": 0.91234, "ok": True}},
        ),
        "score": TaskResult(
            "score",
            "success",
            1,
            1.5,
            2.0,
            None,
            output=pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]}),
        ),
        "score[0]": TaskResult("score[0]", "success", 1, 1.5, 2.0, None, output=1),
        "deploy": TaskResult("deploy", "failed", 3, 2.0, 2.5, "boom\ntraceback"),
    }
    result = RunResult("r1", "p", "failed", 0.0, 2.5, tasks, ["train", "evaluate", "score"])
    out = io.StringIO()
    render_summary(result, out)
    text = out.getvalue()
    assert "run r1 of pipeline 'p': failed in 2.50s" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:7]}
    assert rows["evaluate"] == ["success", "2", "0.50s"]
    assert rows["deploy"] == ["failed", "3", "0.50s"]
    assert "    boom\n" in text and "      traceback\n" in text  # then its last lines
    assert "critical path: train -> evaluate -> score" in text
    assert "metrics of evaluate (rf): f1=0.9123" in text  # booleans are not metrics
    assert "output of score: a DataFrame of 3 rows x 2 columns (a, b, ...)" in text
    assert "score[0]" in text and "output of score[0]" not in text
