"""Local servers that notifications are sent to in tests: ``Hook`` (an HTTP server in a
thread that records each JSON post, or answers a fixed error status) and ``Mailbox``
(an ``aiosmtpd`` SMTP server that records each message). Never an outside address."""

from __future__ import annotations

import contextlib
import email
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message as EmailMessage
from typing import Any

__all__ = ["Hook", "Mailbox", "dead_port", "hook", "mailbox", "wait_for"]


@dataclass
class Hook:
    """What the local webhook received: each post's path and JSON body."""

    port: int = 0
    status: int = 200
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def url(self, path: str = "/hook/T000/B000/s3cr3t-path") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.contextmanager
def hook(status: int = 200) -> Iterator[Hook]:
    got = Hook(status=status)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                got.posts.append((self.path, json.loads(body)))
            self.send_response(got.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)


@contextlib.contextmanager
def mailbox() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox(port=free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.recipients.append(list(envelope.rcpt_tos))
            box.messages.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_port() -> int:
    """A local port nothing listens on (connection refused)."""
    return free_port()


def wait_for(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting until {what}")
        time.sleep(0.02)
