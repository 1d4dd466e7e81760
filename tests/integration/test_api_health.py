"""``/health`` of a real ``stageflow serve`` when its supervised worker dies: 200
``degraded`` naming the ``workers`` check while it is down, then ``ok`` again once
``serve`` has started a new worker process, which runs the next run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers_serve import serving

pytestmark = pytest.mark.slow

ECHO = {
    "name": "echo",
    "tasks": [{"id": "say", "operator": "bash", "parameters": {"command": "echo hi"}}],
}


def worker_pids(serve_pid: int) -> set[int]:
    return {
        p.pid
        for p in psutil.Process(serve_pid).children()
        if "worker" in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE
    }


def test_a_dead_worker_is_degraded_health_until_serve_starts_another(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path) as server:
        serve_pid = server.procs[0].pid
        with server.client() as c:
            deadline = time.monotonic() + 30
            while not worker_pids(serve_pid):
                assert time.monotonic() < deadline, "serve started no worker"
                time.sleep(0.05)
            [first] = worker_pids(serve_pid)
            healthy = c.get("/health")
            assert healthy.status_code == 200 and healthy.json()["status"] == "ok"

            os.kill(first, signal.SIGKILL)
            seen: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            while True:
                answer = c.get("/health")
                assert answer.status_code == 200, answer.text  # the database still answers
                body = answer.json()
                if body["status"] == "degraded":
                    seen.append(body)
                elif seen and body["status"] == "ok":
                    break
                assert time.monotonic() < deadline, (seen, body, server.stderr("serve"))
                time.sleep(0.05)
        down = seen[0]
        assert down["failing"] == ["workers"]
        assert down["checks"]["workers"] == {"status": "failing", "alive": 0, "wanted": 1}
        assert body["checks"]["workers"] == {"status": "ok", "alive": 1, "wanted": 1}
        [second] = worker_pids(serve_pid)
        assert second != first
        assert f"(pid {first}) exited" in server.stderr("serve")

        with server.client(server.admin) as c:  # the new worker runs what comes next
            assert c.post("/api/v1/pipelines", json=ECHO).status_code == 201
            run_id = c.post("/api/v1/runs", json={"pipeline_id": "echo"}).json()["run_id"]
        assert server.wait_run(server.admin, run_id, ("success", "failed"))["state"] == "success"
