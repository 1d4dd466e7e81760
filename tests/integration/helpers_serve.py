"""A real ``stageflow serve`` for API tests: ``Server`` and ``serving``.

``serving(backend, tmp)`` starts ``stageflow serve --port 0`` (its own process
group, on SQLite or a fresh PostgreSQL schema), reads the port it printed, makes an
admin token with ``stageflow tokens create`` and yields a ``Server`` whose
``client(token)`` is an ``httpx.Client`` on it. Every process is killed at the end.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from helpers_places import Place, place_on

__all__ = ["Server", "serving"]


@dataclass
class Server(Place):
    base: str = ""
    admin: str = ""
    name: str = "serve"

    def start_serve(self, *args: str, name: str = "serve", **extra: str) -> None:
        """``stageflow serve --port 0 ARGS``; returns once it listens (``base`` set)."""
        self.name = name
        proc = self.start(name, "serve", "--port", "0", *args, **extra)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"serving on (http://[^ ]+) ", self.stderr(name))
            if found:
                self.base = found.group(1)
                return
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}: {self.stderr(name)}")
            time.sleep(0.05)
        raise AssertionError(f"serve did not listen within 60 s: {self.stderr(name)}")

    def token(self, name: str, role: str, owner: str | None = None) -> str:
        args = ["tokens", "create", "--name", name, "--role", role]
        if owner is not None:
            args += ["--owner", owner]
        r = self.cli(*args)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30, **kwargs)

    def wait_run(
        self, token: str, run_id: str, states: tuple[str, ...], timeout: float = 60
    ) -> Any:
        """The run's JSON once its state is one of ``states``."""
        deadline = time.monotonic() + timeout
        with self.client(token) as c:
            while True:
                doc = c.get(f"/api/v1/runs/{run_id}").json()
                if doc.get("state") in states:
                    return doc
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"run {run_id} is {doc.get('state')}, not {states}, after {timeout:g}s; "
                        f"serve said: {self.stderr(self.name)[-3000:]}"
                    )
                time.sleep(0.05)


@contextlib.contextmanager
def serving(backend: str, tmp: Path, *args: str, **extra: str) -> Iterator[Server]:
    """A ``Server`` on ``backend`` with an admin token (``admin``), serving ``args``."""
    with place_on(backend, tmp, Server) as server:
        server.admin = server.token("root", "admin")
        server.start_serve(*args, **extra)
        yield server
