"""The ``notification`` operator: post a JSON message to a webhook (Slack-compatible).

The URL is a secret, so it comes from an environment variable
(``webhook_env``, default ``SLACK_WEBHOOK_URL``); ``webhook_url`` works too
but puts the secret in the spec. Error messages show only the URL's scheme
and host. ``format: slack`` posts ``{"text": ...}``; ``json`` adds
``run_id``, ``task_id`` and ``attempt``.

``message`` is a template in Python's format syntax, with these fields:

==========================  ================================================
``{pipeline}``              the pipeline's name
``{run_id}``                the run
``{task}`` (``{task_id}``)  this task; ``{attempt}`` its attempt number
``{state}``                 ``failed`` once a task of the run has failed, else ``success``
``{error}``                 each failed task and its error (``train: ...``), else empty
``{params.NAME}``           a run parameter
``{inputs.TASK.key...}``    an upstream output, then keys (a number indexes a list)
==========================  ================================================

``{error}`` shows each error as ``stageflow runs show`` does: its first line, then
its last lines (a bash command's last output) on lines of their own, bounded
(``engine.error_lines``); tasks are separated by ``; ``.

A field may end with a format spec (``{inputs.evaluate.metrics.accuracy:.4f}``)
or a conversion (``!r``); a number without one shows 4 significant digits.
``{{``/``}}`` are literal braces. Fields are looked up by key, never as
attributes, and nothing is evaluated. A secret named in the message
(``${secret:NAME}``, or ``${params.NAME}`` of a secret run parameter) is not a
field: it is resolved when the task runs, and every secret is masked (``***``) in
the message sent, printed and returned, as in the task's log. ``stageflow validate`` refuses a field
that cannot be filled: an unknown name, an undeclared run parameter, a task
that is not a data upstream, a format spec that does not fit a known value or,
for an upstream output, fits no value at all (neither a number nor text).
An upstream output without the key fails the task, naming the keys there are.

Example (seed 002's completion message, and one when something failed)::

    - id: notify
      operator: notification
      upstream: [register, evaluate]
      parameters:
        webhook_env: SLACK_WEBHOOK_URL
        message: "fraud model v{inputs.register.version} registered (accuracy {inputs.evaluate.metrics.accuracy:.4f})"
    - id: alert
      operator: notification
      after: [register]
      trigger_rule: one_failed
      parameters:
        message: "{pipeline} run {run_id}: {state}: {error}"
"""  # noqa: E501

from __future__ import annotations

import json
import os
import re
import string
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from stageflow.engine.error_lines import error_lines
from stageflow.errors import Problem
from stageflow.operators.addresses import urlopen
from stageflow.operators.base import Operator, TaskContext, TaskFailed
from stageflow.operators.metadata import record
from stageflow.spec.models import Pipeline, Task
from stageflow.spec.suggest import did_you_mean

__all__ = [
    "Notification",
    "NotificationParams",
    "PostFailed",
    "post_json",
    "render",
    "template_problems",
]

# The fields that hold one value, with a sample of its type (to check format specs).
_SCALARS: dict[str, Any] = {
    "pipeline": "name",
    "run_id": "run",
    "task": "task",
    "task_id": "task",
    "attempt": 1,
    "state": "success",
    "error": "",
}
_NAMES = [*_SCALARS, "params", "inputs"]
# What a value known only at run time (an upstream output) may be, to check format specs.
_PLAUSIBLE: tuple[Any, ...] = (0.5, 1, "text")
_CAN_USE = "pipeline, run_id, task, attempt, state, error, params.NAME, inputs.TASK.key"
# A secret reference, as ``runtime.secrets`` resolves it: text, not a template field.
_SECRET_REF = re.compile(r"\$\{(secret:[A-Za-z_][A-Za-z0-9_]*)\}")


class NotificationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(
        default="stageflow run {run_id}: {task_id} reached", description="the message template"
    )
    webhook_env: str = Field(
        default="SLACK_WEBHOOK_URL", description="environment variable holding the webhook URL"
    )
    webhook_url: str | None = Field(
        default=None, description="the URL itself (prefer webhook_env: it is a secret)"
    )
    format: Literal["slack", "json"] = Field(default="slack", description="payload shape")
    timeout_seconds: float = Field(default=10.0, gt=0, description="HTTP timeout")
    fail_on_error: bool = Field(
        default=True, description="fail the task when the message cannot be sent (else warn)"
    )


