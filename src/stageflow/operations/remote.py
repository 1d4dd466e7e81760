"""The operations a CLI command runs against a ``stageflow serve`` instead of the store.

``--server URL`` (or ``STAGEFLOW_SERVER``) and a token in ``STAGEFLOW_TOKEN`` point the
commands that read or control runs at a server: ``runs list``, ``runs show``, ``logs``,
``cancel``, ``pause``, ``unpause``, ``approve`` (and ``--reject``), ``retry`` (queued
again for a worker), ``submit`` (of a YAML/JSON file, saved as a pipeline first),
``runs diff``, ``runs cost``, ``lineage RUN_ID/TASK``, ``stats``, ``statistics`` and
``gates``. Each function here returns what its local operation does (``RunPage``,
``RunResult``, ``TaskLogs``, ``ControlOutcome``, ``SubmittedRun``, ``RunDiff``,
``CostReport``, ``Lineage``, ``PipelineStats``, ``RunReport``, ``PipelineReliability``,
``GateReport``), built from the API's JSON, so the CLI renders both
the same way. The API's 4xx answers come back as the same ``StageflowError`` classes
(its message, exit 2 for a mistake in the request, 1 otherwise); a server that cannot
be reached is a ``StoreUnreachable`` naming it. Standard library HTTP only: the CLI
does not need the server extra for this.
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

from stageflow.engine.reliability import GateResult, Reliability
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
from stageflow.operations.monitoring import GateReport, PipelineReliability
from stageflow.operations.reports import CostReport, Lineage, RunDiff
from stageflow.operations.runs import LeaseStatus, LogFile, RunPage, RunSummary, TaskLogs
from stageflow.runtime.result import RunResult, TaskResult
from stageflow.runtime.stats import PipelineStats, TaskStats
from stageflow.runtime.usage import CostRow, Efficiency, PathStep, RunReport, TaskUsage

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

    def show_run(self, run_id: str) -> tuple[RunResult, str | None, list[str]]:
        """The run as ``runs show`` shows it, its lease's note (``None``: none) and its
        retry chain in words (``RunDetail.retry_lines``)."""
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
        retry = doc.get("retry") or {}
        retries = []
        if retry.get("retry_of") is not None:
            retries.append(f"attempt {retry['attempt']} (retry of {retry['retry_of']})")
        if retry.get("retried_by") is not None:
            retries.append(f"retried by {retry['retried_by']}, due at {retry['retry_due_at']}")
        return result, lease.get("note"), retries

    def usage(self, run_id: str, pipeline: str) -> RunReport:
        """``runs show``'s usage report of the run (``GET .../usage``), at the server's
        prices. Times on the path come relative to the run's start, as the API gives them."""
        doc = self._json("GET", f"/api/v1/runs/{urllib.parse.quote(run_id)}/usage")
        steps = doc["critical_path"]
        zero = 0.0 if any(s["ended_s"] is not None for s in steps) else None
        path = [
            PathStep(
                s["task_id"],
                s["state"],
                s["attempts"],
                s["ended_s"] or 0.0,
                wait_s=s["wait_s"],
                run_s=s["run_s"],
            )
            for s in steps
        ]
        usage = [
            TaskUsage(
                u["task_id"],
                u["attempts"],
                u["wall_s"],
                u["cpu_seconds"],
                u["peak_rss_mb"],
                u["gpu_seconds"],
                u["gpu_devices"],
                dict(u["request"] or {}),
                u["cost"],
            )
            for u in doc["usage"]
        ]
        history = [
            Efficiency(
                e["task_id"],
                e["runs"],
                e["requested_memory_gb"],
                e["peak_rss_mb"],
                e["requested_cpu"],
                e["cores_used"],
                e["recommendation"],
            )
            for e in doc["right_sizing"]
        ]
        # The report names its run only for the pipeline's name (its right-sizing line).
        run: Any = _Named(pipeline)
        return RunReport(
            run,
            zero,
            path,
            usage,
            doc["cost"],
            dict(doc["prices"] or {}),
            history,
            int(doc["right_sizing_runs"]),
        )

    def record(self, run_id: str) -> dict[str, Any] | None:
        """The run's reproducibility record (``None``: it has none)."""
        doc = self._json("GET", f"/api/v1/runs/{urllib.parse.quote(run_id)}/record")
        found: dict[str, Any] | None = doc["record"]
        return found

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

    def retry(self, run_id: str, from_task: str | None) -> ControlOutcome:
        """Queue the ended run again on the server (``POST .../retry``): a worker runs
        its tasks that did not succeed (and ``from_task`` with everything downstream)."""
        body = json.dumps({"from_task": from_task}).encode()
        doc = self._json("POST", f"/api/v1/runs/{urllib.parse.quote(run_id)}/retry", body=body)
        return _outcome(doc)

    def diff(self, run_a: str, run_b: str) -> RunDiff:
        quote = urllib.parse.quote
        doc = self._json("GET", f"/api/v1/runs/{quote(run_a)}/diff/{quote(run_b)}")
        return RunDiff(
            doc["a"],
            doc["b"],
            (doc["pipelines"][0], doc["pipelines"][1]),
            (doc["states"][0], doc["states"][1]),
            (bool(doc["recorded"][0]), bool(doc["recorded"][1])),
            doc["changes"],
            list(doc["same"]),
        )

    def lineage(self, run_id: str, task_id: str) -> Lineage:
        quote = urllib.parse.quote
        doc = self._json("GET", f"/api/v1/runs/{quote(run_id)}/lineage/{quote(task_id)}")
        return Lineage(
            doc["target"],
            doc["matched"],
            doc["run_id"],
            doc["pipeline"],
            doc["task"],
            doc["produced"],
            doc["upstream"],
            doc["raw_inputs"],
            doc["consumers"],
        )

    def stats(self, pipeline: str, days: int) -> PipelineStats:
        path = f"/api/v1/pipelines/{urllib.parse.quote(pipeline, safe='')}/stats"
        doc = self._json("GET", path, params={"days": days})
        tasks = [
            TaskStats(
                t["task_id"],
                t["runs"],
                t["successes"],
                t["failures"],
                t["other"],
                t["success_rate"],
                t["p50_seconds"],
                t["p95_seconds"],
                _time(t["last_failure_at"]),
                t["last_failure_run_id"],
                t["last_failure"],
            )
            for t in doc["tasks"]
        ]
        return PipelineStats(
            doc["pipeline"],
            doc["days"],
            _time(doc["since"]) or 0.0,
            _time(doc["until"]) or 0.0,
            dict(doc["runs_by_state"]),
            tasks,
            truncated=bool(doc["truncated"]),
        )

    def statistics(self, pipeline: str | None, days: int) -> list[PipelineReliability]:
        """Each pipeline's reliability (only those the token may see), or ``pipeline``'s."""
        params: dict[str, Any] = {"days": days}
        if pipeline is not None:
            params["pipeline"] = pipeline
        doc = self._json("GET", "/api/v1/monitoring/statistics", params=params)
        return [
            PipelineReliability(
                p["pipeline"],
                p["days"],
                _time(p["from"]) or 0.0,
                _time(p["to"]) or 0.0,
                Reliability(
                    p["runs"],
                    dict(p["runs_by_state"]),
                    p["success_rate"],
                    p["duration_seconds"]["p50"],
                    p["duration_seconds"]["p95"],
                    p["duration_seconds"]["p99"],
                    p["queue_wait_seconds"]["p50"],
                    p["queue_wait_seconds"]["p95"],
                    p["mttr_seconds"],
                    p["recoveries"],
                    p["open_incident_since"],
                    p["mtbf_seconds"],
                    p["failures"],
                    dict(p["failures_by_task"]),
                    dict(p["failures_by_error"]),
                ),
            )
            for p in doc["pipelines"]
        ]

    def gates(
        self,
        pipeline: str,
        days: int,
        min_success_rate: float,
        max_recovery: str,
        max_duration: str,
    ) -> GateReport:
        path = f"/api/v1/monitoring/gates/{urllib.parse.quote(pipeline, safe='')}"
        params = {
            "days": days,
            "min_success_rate": min_success_rate,
            "max_recovery": max_recovery,
            "max_duration": max_duration,
        }
        doc = self._json("GET", path, params=params)
        gates = [
            GateResult(g["gate"], g["passed"], g["figure"], g["threshold"], g["unit"], g["reason"])
            for g in doc["gates"]
        ]
        return GateReport(doc["pipeline"], doc["days"], gates)

    def cost(self, days: int, pipeline: str | None) -> CostReport:
        """The server's cost report, at the server's prices (its ``STAGEFLOW_COST``)."""
        params: dict[str, Any] = {"days": days}
        if pipeline is not None:
            params["pipeline"] = pipeline
        doc = self._json("GET", "/api/v1/cost", params=params)
        rows = [
            CostRow(
                r["pipeline"],
                r["day"],
                r["runs"],
                r["task_hours"],
                r["cpu_hours"],
                r["memory_gb_hours"],
                r["gpu_hours"],
                r["cost"] or 0.0,
            )
            for r in doc["rows"]
        ]
        return CostReport(
            _time(doc["since"]) or 0.0,
            _time(doc["until"]) or 0.0,
            doc["days"],
            doc["pipeline"],
            dict(doc["prices"] or {}),
            rows,
        )


@dataclass(frozen=True, slots=True)
class _Named:
    pipeline: str


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
