"""The ``notification`` operator: post a JSON message to a webhook (Slack-compatible).

The URL is a secret, so it comes from an environment variable
(``webhook_env``, default ``SLACK_WEBHOOK_URL``); ``webhook_url`` works too
but puts the secret in the spec. Error messages show only the URL's scheme
and host. ``message`` is a template: ``{run_id}``, ``{task_id}``,
``{attempt}``, ``{params.NAME}`` and ``{inputs.TASK.key...}`` (an upstream
output, then keys) are replaced — plain lookups, nothing is evaluated;
``{{``/``}}`` are literal braces. ``format: slack`` posts ``{"text": ...}``;
``json`` adds ``run_id``, ``task_id`` and ``attempt``.

Example (seed 002's completion message)::

    - id: notify
      operator: notification
      upstream: [register]
      parameters:
        webhook_env: SLACK_WEBHOOK_URL
        message: "fraud model v{inputs.register.version} registered (accuracy {inputs.register.metrics.accuracy})"
"""  # noqa: E501

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from stageflow.operators.base import Operator, TaskContext, TaskFailed
from stageflow.operators.metadata import record

__all__ = ["Notification", "NotificationParams", "render"]

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][\w.-]*)\}")


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

    def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, NotificationParams)
        text = render(params.message, ctx, inputs)
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
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "stageflow"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=params.timeout_seconds) as response:  # noqa: S310
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            return _failed(params, f"{shown} answered HTTP {exc.code} {exc.reason}", text, ctx)
        except urllib.error.URLError as exc:
            return _failed(params, f"cannot reach {shown}: {exc.reason}", text, ctx)
        except TimeoutError:
            return _failed(
                params, f"{shown} did not answer within {params.timeout_seconds:g}s", text, ctx
            )
        record(ctx, metrics={"sent": 1}, info={"webhook": shown})
        print(f"posted to {shown} (HTTP {status}): {text}")
        return {"sent": True, "status": status, "text": text}


OPERATOR = Notification


def render(template: str, ctx: TaskContext, inputs: Mapping[str, Any]) -> str:
    """``template`` with its ``{fields}`` replaced; ``TaskFailed`` names an unknown one."""
    values: dict[str, Any] = {
        "run_id": ctx.run_id,
        "task_id": ctx.task_id,
        "attempt": ctx.attempt,
        "params": dict(ctx.params),
        "inputs": dict(inputs),
    }

    def replace(match: re.Match[str]) -> str:
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        path = match.group(1)
        value = _lookup(values, path)
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    return _FIELD.sub(replace, template)


def _lookup(values: Mapping[str, Any], path: str) -> Any:
    current: Any = values
    parts = path.split(".")
    if parts[0] == "inputs" and len(parts) > 1:
        # task ids may hold dots: take the longest upstream id that matches
        for n in range(len(parts) - 1, 1, -1):
            candidate = ".".join(parts[1:n])
            if candidate in values["inputs"]:
                parts = ["inputs", candidate, *parts[n:]]
                break
    for i, part in enumerate(parts):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            where = ".".join(parts[:i]) or "the template"
            known = ", ".join(map(str, current)) if isinstance(current, Mapping) else "nothing"
            raise TaskFailed(
                f"notification: message field {{{path}}}: {where} has no '{part}' "
                f"(it has: {known[:200]})"
            )
    return current


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