class Notification(Operator):
    """Post a templated message to a webhook."""

    name = "notification"
    Params = NotificationParams

    @classmethod
    def spec_problems(
        cls,
        params: BaseModel,
        task: Task,
        pipeline: Pipeline | None,
        run_params: Mapping[str, Any],
    ) -> list[Problem]:
        assert isinstance(params, NotificationParams)
        return [
            Problem(
                f"message {why}" if why.startswith("field") else f"message: {why}",
                task=task.id,
                field="parameters.message",
            )
            for why in template_problems(params.message, task.upstream, task.after, run_params)
        ]

    def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, NotificationParams)
        # A secret in the message (resolved before the task runs) is sent, printed and
        # returned as ``***``: masked in the template (a value with braces in it is no
        # field), then in the text (a run parameter or an upstream output holding one).
        mask = ctx.mask or (lambda text: text)
        text = mask(render(mask(params.message), ctx, inputs))
        url = params.webhook_url or os.environ.get(params.webhook_env)
        if not url:
            why = f"no webhook URL: set the environment variable {params.webhook_env}"
            return _failed(params, why, text, ctx)
        if not url.startswith(("http://", "https://")):
            raise TaskFailed("notification: the webhook URL must start with http:// or https://")
        payload: dict[str, Any] = {"text": text}
        if params.format == "json":
            payload.update(run_id=ctx.run_id, task_id=ctx.task_id, attempt=ctx.attempt)
        shown = _where(url)
        try:
            status = post_json(url, payload, params.timeout_seconds)
        except PostFailed as exc:
            return _failed(params, str(exc), text, ctx)
        record(ctx, metrics={"sent": 1}, info={"webhook": shown})
        print(f"posted to {shown} (HTTP {status}): {text}")
        return {"sent": True, "status": status, "text": text}


OPERATOR = Notification


class PostFailed(Exception):
    """A webhook post that failed; the message shows the URL as its scheme and host."""


def post_json(url: str, payload: Mapping[str, Any], timeout: float) -> int:
    """POST ``payload`` as JSON to the http(s) ``url``; its HTTP status. ``PostFailed``
    says why it was not taken (an HTTP error, unreachable, no answer in ``timeout``),
    never with the URL's path or query (they are its credentials). Also what
    ``runtime.notify`` sends a webhook channel with."""
    shown = _where(url)
    if not url.startswith(("http://", "https://")):
        raise PostFailed(f"{shown}: a webhook URL must start with http:// or https://")
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "stageflow"},
        method="POST",
    )
    try:
        with urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise PostFailed(f"{shown} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise PostFailed(f"cannot reach {shown}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        if isinstance(exc, TimeoutError):
            raise PostFailed(f"{shown} did not answer within {timeout:g}s") from None
        raise PostFailed(f"cannot reach {shown}: {exc.strerror or exc}") from None


def render(template: str, ctx: TaskContext, inputs: Mapping[str, Any]) -> str:
    """``template`` with its fields filled (see the module docstring).

    Raises ``TaskFailed`` naming a field that cannot be filled or formatted.
    """
    failures = ctx.failures
    values: dict[str, Any] = {
        "pipeline": ctx.pipeline,
        "run_id": ctx.run_id,
        "task": ctx.task_id,
        "task_id": ctx.task_id,
        "attempt": ctx.attempt,
        "state": "failed" if failures else "success",
        "error": "; ".join(f"{t}: {_error_text(e)}" for t, e in failures.items()),
        "params": dict(ctx.params),
        "inputs": dict(inputs),
    }
    try:
        parsed = _parse(template)
    except ValueError as exc:
        raise TaskFailed(f"notification: message: {exc}") from None
    out: list[str] = []
    for literal, field in parsed:
        out.append(literal)
        if field is not None:
            value = _lookup(values, field, list(inputs))
            try:
                out.append(_format(value, field))
            except ValueError as exc:
                raise TaskFailed(f"notification: message field {field.text}: {exc}") from None
    return "".join(out)


def template_problems(
    template: str, upstream: Sequence[str], after: Sequence[str], run_params: Mapping[str, Any]
) -> list[str]:
    """Why fields of ``template`` cannot be filled, known before running: the
    syntax, unknown names, undeclared run parameters, tasks that are not data
    ``upstream``, format specs that do not fit the value."""
    try:
        parsed = _parse(template)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    for _, field in parsed:
        if field is None:
            continue
        why = _field_problem(field, upstream, after, run_params)
        if why is not None:
            problems.append(f"field {field.text}: {why}")
    return problems


class _Field(NamedTuple):
    text: str  # as written, braces included
    path: list[str]
    conversion: str | None
    spec: str


def _parse(template: str) -> list[tuple[str, _Field | None]]:
    """``(literal text, field)`` pairs; ``ValueError`` says what is malformed. A secret
    reference (``${secret:NAME}``) is literal text."""
    out: list[tuple[str, _Field | None]] = []
    template = _SECRET_REF.sub(r"${{\1}}", template)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc}; write {{{{ and }}}} for literal braces") from None
    for literal, name, spec, conversion in parts:
        if name is None:
            out.append((literal, None))
            continue
        text = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        text += "}"
        if not name:
            raise ValueError(f"field {text} names nothing; use one of {_CAN_USE}")
        if "[" in name or "]" in name:
            raise ValueError(f"field {text}: use dots for keys and list items ({{inputs.t.0}})")
        if conversion not in (None, "r", "s", "a"):
            raise ValueError(f"field {text}: unknown conversion !{conversion}; use !r, !s or !a")
        if spec and "{" in spec:
            raise ValueError(f"field {text}: a format spec cannot hold another field")
        out.append((literal, _Field(text, name.split("."), conversion, spec or "")))
    return out


def _field_problem(
    field: _Field, upstream: Sequence[str], after: Sequence[str], run_params: Mapping[str, Any]
) -> str | None:
    root, rest = field.path[0], field.path[1:]
    if root in _SCALARS:
        if rest:
            return f"{root} is a single value; it has no '{rest[0]}'"
        return _spec_problem(field, _SCALARS[root])
    if root == "params":
        if not rest:
            return None
        if rest[0] not in run_params:
            declared = ", ".join(sorted(run_params)) or "none"
            return (
                f"the pipeline declares no parameter '{rest[0]}' (declared: {declared}); "
                "add it under `params:`"
            )
        if len(rest) == 1:
            return _spec_problem(field, run_params[rest[0]])
        return _any_value_problem(field)  # a key inside the value: its type is unknown
    if root == "inputs":
        if not rest:
            return None
        task = _upstream_of(rest, upstream)
        if task is not None:
            return _any_value_problem(field)  # known only at run time
        name = _upstream_of(rest, after) or rest[0]
        if name in after:
            return f"'{name}' is under `after:`, which passes no output; move it to `upstream:`"
        shown = ", ".join(upstream) or "none"
        return (
            f"'{name}' is not a data upstream of this task (upstream: {shown}); "
            "add it to `upstream:`"
        )
    hint = did_you_mean(root, _NAMES)
    fix = f"did you mean '{hint}'?" if hint else f"use one of {_CAN_USE}"
    return f"unknown name '{root}'; {fix}"


def _spec_problem(field: _Field, sample: Any) -> str | None:
    try:
        _format(sample, field)
    except ValueError as exc:
        return str(exc)
    return None


def _any_value_problem(field: _Field) -> str | None:
    """Why ``field``'s format spec fits no value of any type it could plausibly
    hold (a number or text), or ``None`` when one of them formats."""
    if not field.spec:
        return None
    for sample in _PLAUSIBLE:
        try:
            _format(sample, field)
        except ValueError:
            continue
        return None
    try:
        format(0.5, field.spec)
    except (TypeError, ValueError) as exc:
        why = str(exc)
    else:  # a conversion (!r, !s, !a) made every sample text
        why = f"!{field.conversion} makes the value text"
    return (
        f"the format spec '{field.spec}' fits no value (tried a float, an int and a str: "
        f"{why}); write e.g. :.4f or :.1% for a number, :>10 for text"
    )


def _upstream_of(parts: Sequence[str], tasks: Sequence[str]) -> str | None:
    """The longest task id that ``parts`` starts with (task ids may hold dots)."""
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in tasks:
            return candidate
    return None


def _lookup(values: Mapping[str, Any], field: _Field, upstream: Sequence[str]) -> Any:
    """The value at ``field``'s path: keys of mappings and indexes of lists only."""
    parts = list(field.path)
    if parts[0] == "inputs" and len(parts) > 1:
        task = _upstream_of(parts[1:], upstream)
        if task is not None:
            parts = ["inputs", task, *parts[1 + len(task.split(".")) :]]
    current: Any = values
    for i, part in enumerate(parts):
        found, current = _child(current, part)
        if not found:
            where = ".".join(parts[:i]) or "the template"
            raise TaskFailed(
                f"notification: message field {field.text}: {where} has no '{part}' "
                f"(it has: {_keys(current)[:200]})"
            )
    return current


def _child(value: Any, part: str) -> tuple[bool, Any]:
    """``(True, value[part])``, or ``(False, value)`` when there is none."""
    if isinstance(value, Mapping):
        if part in value:
            return True, value[part]
        if part.lstrip("-").isdigit() and int(part) in value:
            return True, value[int(part)]
        return False, value
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str | bytes)
        and part.lstrip("-").isdigit()
        and -len(value) <= int(part) < len(value)
    ):
        return True, value[int(part)]
    return False, value


def _keys(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(map(str, value)) or "nothing"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return f"items 0 to {len(value) - 1}" if value else "nothing"
    return f"nothing: it is a {type(value).__name__}"


def _format(value: Any, field: _Field) -> str:
    """``value`` converted and formatted as ``field`` says; ``ValueError`` says why not."""
    if field.conversion == "r":
        value = repr(value)
    elif field.conversion == "a":
        value = ascii(value)
    elif field.conversion == "s":
        value = str(value)
    if not field.spec:
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    try:
        return format(value, field.spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"cannot format {type(value).__name__} {_short(value)} with '{field.spec}': {exc}"
        ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _error_text(error: str) -> str:
    """``error`` bounded as ``stageflow runs show`` shows it, its lines kept."""
    return "\n".join(error_lines(error))


def _where(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _failed(params: NotificationParams, why: str, text: str, ctx: TaskContext) -> Any:
    if params.fail_on_error:
        raise TaskFailed(f"notification: {why}")
    print(f"warning: notification not sent: {why}")
    record(ctx, metrics={"sent": 0})
    return {"sent": False, "error": why, "text": text}
