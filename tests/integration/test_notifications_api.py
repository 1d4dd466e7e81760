"""``GET /api/v1/notifications`` on a real ``stageflow serve``: a run the server's worker
ran tells its ``on_failure`` webhook; a viewer reads the deliveries of its owner's runs
only (an admin all); a bad filter is a 400 naming it; a hook that runs a command needs
the admin role, as ``bash`` tasks do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers_notify import hook, wait_for
from helpers_serve import serving

pytestmark = pytest.mark.slow


def failing(name: str, owner: str, hooks: dict[str, Any]) -> dict[str, Any]:
    """A pipeline of one built-in task that fails (a notification with no webhook)."""
    return {
        "name": name,
        "owner": owner,
        "tasks": [{"id": "announce", "operator": "notification", "parameters": {"message": "x"}}],
        **hooks,
    }


def test_notifications_over_the_api(tmp_path: Path) -> None:
    with hook() as got, serving("sqlite", tmp_path) as server:
        viewer_a = server.token("viewer-a", "viewer", "team-a")
        viewer_b = server.token("viewer-b", "viewer", "team-b")
        editor_a = server.token("editor-a", "editor", "team-a")
        with server.client(server.admin) as admin:
            body = failing("alarm", "team-a", {"on_failure": [{"webhook": got.url()}]})
            assert admin.post("/api/v1/pipelines", json=body).status_code == 201
            r = admin.post("/api/v1/runs", json={"pipeline_id": "alarm"})
            assert r.status_code == 202, r.text
            run_id = r.json()["run_id"]
            assert server.wait_run(server.admin, run_id, ("failed",))["state"] == "failed"
            wait_for(lambda: len(got.posts) == 1, "the worker told the webhook")
            [(_, posted)] = got.posts
            assert (posted["run_id"], posted["task"]) == (run_id, "announce")

            def delivered() -> bool:
                found = admin.get("/api/v1/notifications").json()["notifications"]
                return [n["state"] for n in found] == ["delivered"]

            wait_for(delivered, "the delivery was recorded delivered")
            mine = admin.get(f"/api/v1/notifications?run_id={run_id}&state=delivered").json()
            [n] = mine["notifications"]
            assert (n["kind"], n["channel"], n["target"]) == (
                "on_failure",
                "webhook",
                f"http://127.0.0.1:{got.port}",
            )
            assert "s3cr3t-path" not in str(mine)

            bad = admin.get("/api/v1/notifications?state=lost")
            assert bad.status_code == 400
            assert bad.json()["error"].startswith("state 'lost' is not a delivery state")
            assert bad.json()["problems"][0]["field"] == "state"

            command = failing("pager", "team-a", {"on_failure": [{"command": ["page", "-x"]}]})
            with server.client(editor_a) as editor:
                refused = editor.post("/api/v1/pipelines", json=command)
            assert refused.status_code == 403, refused.text
            assert refused.json()["problems"][0]["field"] == "on_failure[0].command"
            assert "only an admin" in refused.json()["error"]
            assert admin.post("/api/v1/pipelines", json=command).status_code == 201

        with server.client(viewer_a) as c:
            assert [
                n["run_id"] for n in c.get("/api/v1/notifications").json()["notifications"]
            ] == [run_id]
        with server.client(viewer_b) as c:
            assert c.get("/api/v1/notifications").json() == {"notifications": []}
        with server.client() as c:
            assert c.get("/api/v1/notifications").status_code == 401
