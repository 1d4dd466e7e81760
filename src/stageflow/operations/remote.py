"""The operations a CLI command runs against a ``stageflow serve`` instead of the store.

``--server URL`` (or ``STAGEFLOW_SERVER``) and a token in ``STAGEFLOW_TOKEN`` point the
commands that read or control runs at a server: ``runs list``, ``runs show``, ``logs``,
``cancel``, ``pause``, ``unpause``, ``approve`` and ``submit`` (of a YAML/JSON file,
saved as a pipeline first). Each function here returns what its local operation does
(``RunPage``, ``RunResult``, ``TaskLogs``, ``ControlOutcome``, ``SubmittedRun``), built
from the API's JSON, so the CLI renders both the same way. The API's 4xx answers come
back as the same ``StageflowError`` classes (its message, exit 2 for a mistake in the
request, 1 otherwise); a server that cannot be reached is a ``StoreUnreachable`` naming
it. Standard library HTTP only: the CLI does not need the server extra for this.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from stageflow.errors import (
    ControlRefused,
    InvalidSpec,
    Problem,
    RunNotFound,
    StageflowError,
    StoreUnreachable,
    UsageError,
)
from stageflow.operations.commands import ControlOutcome, SubmittedRun
from stageflow.operations.runs import LeaseStatus, LogFile, RunPage, RunSummary, TaskLogs
from stageflow.runtime.result import RunResult, TaskResult

__all__ = ["Remote"]

TIMEOUT_S = 30.0


def _time(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True, slots=True)
class Remote:
    """A server's base URL and the bearer token to send (``None``: none)."""

    url: str
    token: str | None

    # -- requests ----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        query = urllib.parse.urlencode(
            [(k, v) for k, vs in (params or {}).items() for v in _list(vs)], doseq=True
        )
        target = self.url.rstrip("/") + path + (f"?{query}" if query else "")
        request = urllib.request.Request(target, data=body, method=method)  # noqa: S310
        if body is not None:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:  # noqa: S310
                return int(answer.status), answer.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreUnreachable(
                f"cannot reach the server at {self.url}: {reason}; check --server "
                "(STAGEFLOW_SERVER) and that `stageflow serve` runs there"
            ) from None

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return json.loads(self._request(method, path, **kw)[1] or b"null")

    # -- the operations ----------------------------------------------------------------

    def list_runs(
        self,
        *,
        pipeline: str | None,
        states: tuple[str, ...],
        since: str | None,
        until: str | None,
        limit: int,
        cursor: str | None,
    ) -> RunPage:
        params: dict[str, Any] = {"limit": limit}
        for key, value in (
            ("pipeline", pipeline),
            ("since", since),
            ("until", until),
            ("cursor", cursor),
        ):
            if value is not None:
                params[key] = value
        if states:
            params["state"] = list(states)
        doc = self._json("GET", "/api/v1/runs", params=params)
        return RunPage([_summary(r) for r in doc["runs"]], doc.get("next_cursor"))

    def show_run(self, run_id: str) -> tuple[RunResult, str | None]:
        """The run as ``runs show`` shows it, and its lease's note (``None``: none)."""
        doc = self._json("GET", f"/api/v1/runs/{urllib.parse.quote(run_id)}")
        tasks = {
            tid: TaskResult(
                tid,
                t["state"],
                t["attempts"],
                _time(t["started_at"]),
                _time(t["ended_at"]),
                t["error"],
                note="cached" if t.get("cached") else "fallback" if t.get("fallback") else None,
                rows_in=t.get("rows_in"),
                rows_out=t.get("rows_out"),
            )
            for tid, t in doc["tasks"].items()
        }
        result = RunResult(
            doc["run_id"],
            doc["pipeline"],
            doc["state"],
            _time(doc["started_at"]),
            _time(doc["ended_at"]),
            tasks,
            path=list(doc.get("critical_path") or []),
        )
        lease = doc.get("lease") or {}
        return result, lease.get("note")

    def task_logs(self, run_id: str, task_id: str, attempt: int | None) -> TaskLogs:
        params = {"attempt": attempt} if attempt is not None else None
        path = f"/api/v1/runs/{urllib.parse.quote(run_id)}/tasks/{urllib.parse.quote(task_id)}/logs"
        text = self._request("GET", path, params=params)[1].decode("utf-8", errors="replace")
        files: list[LogFile] = []
        for chunk in text.split("== attempt ")[1:]:
            head, _, body = chunk.partition(" ==\n")
            files.append(LogFile(int(head), Path(f"attempt-{head}.log"), body))
        return TaskLogs(run_id, task_id, files)

    def control(self, run_id: str, request: str) -> ControlOutcome:
        doc = self._json("POST", f"/api/v1/runs/{urllib.parse.quote(run_id)}/{request}")
        return _outcome(doc)

    def decide(
        self, run_id: str, task_id: str, approved: bool, comment: str | None
    ) -> ControlOutcome:
        verb = "approve" if approved else "reject"
        path = (
            f"/api/v1/runs/{urllib.parse.quote(run_id)}/tasks/{urllib.parse.quote(task_id)}/{verb}"
        )
        doc = self._json("POST", path, body=json.dumps({"comment": comment}).encode())
        return _outcome(doc)

    def submit(self, spec: Path, params: dict[str, Any], priority: int) -> SubmittedRun:
        """Save the spec file as a pipeline version on the server, then queue a run of
        that version."""
        suffix = spec.suffix.lower()
        if suffix not in (".yaml", ".yml", ".json"):
            raise UsageError(
                f"{spec}: with --server, submit takes a .yaml/.yml/.json file (a Python "
                "module's pipeline cannot be sent)",
                field="target",
            )
        try:
            data = spec.read_bytes()
        except OSError as exc:
            raise UsageError(f"{spec}: {exc.strerror or exc}", field="target") from None
        kind = "application/json" if suffix == ".json" else "application/yaml"
        saved = self._json("POST", "/api/v1/pipelines", body=data, content_type=kind)
        body = {
            "pipeline_id": f"{saved['name']}@{saved['version']}",
            "parameters": params,
            "priority": priority,
        }
        doc = self._json("POST", "/api/v1/runs", body=json.dumps(body).encode())
        return SubmittedRun(
            doc["run_id"], doc["pipeline"], doc["version"], doc["state"], doc["priority"], params
        )


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _summary(doc: dict[str, Any]) -> RunSummary:
    lease = doc.get("lease")
    return RunSummary(
        run_id=doc["run_id"],
        pipeline=doc["pipeline"],
        pipeline_version=doc.get("version", ""),
        state=doc["state"],
        priority=int(doc.get("priority", 0)),
        created_at=_time(doc.get("created_at")) or 0.0,
        started_at=_time(doc["started_at"]),
        ended_at=_time(doc["ended_at"]),
        lease=None
        if lease is None
        else LeaseStatus(
            lease["owner"], lease["epoch"], _time(lease["expires_at"]), lease["live"], lease["note"]
        ),
    )


def _outcome(doc: dict[str, Any]) -> ControlOutcome:
    return ControlOutcome(
        doc["run_id"], doc["request"], doc["by"], doc["message"], task_id=doc.get("task_id")
    )


def _error(status: int, body: bytes) -> StageflowError:
    """The ``StageflowError`` of an API error answer."""
    try:
        doc = json.loads(body)
        message = str(doc["error"])
        # Each message is rendered already (it names its task and field).
        problems = [Problem(p.get("message") or message) for p in doc.get("problems") or []]
    except (ValueError, KeyError, TypeError, AttributeError):
        message, problems = body.decode("utf-8", errors="replace")[:500] or f"HTTP {status}", []
    if status == 422 and problems:
        return InvalidSpec(problems)
    if status == 404:
        return RunNotFound(message)
    if status == 409:
        return ControlRefused(message)
    if status in (400, 413, 422):
        return UsageError(message)
    if status >= 500:
        return StoreUnreachable(f"the server answered {status}: {message}")
    return StageflowError(f"the server refused it ({status}): {message}")
