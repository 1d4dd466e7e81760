"""A notification in a real run: the pipeline's name, the run's state and the errors
of the tasks that failed reach the webhook (issue 11), with the lines `runs show`
shows below a failed task's first line (its command's last output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stageflow.runtime.runner import run_pipeline
from stageflow.spec.models import Pipeline, Task
from support.ml import webhook


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_notification_reports_the_run_state_and_the_failures(
    tmp_path: Path, executor: str
) -> None:
    with webhook() as hook:
        # The URL as a parameter: a worker process started by an earlier test
        # would not see an environment variable set now.
        pipeline = Pipeline(
            "nightly",
            tasks=[
                Task("fine", operator="bash", parameters={"command": "echo 0.98765"}),
                Task("boom", operator="bash", parameters={"command": "echo no >&2; exit 3"}),
                Task(
                    "alert",
                    operator="notification",
                    upstream=["fine"],
                    after=["boom"],
                    trigger_rule="one_failed",
                    parameters={
                        "webhook_url": hook.url,
                        "message": "{pipeline} run {run_id} ({task}): {state}: {error}",
                    },
                ),
            ],
        )
        result = run_pipeline(pipeline, home=tmp_path, executor=executor, max_parallel=1)
    assert result.tasks["boom"].state == "failed"
    error = result.tasks["boom"].error
    assert error is not None
    # The error as `runs show` shows it: its first line, then the command's last output.
    assert error == "bash command exited with code 3; last output:\nno"
    assert [m["text"] for m in hook.received] == [
        f"nightly run {result.run_id} (alert): failed: boom: {error}"
    ]
    assert result.tasks["alert"].state == "success"
