"""Helpers for the ML operator tests: a task context, local HTTP servers, metadata."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stageflow.operators.base import TaskContext
from stageflow.operators.metadata import metadata_path
from stageflow.runtime.artifacts import artifact_store


def make_ctx(
    tmp_path: Path,
    task: str = "t",
    *,
    run: str = "r1",
    attempt: int = 1,
    params: dict[str, Any] | None = None,
    pipeline_dir: Path | None = None,
) -> TaskContext:
    """A context laid out as the runtime lays it out under ``tmp_path`` (the home);
    ``pipeline_dir``: where relative paths start (default: the current directory)."""
    log = tmp_path / "logs" / run / task / f"attempt-{attempt}.log"
    return TaskContext(
        run_id=run,
        task_id=task,
        attempt=attempt,
        params=params or {},
        work_dir=log.parent / f"work-{attempt}",
        log_path=log,
        logger=logging.getLogger("test.ml"),
        artifacts_root=str(tmp_path / "artifacts"),
        artifacts=artifact_store(str(tmp_path / "artifacts")),
        home=tmp_path,
        pipeline_dir=pipeline_dir,
    )


def metadata(ctx: TaskContext) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(metadata_path(ctx).read_text())
    return data


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.contextmanager
def file_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free local port; yield the base URL."""
    handler = functools.partial(_QuietFiles, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Webhook:
    """A local webhook: records every POST; answers ``status``."""

    url: str = ""
    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


@contextlib.contextmanager
def webhook(status: int = 200) -> Iterator[Webhook]:
    hook = Webhook(status=status)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            hook.received.append(json.loads(self.rfile.read(length)))
            hook.headers.append(dict(self.headers))
            self.send_response(hook.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass
