"""A ``notification`` message that names a secret (``${params.NAME}`` of a secret run
parameter, or ``${secret:NAME}``): it validates, and the secret is sent, printed and
returned as ``***``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stageflow.operators.ml.notification import Notification, NotificationParams
from stageflow.runtime import secrets
from stageflow.runtime.plan import plan_problems, task_parameters
from stageflow.spec.load import pipeline_from_data
from support.ml import make_ctx, webhook

SECRET = "k3y-value-5e0a9c"


@pytest.fixture(autouse=True)
def _forget_what_was_resolved() -> Iterator[None]:
    """The masker is process-wide: leave it as found for the tests that follow."""
    known, pattern = set(secrets._known), secrets._pattern
    yield
    secrets._known.clear()
    secrets._known.update(known)
    secrets._pattern = pattern


def spec(message: str) -> dict[str, Any]:
    return {
        "name": "tells",
        "params": {"api_key": {"secret": True}, "model": "fraud"},
        "tasks": [
            {
                "id": "notify",
                "operator": "notification",
                "parameters": {"webhook_env": "TEST_HOOK", "message": message},
            }
        ],
    }


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("key ${params.api_key} for {params.model}", id="secret-param"),
        pytest.param("key ${secret:SF_NOTIFY_KEY} in run {run_id}", id="secret-ref"),
        pytest.param("{params.api_key} as a field", id="secret-param-field"),
    ],
)
def test_a_message_naming_a_secret_validates(message: str) -> None:
    assert plan_problems(pipeline_from_data(spec(message))) == []


def test_a_secret_next_to_a_bad_field_still_names_only_the_field() -> None:
    [problem] = plan_problems(pipeline_from_data(spec("key ${params.api_key} {nope}")))
    assert (problem.task, problem.field) == ("notify", "parameters.message")
    assert "field {nope}: unknown name 'nope'" in problem.message
    assert "secret" not in problem.message


@pytest.mark.parametrize("braces", [False, True], ids=["plain", "braces-in-the-value"])
def test_the_secret_is_masked_in_what_is_sent_printed_and_returned(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    braces: bool,
) -> None:
    value = SECRET + ("{0}}" if braces else "")
    monkeypatch.setenv("SF_NOTIFY_KEY", value)
    pipeline = pipeline_from_data(spec("key ${params.api_key} for {params.model} ({run_id})"))
    run_params = {"api_key": "${secret:SF_NOTIFY_KEY}", "model": "fraud"}
    # As the runtime runs it: ``${params.NAME}`` substituted, then the secret resolved
    # in the process that runs the task, with its output masked.
    given = task_parameters(pipeline.task("notify").parameters, run_params)
    resolved = secrets.resolve(given)
    ctx = make_ctx(tmp_path, "notify", params=run_params)
    ctx.mask = secrets.mask
    with webhook() as hook:
        monkeypatch.setenv("TEST_HOOK", hook.url)
        out = Notification().run(NotificationParams.model_validate(resolved), {}, ctx)
    printed = capsys.readouterr().out
    assert hook.received == [{"text": "key *** for fraud (r1)"}]
    assert out["text"] == "key *** for fraud (r1)"
    assert "key *** for fraud (r1)" in printed
    assert SECRET not in printed + repr(out) + repr(hook.received)
