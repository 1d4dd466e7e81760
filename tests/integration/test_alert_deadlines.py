"""Alerts through real processes: a task that sleeps past its ``deadline.after_seconds:
1``, run by a real ``stageflow worker``, has its deadline alert in the store and posted
to a local webhook while the run is still running; the alert is acknowledged and
resolved with the CLI; rules are managed and refused (exit 2) with the CLI, and over
the API of a real ``stageflow serve`` (422 with problems, roles)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers_places import Place, place_on
from helpers_serve import serving
from helpers_tasks import wait_until


class Hook:
    """A local HTTP server that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                hook.bodies.append(json.loads(self.rfile.read(size)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook() -> Iterator[Hook]:
    found = Hook()
    try:
        yield found
    finally:
        found.server.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_deadline_alerts_while_the_run_still_runs(
    backend: str, tmp_path: Path, hook: Hook
) -> None:
    spec = {
        "name": "nightly",
        "tasks": [
            {
                "id": "train",
                "operator": "bash",
                "parameters": {"command": "sleep 8"},
                "deadline": {
                    "after_seconds": 1,
                    "severity": "critical",
                    "channels": [{"webhook": hook.url}],
                },
            }
        ],
    }
    path = tmp_path / "nightly.json"
    path.write_text(json.dumps(spec))
    with place_on(backend, tmp_path, Place) as place:
        run_id = place.submit(path)
        place.start("worker", "worker", "--poll-seconds", "0.1")

        def alerted() -> bool:
            with place.store() as store:
                return bool(store.alerts(rule_id="deadline"))

        wait_until(alerted, "the deadline alert", timeout=30)
        with place.store() as store:
            (alert,) = store.alerts(rule_id="deadline")
            # While the run is still going: the point of a deadline.
            assert store.get_run(run_id).state == "running"
        assert (alert.run_id, alert.task, alert.severity) == (run_id, "train", "critical")
        assert f"pipeline 'nightly': task 'train' of run {run_id} is still running" in (
            alert.message
        )
        wait_until(lambda: bool(hook.bodies), "the webhook post", timeout=20)
        with place.store() as store:
            assert store.get_run(run_id).state == "running"
        assert hook.bodies[0]["kind"] == "deadline" and run_id in hook.bodies[0]["text"]

        listed = place.cli("alerts", "list", "--state", "open", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        (shown,) = json.loads(listed.stdout)["alerts"]
        assert shown["alert_id"] == alert.alert_id
        acked = place.cli("alerts", "ack", alert.alert_id, "--by", "ana")
        assert acked.returncode == 0, acked.stderr
        assert "acknowledged" in acked.stdout and "acked by ana" in acked.stdout
        again = place.cli("alerts", "ack", alert.alert_id)
        assert again.returncode == 2
        assert "is acknowledged; only an open alert can be acknowledged" in again.stderr
        done = place.cli("alerts", "resolve", alert.alert_id, "--by", "ana", "--format", "json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["state"] == "resolved"
        assert len(hook.bodies) == 1  # exactly once, though the worker checks every second


def test_rules_on_the_cli_and_their_mistakes(tmp_path: Path) -> None:
    with place_on("sqlite", tmp_path, Place) as place:
        added = place.cli(
            "alerts", "rules", "add", "failing", "--metric", "runs.failure_rate",
            "--threshold", "0.5", "--window", "30m", "--severity", "critical",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert "runs.failure_rate greater_than 0.5 [critical]" in added.stdout
        off = place.cli("alerts", "rules", "disable", "failing", "--format", "json")
        assert json.loads(off.stdout)["enabled"] is False
        shown = json.loads(
            place.cli("alerts", "rules", "show", "failing", "--format", "json").stdout
        )
        assert (shown["window_seconds"], shown["unit"]) == (1800.0, "ratio 0..1")
        bad = place.cli(
            "alerts", "rules", "add", "x", "--metric", "cpu", "--condition", "above",
            "--threshold", "high", "--severity", "urgent", "--cooldown", "-1",
        )  # fmt: skip
        assert bad.returncode == 2
        for words in (
            "metric 'cpu' is unknown; use one of",
            "condition 'above' is unknown; use one of greater_than",
            "severity 'urgent' is unknown",
            "cooldown must be 0 or more seconds",
        ):
            assert words in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
        text = place.cli("alerts", "rules", "add", "y", "--metric", "task.t.note",
                         "--condition", "greater_than", "--threshold", "lots")  # fmt: skip
        assert text.returncode == 2 and "needs a number" in text.stderr
        assert place.cli("alerts", "list", "--severity", "high").returncode == 2
        missing = place.cli("alerts", "rules", "remove", "nope")
        assert missing.returncode == 2 and "stageflow alerts rules list" in missing.stderr
        assert place.cli("alerts", "rules", "remove", "failing").returncode == 0
        assert "no alert rules" in place.cli("alerts", "rules", "list").stdout
        # A bad deadline in a spec: exit 2 naming the field.
        spec = tmp_path / "bad.json"
        spec.write_text(json.dumps({"name": "b", "deadline": {"at": "9am"}, "tasks": [
            {"id": "t", "operator": "bash", "parameters": {"command": "true"}}]}))  # fmt: skip
        refused = place.cli("validate", str(spec))
        assert refused.returncode == 2 and "deadline.at '9am'" in refused.stderr
        # A spec's alerts: `rules apply` saves the pipeline and registers them.
        good = tmp_path / "good.json"
        good.write_text(json.dumps({"name": "g", "alerts": [
            {"id": "failing", "metric": "runs.failure_rate", "threshold": 0.5}], "tasks": [
            {"id": "t", "operator": "bash", "parameters": {"command": "true"}}]}))  # fmt: skip
        applied = place.cli("alerts", "rules", "apply", str(good), "--format", "json")
        assert applied.returncode == 0, applied.stderr
        assert [r["rule_id"] for r in json.loads(applied.stdout)["rules"]] == ["g.failing"]
        no_alerts = place.cli("alerts", "rules", "apply", str(spec))
        assert no_alerts.returncode == 2 and "deadline.at '9am'" in no_alerts.stderr


@pytest.mark.slow
def test_rules_and_alerts_over_the_api(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path) as s:
        viewer = s.client(s.token("watcher", "viewer"))
        operator = s.client(s.token("oncall", "operator"))
        admin = s.client(s.admin)
        body = {"rule_id": "slow", "metric": "run.duration_seconds", "threshold": 600}
        created = admin.post("/api/v1/alert-rules", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["metric"] == "run.duration_seconds"
        assert viewer.post("/api/v1/alert-rules", json=body).status_code == 403
        bad = admin.post(
            "/api/v1/alert-rules",
            json={"rule_id": "b", "metric": "nope", "condition": "contains", "threshold": 1,
                  "cooldown": -1, "severity": "high"},
        )  # fmt: skip
        assert bad.status_code == 422, bad.text
        fields = [p["field"] for p in bad.json()["problems"]]
        assert fields == ["metric", "threshold", "severity", "cooldown"]
        assert "condition contains needs a text" in bad.json()["error"]
        cmd = operator.post(
            "/api/v1/alert-rules",
            json={**body, "rule_id": "c", "channels": [{"command": ["sh", "-c", "id"]}]},
        )
        assert cmd.status_code == 403
        editor = s.client(s.token("ed", "editor"))
        cmd = editor.post(
            "/api/v1/alert-rules",
            json={**body, "rule_id": "c", "channels": [{"command": ["sh", "-c", "id"]}]},
        )
        assert cmd.status_code == 403 and "only an admin" in cmd.json()["error"]
        assert [r["rule_id"] for r in viewer.get("/api/v1/alert-rules").json()["rules"]] == ["slow"]
        # An alert to act on (as the duty would open it).
        from stageflow.runtime.store.base import AlertRecord

        with s.store() as store:
            assert store.open_alert(
                AlertRecord("al1", "slow", "pipeline:p", "open", "warning", "m", 1.0)
            )
        assert viewer.post("/api/v1/alerts/al1/ack").status_code == 403
        acked = operator.post("/api/v1/alerts/al1/ack")
        assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "oncall"
        assert operator.post("/api/v1/alerts/al1/ack").status_code == 400
        done = operator.post("/api/v1/alerts/al1/resolve")
        assert done.json()["state"] == "resolved"
        listed = viewer.get("/api/v1/alerts", params={"state": "resolved"}).json()["alerts"]
        assert [a["alert_id"] for a in listed] == ["al1"]
        assert viewer.get("/api/v1/alerts", params={"state": "bogus"}).status_code == 400
        assert viewer.get("/api/v1/alerts/nope").status_code == 404
        # A spec's alerts register when it is saved; a command channel in one needs admin.
        spec = {
            "name": "hello",
            "alerts": [{"id": "failing", "metric": "runs.failures", "threshold": 2}],
            "tasks": [{"id": "t", "operator": "data_ingestion",
                       "parameters": {"source": "data.csv"}}],
        }  # fmt: skip
        saved = editor.post("/api/v1/pipelines", json=spec)
        assert saved.status_code == 201, saved.text
        rules = [r["rule_id"] for r in viewer.get("/api/v1/alert-rules").json()["rules"]]
        assert "hello.failing" in rules
        spec["alerts"][0]["channels"] = [{"command": ["sh", "-c", "id"]}]
        refused = editor.post("/api/v1/pipelines", json=spec)
        assert refused.status_code == 403, refused.text
        assert "alerts[0].channels[0].command runs a command" in refused.json()["error"]
