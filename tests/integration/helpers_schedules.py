"""What the schedule tests share: the CLI on a place's store (``sf``, ``ok``), a
schedule's fired ticks, stopping a process, and a served API with a token per role
and team (``World``, ``team_tokens``)."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from typing import Any

import httpx
from helpers_places import Place
from helpers_serve import Server

WAIT = 30.0  # seconds: only reached when something hangs


def sf(place: Place, *args: str) -> subprocess.CompletedProcess[str]:
    """``stageflow ARGS`` on the place's store; no traceback, no internal error."""
    result = place.cli(*args)
    assert "Traceback" not in result.stdout + result.stderr, result
    assert "internal error" not in result.stderr, result
    return result


def ok(place: Place, *args: str) -> subprocess.CompletedProcess[str]:
    result = sf(place, *args)
    assert result.returncode == 0, result
    return result


def ticks(place: Place, name: str) -> list[tuple[float, str]]:
    """Schedule ``name``'s fired ticks: (logical time, run id), oldest first."""
    with place.store() as store:
        return sorted(store.schedule_runs(name, 100_000))


def terminate(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=WAIT)


@dataclass
class World:
    server: Server
    tokens: dict[str, str]  # "viewer", "operator", "editor" (team-a), "editor-b", "admin"

    def as_(self, who: str) -> httpx.Client:
        return self.server.client(self.tokens[who])

    def runs_of(self, pipeline: str) -> list[Any]:
        """The pipeline's runs as the admin lists them over the API."""
        with self.as_("admin") as c:
            r = c.get("/api/v1/runs", params={"pipeline": pipeline})
        assert r.status_code == 200, r.text
        runs: list[Any] = r.json()["runs"]
        return runs

    def succeeds(self, run_id: str) -> None:
        """Wait for ``run_id`` to end; it must end ``success``."""
        doc = self.server.wait_run(self.tokens["admin"], run_id, ("success", "failed"))
        assert doc["state"] == "success", doc


def team_tokens(s: Server) -> dict[str, str]:
    """A token per role of team-a, an editor of team-b, and the admin's."""
    return {
        "viewer": s.token("viewer-a", "viewer", "team-a"),
        "operator": s.token("operator-a", "operator", "team-a"),
        "editor": s.token("editor-a", "editor", "team-a"),
        "editor-b": s.token("editor-b", "editor", "team-b"),
        "admin": s.admin,
    }
