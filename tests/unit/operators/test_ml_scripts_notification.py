"""custom_script (through the python and bash operators) and notification (against a
local webhook server)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from stageflow.operators import registry
from stageflow.operators.base import TaskFailed
from stageflow.operators.ml.notification import Notification, NotificationParams, render
from stageflow.operators.ml.scripts import CustomScript, ScriptParams
from stageflow.spec.models import Task
from support.ml import closed_port, make_ctx, metadata, webhook


def script(tmp_path: Path, inputs: dict[str, Any] | None = None, **params: Any) -> Any:
    ctx = make_ctx(tmp_path, "script", params={"threshold": 3})
    return CustomScript().run(ScriptParams.model_validate(params), inputs or {}, ctx), ctx


def test_python_script_sees_inputs_params_and_context(tmp_path: Path) -> None:
    out, _ = script(
        tmp_path,
        {"extract": [1, 2, 3, 4, 5]},
        script_content=(
            "values = inputs['extract']\n"
            "result = {'big': [v for v in values if v > params['threshold']],\n"
            "          'scale': params['scale'], 'task': context.task_id}\n"
        ),
        parameters={"scale": 2},
    )
    assert out == {"big": [4, 5], "scale": 2, "task": "script"}


def test_python_script_from_a_file_and_without_a_result(tmp_path: Path) -> None:
    path = tmp_path / "step.py"
    path.write_text("print('hello from a file')\n")
    out, _ = script(tmp_path, script_path=str(path))
    assert out is None


def test_bash_script_runs_through_the_bash_operator(tmp_path: Path) -> None:
    out, ctx = script(
        tmp_path,
        script_type="bash",
        script_content='echo "run=$STAGEFLOW_RUN_ID threshold=$STAGEFLOW_PARAM_THRESHOLD $HI"',
        env={"HI": "hi"},
    )
    assert out == "run=r1 threshold=3 hi"
    assert "threshold=3" in ctx.log_path.read_text()


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        pytest.param(
            {"script_content": "result = (\n"},
            TaskFailed,
            r"syntax error in <script_content>",
            id="syntax",
        ),
        pytest.param({"script_path": "no/such.py"}, TaskFailed, r"no such script", id="missing"),
        pytest.param(
            {"script_type": "bash", "script_content": "exit 3"},
            TaskFailed,
            r"bash command exited with code 3",
            id="bash-exit",
        ),
        pytest.param(
            {"script_content": "raise ValueError('bad rows')"}, ValueError, r"bad rows", id="raises"
        ),
    ],
)
def test_script_failures(
    tmp_path: Path, params: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        script(tmp_path, **params)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="neither"),
        pytest.param({"script_content": "x", "script_path": "y"}, id="both"),
        pytest.param({"script_content": "x", "script_type": "ruby"}, id="type"),
    ],
)
def test_script_parameters_are_checked_before_running(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ScriptParams.model_validate(params)


# -- notification -----------------------------------------------------------------------


def notify(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str | None,
    inputs: dict[str, Any] | None = None,
    **params: Any,
) -> Any:
    if url is None:
        monkeypatch.delenv("TEST_HOOK", raising=False)
    else:
        monkeypatch.setenv("TEST_HOOK", url)
    ctx = make_ctx(tmp_path, "notify", params={"model": "fraud"})
    params = {"webhook_env": "TEST_HOOK", **params}
    return Notification().run(NotificationParams.model_validate(params), inputs or {}, ctx), ctx


def test_a_slack_message_with_template_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = {"register.v2": {"version": "3", "metrics": {"accuracy": 0.912345}}}
    with webhook() as hook:
        out, ctx = notify(
            tmp_path,
            monkeypatch,
            hook.url,
            inputs,
            message="{params.model} v{inputs.register.v2.version} "
            "({inputs.register.v2.metrics.accuracy}) run {run_id}/{task_id} {{literal}}",
        )
    assert hook.received == [{"text": "fraud v3 (0.9123) run r1/notify {literal}"}]
    assert hook.headers[0]["Content-Type"] == "application/json"
    assert out == {"sent": True, "status": 200, "text": hook.received[0]["text"]}
    assert metadata(ctx)["info"]["webhook"].startswith("http://127.0.0.1:")


def test_json_format_adds_the_run_and_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with webhook() as hook:
        notify(tmp_path, monkeypatch, hook.url, format="json", message="done")
    assert hook.received == [{"text": "done", "run_id": "r1", "task_id": "notify", "attempt": 1}]


@pytest.mark.parametrize(
    ("status", "url", "message"),
    [
        pytest.param(500, "hook", r"answered HTTP 500", id="server-error"),
        pytest.param(200, "closed", r"cannot reach http://127\.0\.0\.1:\d+", id="unreachable"),
        pytest.param(
            200, None, r"no webhook URL: set the environment variable TEST_HOOK", id="env"
        ),
    ],
)
def test_notification_failures_never_show_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, url: str | None, message: str
) -> None:
    with webhook(status=status) as hook:
        target = {"hook": hook.url, "closed": f"http://127.0.0.1:{closed_port()}/secret-token"}
        chosen = target.get(url) if url else None
        with pytest.raises(TaskFailed, match=message) as info:
            notify(tmp_path, monkeypatch, chosen)
        out, _ = notify(tmp_path, monkeypatch, chosen, fail_on_error=False)
    assert "secret-token" not in str(info.value)
    assert out["sent"] is False


def test_an_unknown_template_field_names_what_there_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        webhook() as hook,
        pytest.raises(TaskFailed, match=r"\{inputs\.train\.acc\}: inputs\.train has no 'acc'"),
    ):
        notify(
            tmp_path,
            monkeypatch,
            hook.url,
            {"train": {"accuracy": 1}},
            message="{inputs.train.acc}",
        )
    assert hook.received == []


# -- the template: format specs, run fields, validation (issue 11) ----------------------


def test_format_specs_and_the_run_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK", "http://127.0.0.1:1/")
    ctx = make_ctx(tmp_path, "notify", params={"model": "fraud"})
    ctx.pipeline = "fraud-detection"
    inputs = {"evaluate_model": {"metrics": {"accuracy": 0.912345}, "classes": ["no", "yes"]}}
    message = (
        "{pipeline}/{run_id}/{task} #{attempt}: {state} [{error}] "
        "accuracy {inputs.evaluate_model.metrics.accuracy:.4f} "
        "({inputs.evaluate_model.metrics.accuracy:.1%}) {params.model!r:>9} "
        "{inputs.evaluate_model.classes.1}"
    )
    assert render(message, ctx, inputs) == (
        "fraud-detection/r1/notify #1: success [] accuracy 0.9123 (91.2%)   'fraud' yes"
    )
    ctx.failures = {"train": "model_training: fitting failed: bad\nmore", "score": "boom"}
    assert render("{state}: {error}", ctx, {}) == (
        "failed: train: model_training: fitting failed: bad\nmore; score: boom"
    )


_OUTPUT = "\n".join(f"line {i}" for i in range(1, 9))


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        pytest.param({}, "", id="none"),
        pytest.param(
            {"work": "bash command exited with code 3; last output:\nboom"},
            "work: bash command exited with code 3; last output:\nboom",
            id="bash-output",
        ),
        pytest.param(
            {"work": f"bash command exited with code 1; last output:\n{_OUTPUT}\n\n"},
            "work: bash command exited with code 1; last output:\n"
            "line 4\nline 5\nline 6\nline 7\nline 8",
            id="last-lines-only",
        ),
        pytest.param(
            {"work": "failed: " + "x" * 300},
            "work: failed: " + "x" * 189 + "...",
            id="long-line-cut",
        ),
        pytest.param(
            {"a": "first\nout a", "b": "second"},
            "a: first\nout a; b: second",
            id="two-tasks",
        ),
    ],
)
def test_the_error_field_shows_what_runs_show_shows(
    tmp_path: Path, failures: dict[str, str], expected: str
) -> None:
    """``{error}``: each failed task's first line and last output lines, bounded as
    ``stageflow runs show`` bounds them (``engine.error_lines``)."""
    ctx = make_ctx(tmp_path, "alert")
    ctx.failures = failures
    assert render("{error}", ctx, {}) == expected


@pytest.mark.parametrize(
    ("message", "error"),
    [
        pytest.param("{run_id:.4f}", "cannot format str 'r1' with '.4f'", id="spec"),
        pytest.param("{inputs.train.__class__}", "inputs.train has no '__class__'", id="attr"),
        pytest.param("{inputs.train.scores.9}", "has no '9' (it has: items 0 to 1)", id="index"),
        pytest.param("{params.__class__}", "params has no '__class__'", id="params-attr"),
    ],
)
def test_a_field_that_cannot_be_filled_fails_the_task(
    tmp_path: Path, message: str, error: str
) -> None:
    ctx = make_ctx(tmp_path, "notify")
    with pytest.raises(TaskFailed, match=re.escape(error)):
        render(message, ctx, {"train": {"scores": [1, 2]}})


@pytest.mark.parametrize(
    ("message", "error"),
    [
        pytest.param(
            "accuracy {inputs.evaluate_model.metrics.accuracy:.4f}",
            "field {inputs.evaluate_model.metrics.accuracy:.4f}: 'evaluate_model' is not a "
            "data upstream of this task (upstream: train, register.v2); add it to `upstream:`",
            id="not-upstream",
        ),
        pytest.param(
            "{inputs.gate.ok}",
            "field {inputs.gate.ok}: 'gate' is under `after:`, which passes no output; "
            "move it to `upstream:`",
            id="after",
        ),
        pytest.param(
            "{pipline}", "field {pipline}: unknown name 'pipline'; did you mean", id="typo"
        ),
        pytest.param(
            "{run_id.__class__}",
            "field {run_id.__class__}: run_id is a single value; it has no '__class__'",
            id="attribute",
        ),
        pytest.param(
            "{params.modle}",
            "field {params.modle}: the pipeline declares no parameter 'modle' (declared: model)",
            id="param",
        ),
        pytest.param(
            "{params.model:.2f}",
            "field {params.model:.2f}: cannot format str 'fraud'",
            id="param-spec",
        ),
        pytest.param("{attempt:%}", None, id="int-percent-is-fine"),
        pytest.param(
            "{inputs.train.metrics.accuracy:zz}",
            "field {inputs.train.metrics.accuracy:zz}: the format spec 'zz' fits no value",
            id="input-spec-fits-nothing",
        ),
        pytest.param(
            "{inputs.train.acc!r:.2f}",
            "field {inputs.train.acc!r:.2f}: the format spec '.2f' fits no value",
            id="input-spec-after-repr",
        ),
        pytest.param("{inputs.train.acc:.4f}", None, id="input-spec-for-a-number"),
        pytest.param("{inputs.train.n:d} {inputs.train.acc:.1%}", None, id="input-int-percent"),
        pytest.param("{inputs.train.name:>10} {inputs.train.name:s}", None, id="input-text"),
        pytest.param("{state!x}", "unknown conversion !x", id="conversion"),
        pytest.param("{0}", "unknown name '0'", id="positional"),
        pytest.param("{}", "field {} names nothing", id="empty"),
        pytest.param("{inputs.train[0]}", "use dots for keys and list items", id="brackets"),
        pytest.param("{state:{width}}", "a format spec cannot hold another field", id="nested"),
        pytest.param("accuracy }", "Single '}' encountered in format string; write {{", id="brace"),
        pytest.param("{inputs.register.v2.version} {{literal}}", None, id="dotted-upstream"),
    ],
)
def test_template_fields_are_checked_by_validation(message: str, error: str | None) -> None:
    task = Task(
        "notify",
        operator="notification",
        upstream=["train", "register.v2"],
        after=["gate"],
        parameters={"message": message},
    )
    problems = registry.task_problems(task, task.parameters, {"model": "fraud"})
    if error is None:
        assert problems == []
        return
    [problem] = problems
    assert (problem.task, problem.field) == ("notify", "parameters.message")
    assert error in problem.message
